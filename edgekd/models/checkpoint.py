"""Loading checkpoints without running code from them, and building models from arch specs.

``.safetensors`` and state-dict pickles load with ``weights_only=True`` into a model built from
``--arch``. A pickled whole module or a TorchScript file can run arbitrary code when loaded, so it
loads only with ``--trust-checkpoint`` (recorded in the manifest); without it the error names the
unsafe globals found in the file and nothing from the file has executed.

``torch.export`` programs (``.pt2``) come through here too (``load_exported_program``): torch itself
opens parts of such an archive with weights_only switched off (sample inputs, ``use_pickle`` weights and
constants, legacy ``.pt`` members) or with plain ``pickle.loads`` (opaque constants). A scanner of ours
was always one trick behind (six of ten crafted archives ran code past it), so torch enforces the rule:
without trust the program is loaded under ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (torch's own switch, which
turns every ``torch.load`` into ``weights_only=True`` whatever its caller asked), and an archive whose
constants torch would open outside ``torch.load`` (opaque or TorchBind objects) is refused. The opcode
scanner stays as a second line that names the offending globals in the error.

Narrower than trust: ``--allow-global mod.Class`` adds named classes to what ``weights_only`` accepts
(importing ``mod``, which the user vouches for), and ``--expect-sha256`` checks the file's bytes before
anything is deserialised. Pickle-based formats are refused on torch older than ``SAFE_TORCH`` (2.10:
CVE-2026-24747 let a crafted file escape ``weights_only`` before it), whatever the flags.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
import os
import pickletools
import zipfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from collections import OrderedDict
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import CheckpointError, first_line
from ..registry import import_named
from ..fileio import file_sha256

SAFE_TORCH = (2, 10)


@dataclass(frozen=True)
class LoadPolicy:
    """What the user allows a loaded file: full trust (may run code), a few named globals, and the
    SHA-256 the file must have (checked before deserialising)."""

    trust: bool = False
    allow_globals: tuple[str, ...] = ()
    expect_sha256: str | None = None


def check_torch_is_safe(path: Path, version: str | None = None) -> None:
    """Refuse to unpickle anything on a torch whose ``weights_only`` loader is known to be escapable."""
    version = version or torch.__version__
    parts = tuple(int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit())
    if parts < SAFE_TORCH:
        raise CheckpointError(f"{path}: torch {version} cannot unpickle files safely (weights_only is escapable "
                              f"before {'.'.join(map(str, SAFE_TORCH))}, CVE-2026-24747); upgrade torch or give "
                              f"a .safetensors file")


def check_sha256(path: Path, digest: str, expected: str | None) -> None:
    if expected is not None and digest.lower() != expected.strip().lower():
        raise CheckpointError(f"{path}: SHA-256 is {digest}, not the expected {expected.strip().lower()} "
                              f"(--expect-sha256); refusing to open it")


def allowed_objects(names: tuple[str, ...]) -> list[Any]:
    """The classes/functions ``--allow-global`` names (``module.Name``), imported."""
    found = []
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError, ValueError):
            raise CheckpointError(f"--allow-global {name}: no such importable global (give module.Name)") from None
    return found


ARCH_FORMS = "edgekd:NAME, torchvision:NAME, timm:NAME, hf:DIR or package.module:factory"
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "weights")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready to compress, and where it came from (for the manifest)."""

    model: nn.Module
    arch: str | None
    path: str
    format: str  # safetensors | state_dict | pickled-module | torchscript
    trusted: bool
    sha256: str


