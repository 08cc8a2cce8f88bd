"""Artifacts: what a stage writes, and how to get a model back from it.

An artifact is a folder (or file) plus a small JSON record: its variant name, kind, precision, the
stage and parent that made it, a hash of the config that made it, and its metrics. Torch artifacts
hold weights as safetensors *and* the recipe to rebuild the module (arch spec + kwargs, and for
INT8 the quantization steps), so reloading never unpickles code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..fileio import atomic_path, read_json, write_json

@dataclass(frozen=True)
class Artifact:
    variant: str        # teacher-fp32, student-fp32, student-int8, ...
    kind: str           # torch | torch-int8 | onnx
    precision: str      # fp32 | int8
    path: str           # a folder for torch artifacts, an .onnx file for onnx ones
    stage: str          # the stage that made it ("input" for the checkpoint)
    parent: str | None = None
    config_hash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Artifact":
        return cls(**data)


def config_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able config parts (stage config, parent hash, ...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save_torch(model: nn.Module, folder: Path, record: Artifact) -> Artifact:
    """Write ``model``'s weights into ``folder``; return ``record`` (its variant, kind, stage and the
    rebuild recipe in its meta: ``arch``, ``arch_kwargs``, ``metrics``, ...) pointing at that folder."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    return replace(record, path=str(folder))


IN_RUN = "run:"  # a path recorded relative to its run directory: "run:stages/01-quantize/model"


def in_run(value: Any, root: Path) -> Any:
    """``value`` with every path inside ``root`` written as ``run:<relative path>``: a moved run
    directory still finds its files, and a copy uses its own, not the original's."""
    if isinstance(value, dict):
        return {k: in_run(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [in_run(v, root) for v in value]
    if isinstance(value, str) and value.startswith(str(root) + "/"):
        return IN_RUN + value[len(str(root)) + 1:]
    return value


def _absolute(value: Any, root: Path) -> Any:
    if isinstance(value, dict):
        return {k: _absolute(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(v, root) for v in value]
    if isinstance(value, str) and value.startswith(IN_RUN):
        return str(root / value[len(IN_RUN):])
    return value


def write_record(folder: Path, key: str, artifacts: list[Artifact], reads: dict[str, Any] | None = None) -> None:
    """Mark a stage finished: written last, so its presence means every output is complete.

    ``key`` hashes the stage's config and its inputs, ``reads`` what else it read while it ran (recipe
    fields, targets' settings, each hashed); ``--resume`` reuses the stage only if both still hold.
    Paths inside the run directory (``folder/../..``) are recorded relative to it.
    """
    root = folder.resolve().parent.parent
    write_json(folder / "stage.json", {"key": key, "reads": reads or {},
                                       "artifacts": [in_run(a.to_json(), root) for a in artifacts]})


def read_record(folder: Path, key: str,
                reads_changed: Callable[[dict[str, Any]], str | None] | None = None) -> tuple[list[Artifact] | None, str]:
    """The finished stage's artifacts if it ran with the same config and inputs and everything it read
    still holds (``reads_changed`` says why not), else None; and why it cannot be reused ("" when it can)."""
    path = folder / "stage.json"
    if not path.is_file():
        return None, "not finished"
    try:
        record = read_json(path)
    except ValueError:
        return None, "its stage.json is unreadable"
    if not isinstance(record, dict) or record.get("key") != key:
        return None, "its config or inputs changed (checkpoint, data, teachers, recipe or edgekd version)"
    if not isinstance(record.get("reads"), dict):
        return None, "its record predates resume keys from what a stage reads"
    changed = reads_changed(record["reads"]) if reads_changed is not None else None
    if changed:
        return None, changed
    artifacts = stage_artifacts(folder, record)
    gone = [a.path for a in artifacts if a.stage != "input" and not Path(a.path).exists()]
    if gone:
        return None, f"its output {gone[0]} is missing"
    return artifacts, ""


def stage_artifacts(folder: Path, record: dict[str, Any] | None = None) -> list[Artifact]:
    """A finished stage's artifacts as recorded in its ``stage.json``, with paths inside the run
    directory made absolute again (for this directory, wherever it now is)."""
    record = read_json(folder / "stage.json") if record is None else record
    root = folder.resolve().parent.parent
    return [Artifact.from_json(_absolute(a, root)) for a in record["artifacts"]]


def onnx_size_bytes(path: str | Path) -> int:
    """Bytes on disk of an ONNX model, counting the external-data files it references."""
    from .onnx_files import onnx_files

    return sum(f.stat().st_size for f in onnx_files(path))


def example_input(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """A batch-1 input of ``input_shape`` for shape-only work (tracing, counting, re-applying a channel
    plan): zeros, or for a text model (packed (3, S) samples, ``edgekd.data.packed``) token ids of zeros with
    a mask of ones."""
    from ..models.text import TextModel

    example = torch.zeros(1, *input_shape)
    if isinstance(model, TextModel):
        example = example.long()
        example[:, 1] = 1
    return example


def count_params_macs(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Parameters and multiply-accumulates at batch 1, counted by Torch-Pruning's op counter."""
    import torch_pruning as tp

    example = example_input(model, input_shape)
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model.eval(), example)
    return int(params), int(macs)