# ------------------------------------------------------------------ arch specs
def build_model(spec: str, *, num_classes: int | None = None, in_channels: int | None = None,
                width: float | None = None, arch_args: dict[str, Any] | None = None) -> nn.Module:
    """Build an untrained model from an arch spec, ``arch_args`` passed to its constructor or factory.
    Never downloads weights. A constructor that rejects its arguments is the user's error (exit 2)."""
    scheme, sep, name = spec.partition(":")
    if not sep or not name:
        raise CheckpointError(f"--arch {spec!r}: expected {ARCH_FORMS}")
    extra = dict(arch_args or {})
    # the user's own constructor arguments win over the ones edgekd derives from the data
    num_classes = None if "num_classes" in extra else num_classes
    in_channels = None if "in_channels" in extra else in_channels
    try:
        if scheme == "edgekd":
            from .zoo import ZOO

            factory = ZOO.get(name)
            kwargs = {"num_classes": num_classes, "in_channels": in_channels, "width": width}
            return factory(**{k: v for k, v in kwargs.items() if v is not None}, **extra)
        if scheme == "torchvision":
            return _torchvision(name, num_classes, in_channels, width, extra)
        if scheme == "timm":
            return _timm(name, num_classes, in_channels, width, extra)
        if scheme == "hf":  # a local Hugging Face folder: its config only (weights come from the artifact)
            from .text import build_hf

            _no_width(spec, width)
            return build_hf(name, num_classes, **extra)
        return _factory(spec, num_classes, in_channels, width, extra)
    except TypeError as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in extra.items()) or "none"
        raise CheckpointError(f"--arch {spec!r}: its constructor rejected the arguments ({exc}); arch_args given: "
                              f"{given} (set them with arch_args in the recipe or --arch-arg KEY=VALUE)") from None


def _no_width(spec: str, width: float | None) -> None:
    if width is not None:
        raise CheckpointError(f"arch {spec!r} takes no width multiplier; give the student as 'student: {{arch: ...}}'")


def _torchvision(name: str, num_classes: int | None, in_channels: int | None, width: float | None,
                 extra: dict[str, Any]) -> nn.Module:
    _no_width(f"torchvision:{name}", width)
    try:
        import torchvision
    except ImportError:
        raise CheckpointError("--arch torchvision:* needs torchvision: pip install 'edgekd[vision]'") from None
    if in_channels not in (None, 3):
        raise CheckpointError(f"torchvision:{name} takes 3 input channels, the data has {in_channels}")
    from .detectors import is_torchvision_detector_name, torchvision_detection_model

    if is_torchvision_detector_name(name):  # wrapped for the data's input size once its weights are in
        return torchvision_detection_model(name, num_classes, **extra)
    try:
        kwargs = {"num_classes": num_classes} if num_classes else {}
        return torchvision.models.get_model(name, weights=None, **kwargs, **extra)
    except ValueError:
        known = ", ".join(sorted(torchvision.models.list_models())[:20])
        raise CheckpointError(f"unknown torchvision model {name!r}; e.g. {known}, ...") from None


def _timm(name: str, num_classes: int | None, in_channels: int | None, width: float | None,
          extra: dict[str, Any]) -> nn.Module:
    _no_width(f"timm:{name}", width)
    try:
        import timm
    except ImportError:
        raise CheckpointError("--arch timm:* needs timm: pip install 'edgekd[vision]'") from None
    if not timm.is_model(name):
        raise CheckpointError(f"unknown timm model {name!r}; see timm.list_models()")
    kwargs: dict[str, Any] = {"pretrained": False}
    if num_classes:
        kwargs["num_classes"] = num_classes
    if in_channels:
        kwargs["in_chans"] = in_channels
    return timm.create_model(name, **kwargs, **extra)


def _factory(spec: str, num_classes: int | None, in_channels: int | None, width: float | None,
             extra: dict[str, Any]) -> nn.Module:
    factory = import_named(spec, "--arch", CheckpointError, ARCH_FORMS)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    wanted = {"num_classes": num_classes, "in_channels": in_channels, "width": width}
    kwargs = {k: v for k, v in wanted.items() if v is not None and (takes_any or k in params)}
    if width is not None and "width" not in kwargs:
        _no_width(spec, width)
    model = factory(**kwargs, **extra)
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"--arch {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# ------------------------------------------------------------------ loading
def load_hf_checkpoint(directory: Path, arch: str, *, task: str, num_classes: int | None,
                       policy: LoadPolicy | None = None) -> LoadedCheckpoint:
    """A Hugging Face model folder (``--arch hf:DIR``), loaded offline by transformers; safetensors
    only unless ``--trust-checkpoint`` (``text.models.load_hf``). The hash covers every file in it."""
    from ..fileio import content_sha256
    from .text import load_hf

    policy = policy or LoadPolicy()
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: an hf: checkpoint is a folder (config.json + *.safetensors)")
    digest = content_sha256(directory)
    check_sha256(directory, digest, policy.expect_sha256)
    has_safetensors = any(directory.glob("*.safetensors"))
    if not has_safetensors and policy.trust:
        warn_trusted(directory)
    from ..tasks import TASKS

    model = load_hf(directory, task, num_classes if TASKS.get(task).outputs_classes else None, trust=policy.trust)
    return LoadedCheckpoint(model, arch, str(directory), "hf-safetensors" if has_safetensors else "hf-pickle",
                            not has_safetensors, digest)


def load_checkpoint(path: str | Path, arch: str | None, *, trust: bool = False, num_classes: int | None = None,
                    in_channels: int | None = None, arch_args: dict[str, Any] | None = None,
                    policy: LoadPolicy | None = None) -> LoadedCheckpoint:
    """Load ``path`` safely; see the module docstring for what needs ``trust`` (or ``policy``)."""
    path = Path(path)
    policy = policy or LoadPolicy(trust=trust)
    trust = policy.trust
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    digest = file_sha256(path)
    check_sha256(path, digest, policy.expect_sha256)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
        model = _model_from_state(path, state, arch, num_classes, in_channels, arch_args)
        return LoadedCheckpoint(model, arch, str(path), "safetensors", False, digest)

    check_torch_is_safe(path)
    if _is_torchscript(path):
        if not trust:
            raise CheckpointError(
                f"{path}: a TorchScript file runs code when loaded; pass --trust-checkpoint if you trust its source")
        warn_trusted(path)
        return LoadedCheckpoint(torch.jit.load(str(path), map_location="cpu"), arch, str(path), "torchscript", True, digest)

    try:
        with torch.serialization.safe_globals(allowed_objects(policy.allow_globals)):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises several types for unsafe or foreign pickles
        if not trust:
            unsafe = ", ".join(_unsafe_globals(path)) or "unknown"
            raise CheckpointError(
                f"{path}: refusing to unpickle objects beyond tensors (unsafe globals: {unsafe}); save a state_dict "
                f"or .safetensors, allow named classes with --allow-global module.Name, or pass --trust-checkpoint "
                f"if you trust its source") from None
        obj = _trusted_load(path, exc, trust)
    if isinstance(obj, nn.Module):
        return LoadedCheckpoint(obj, arch, str(path), "pickled-module", True, digest)
    state = _find_state_dict(path, obj)
    model = _model_from_state(path, state, arch, num_classes, in_channels, arch_args)
    return LoadedCheckpoint(model, arch, str(path), "state_dict", trust, digest)


def _trusted_load(path: Path, first_error: Exception, trust: bool) -> Any:
    """The one path that may execute code from a checkpoint: only behind --trust-checkpoint."""
    if not trust:
        raise CheckpointError(f"{path}: unpickling arbitrary objects needs --trust-checkpoint")
    warn_trusted(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot load even as a trusted pickle ({exc}; first: {first_error})") from None


def warn_trusted(path: Path) -> None:
    """Say, every time, that a file is being opened in the mode that can run its code."""
    from ..progress import console

    console.print(f"warning: --trust-checkpoint: opening {path} with code execution allowed "
                  f"(a pickle or TorchScript file can run anything); use it only for files you made or verified",
                  highlight=False)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _unsafe_globals(path: Path) -> list[str]:
    """Globals a pickle would import, found without unpickling it."""
    if zipfile.is_zipfile(path):
        try:
            return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001
            return []
    return sorted(pickle_globals(path.read_bytes()))


def pickle_globals(data: bytes) -> set[str]:
    """The globals (``module.name``) a pickle would import, read as opcodes, never executed: a second
    line that *names* what a refused file would import. It is not the rule (torch's ``weights_only``
    is): a STACK_GLOBAL is paired with the last two strings pushed, which a crafted pickle can fool, and
    one it cannot pair is left out rather than guessed (random tensor bytes parse as such opcodes)."""
    found: set[str] = set()
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in ("GLOBAL", "INST"):
                found.add(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - raw tensor bytes or a truncated pickle: report what was found
        pass
    return found


def _weights_only_globals() -> set[str]:
    """What ``torch.load(weights_only=True)`` accepts: torch's built-in allow-list plus the user's
    ``torch.serialization.add_safe_globals``. Empty if torch moves its private list (then every
    global is refused: the safe direction)."""
    from torch import _weights_only_unpickler as wo

    allowed = set(getattr(wo, "_get_allowed_globals", dict)())
    for g in torch.serialization.get_safe_globals():
        obj = g[0] if isinstance(g, tuple) else g
        allowed.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}")
    return allowed


NATIVE_SUFFIXES = (".so", ".dll", ".dylib", ".pyd")


def archive_unsafe_globals(data: bytes, where: str = "") -> list[str]:
    """Everything in a zip archive (a ``.pt2`` program, a ``torch.save`` file, nested in each other)
    that could run code when torch opens it: native libraries, and globals beyond ``weights_only``'s
    allow-list in any member that parses as a pickle. Raw tensor bytes parse as nothing and add nothing."""
    allowed = _weights_only_globals()
    unsafe: set[str] = set()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            member = zf.read(name)
            label = f"{where}{name}"
            if name.lower().endswith(NATIVE_SUFFIXES):
                unsafe.add(f"native library {label}")
            elif zipfile.is_zipfile(io.BytesIO(member)):
                unsafe.update(archive_unsafe_globals(member, f"{label}/"))
            elif where and not name.endswith(".pkl"):  # inside a torch.save zip only data.pkl is a pickle
                continue
            else:
                unsafe.update(f"{g} (in {label})" for g in pickle_globals(member) if g not in allowed)
    return sorted(unsafe)


def _checked_program_bytes(path: str | Path, *, trust: bool = False, policy: LoadPolicy | None = None) -> bytes:
    """A ``.pt2`` file's bytes once nothing in them can run code (or the user trusts them), else a
    ``CheckpointError`` naming what would run."""
    path = Path(path)
    policy = policy or LoadPolicy(trust=trust)
    if not path.is_file():
        raise CheckpointError(f"{path}: program file not found")
    data = path.read_bytes()
    check_sha256(path, hashlib.sha256(data).hexdigest(), policy.expect_sha256)
    check_torch_is_safe(path)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError(f"{path}: not a torch.export program (.pt2 files are zip archives)")
    if policy.trust:
        warn_trusted(path)
    else:
        unsafe = [u for u in archive_unsafe_globals(data) if u.split(" (in ")[0] not in policy.allow_globals]
        if unsafe:
            shown = ", ".join(unsafe[:5]) + (f" and {len(unsafe) - 5} more" if len(unsafe) > 5 else "")
            raise CheckpointError(f"{path}: refusing to load a program that can run code when opened ({shown}); "
                                  f"pass --trust-checkpoint if you trust its source")
    return data


def load_exported_program(path: str | Path, *, trust: bool = False, policy: LoadPolicy | None = None) -> Any:
    """A ``torch.export`` program (``.pt2``) through the same gate as every checkpoint. The bytes
    checked are the bytes loaded (read once), so the file cannot change between check and load."""
    policy = policy or LoadPolicy(trust=trust)
    data = _checked_program_bytes(path, policy=policy)
    if not policy.trust:
        refuse_non_torch_load_constants(path, data)
    try:
        with torch.serialization.safe_globals(allowed_objects(policy.allow_globals)):
            with (nullcontext() if policy.trust else weights_only_everywhere(path)):
                return torch.export.load(io.BytesIO(data))
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        text = str(exc).strip()
        first = first_line(exc)
        if not policy.trust and ("weights_only" in text.lower() or "Weights only load failed" in text):
            raise CheckpointError(f"{path}: refusing to load a program that can run code when opened (torch's "
                                  f"weights_only loader refused a member: {first[:200]}); pass --trust-checkpoint "
                                  f"if you trust its source") from None
        raise CheckpointError(f"{path}: torch could not load this program ({first[:300]})") from None


@contextmanager
def weights_only_everywhere(path: Path | str) -> Iterator[None]:
    """While torch opens an untrusted archive: every ``torch.load`` is ``weights_only=True`` (torch's
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides a caller that asks for an unrestricted load), and plain
    ``pickle.load``/``loads`` refuse. The variables are put back afterwards; loads are not concurrent
    in edgekd (one program is opened at a time), which is what makes a process-wide switch safe here."""
    import pickle

    def refuse(*_: Any, **__: Any) -> Any:
        raise CheckpointError(f"{path}: refusing to load a program that holds a plain pickle (it can run code "
                              f"when opened); pass --trust-checkpoint if you trust its source")

    saved_env = {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    saved_pickle = (pickle.load, pickle.loads)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    pickle.load, pickle.loads = refuse, refuse
    try:
        yield
    finally:
        pickle.load, pickle.loads = saved_pickle
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def refuse_non_torch_load_constants(path: Path | str, data: bytes) -> None:
    """Refuse an archive with constants torch opens outside ``torch.load`` (where weights_only cannot
    reach): opaque objects (``pickle.loads``) and TorchBind objects (``torch._C._pickle_load_obj``).
    Read from the archive's own constants configs, the JSON torch reads to choose how to open each one;
    a path of a kind this torch does not name as a tensor is refused too (the safe direction)."""
    try:
        from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX as tensor_prefix
    except ImportError:  # torch moved its names: refuse any constant that is not plainly a tensor file
        tensor_prefix = "tensor_"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if not name.endswith("constants_config.json"):
                continue
            try:
                config = json.loads(zf.read(name)).get("config", {})
                kinds = [str(meta.get("path_name", "")) for meta in config.values()]
            except (ValueError, AttributeError):
                raise CheckpointError(f"{path}: {name} is not a valid constants config") from None
            odd = [k for k in kinds if not k.startswith(tensor_prefix)]
            if odd:
                raise CheckpointError(f"{path}: refusing to load a program with constants torch opens as plain "
                                      f"pickles or TorchBind objects ({', '.join(odd[:3])} in {name}); pass "
                                      f"--trust-checkpoint if you trust its source")


def _find_state_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(f"{path}: expected a state_dict (name -> tensor), optionally under one of {STATE_DICT_KEYS}")


def _model_from_state(path: Path, state: dict[str, torch.Tensor], arch: str | None, num_classes: int | None,
                      in_channels: int | None, arch_args: dict[str, Any] | None = None) -> nn.Module:
    if arch is None:
        raise CheckpointError(f"{path}: a state_dict needs --arch ({ARCH_FORMS})")
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels, arch_args=arch_args)
    load_state(model, state, f"{path} with --arch {arch}")
    return model


def load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error that names the mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                           for label, items in (("missing", missing), ("unexpected", unexpected),
                                                ("shape mismatch", shapes)) if items)
        raise CheckpointError(f"{what}: weights do not fit the model ({detail})")
    model.load_state_dict(versioned(state, own), strict=True)


def versioned(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the module versions of ``own`` (a ``state_dict()`` of the model it is loaded into)
    where it carries none. ``torch.save`` keeps them in ``state._metadata``; safetensors files and dicts
    built by hand do not, and modules that read their version refuse to load then (torchvision's MNASNet:
    "version should be set to 1 or 2 instead of None"). Weights with no version are read as written by the
    architecture as it is now."""
    if getattr(state, "_metadata", None) is not None or getattr(own, "_metadata", None) is None:
        return state
    out = OrderedDict(state)
    out._metadata = own._metadata  # type: ignore[attr-defined]
    return out
