"""Files: atomic writes (a file appears whole under its final name or not at all), content hashes,
what a name a user chose may be in a file name, and every limit on what edgekd reads.

An interrupted run therefore leaves the last good files intact, and ``--resume`` can trust any
file it finds. A target named ``../../../../x`` wrote its measurement outside the run directory:
a chosen name reaches a path only through ``checked_file_name``. Hostile or broken input should end
as a one-line error (exit 2), not as a hang, a 51 GB allocation or an abort inside a native library:
each reader checks its input against ``LIMITS`` *before* the expensive step (expanding YAML,
decoding an image, allocating a model, handing a line to a tokenizer), so the limit is also what the
docs/reference.md's promise table and the property-based tests quote.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place if the block succeeds.

    For writers that insist on a path (torch.onnx.export, safetensors, matplotlib).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except Exception as exc:  # writers report a full disk in their own words (torch: "enforce fail at ...")
            raise disk_full(final, exc) or exc
        if tmp_path.is_file():  # mkstemp makes 0600; the result gets what open() would have given it
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def link_or_copy(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """``dest`` holds ``source``'s bytes, stored once where the filesystem allows (a hard link: a run's
    ``models/`` and its export stage then share each file), else a copy; atomic either way."""
    import shutil

    with atomic_path(dest) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(source, tmp)


DISK_FULL_MARGIN = 16 << 20  # bytes: below this much free space a failed write is read as a full disk


def disk_full(path: Path, exc: BaseException) -> "InputError | None":
    """The one-line error (exit 2) for a write to ``path`` that failed because its disk is full: ENOSPC
    itself, or any writer's failure while the filesystem has almost no space left; None otherwise."""
    from .errors import InputError

    if isinstance(exc, InputError):
        return None
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if getattr(exc, "errno", None) == errno.ENOSPC or (free is not None and free < DISK_FULL_MARGIN):
        left = f"{free / (1 << 20):.1f} MB free" if free is not None else "no space left"
        return InputError(f"{path}: the disk is full ({left}); nothing was half-written; free space or choose "
                          f"another --out, then rerun with --resume")
    return None


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``);
    elsewhere by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def cache_dir() -> Path:
    """edgekd's cache for things worth keeping across runs (OpenVINO blobs, TensorRT engines, latency
    tables, a trained default teacher): ``$EDGEKD_CACHE``, default ``~/.cache/edgekd``."""
    return Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (their paths relative to it and their bytes, in
    sorted order): an image folder whose one image changed hashes differently."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file_sha256(file).encode())
    return digest.hexdigest()


MAX_NAME = 120  # characters in a name that becomes a file name (well under any filesystem's 255 bytes)
FORBIDDEN_IN_FILE_NAMES = ("/", "\\", "\0", ":")  # separators on some OS, and Windows drive/stream marks
NAME_RULE = (f"1-{MAX_NAME} printable characters, not starting with '.' or '-', without / \\ : or control "
             f"characters")


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be part of a file name inside a run directory, or None if it can."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it is {len(name)} characters long"
    if name.startswith((".", "-")):
        return "it starts with '.' or '-'"
    bad = next((c for c in name if c in FORBIDDEN_IN_FILE_NAMES or unicodedata.category(c)[0] in "CZ"
                and c != " "), None)
    if bad is not None:
        return f"it holds {bad!r}"
    return None


def checked_file_name(name: str, what: str) -> str:
    """``name`` unchanged if it may become (part of) a file name, else a one-line InputError naming
    ``what`` (e.g. ``target name``) and the rule. The only way a chosen name reaches a path."""
    from .errors import InputError

    problem = file_name_problem(name)
    if problem is not None:
        raise InputError(f"{what} {name!r}: {problem}; a name that becomes a file name has {NAME_RULE}")
    return name


@dataclass(frozen=True)
class Limits:
    yaml_bytes: int = 1 << 20             # a recipe, target or budget file
    yaml_aliases: int = 64                # anchors reused a few times are fine; a "billion laughs" is not
    yaml_nodes: int = 100_000             # nodes after aliases are expanded (1.5 KB expanded to 2^33 before)
    text_field_chars: int = 100_000       # one CSV field / JSONL text (a 100 MB line aborted the tokenizer)
    text_file_bytes: int = 2 << 30        # a CSV/JSONL data file
    label_max: int = 1_000_000            # the largest integer class label (1e12 made a 1e12-class model)
    tokenizer_file_bytes: int = 64 << 20  # tokenizer.json/vocab files (a 300 MB one was read whole)
    hf_config_bytes: int = 1 << 20        # config.json
    hf_layers: int = 256                  # num_hidden_layers (100 000 hung while building)
    hf_parameters: int = 8_000_000_000    # estimated from config.json before anything is allocated
    image_pixels: int = 89_478_485        # Pillow's own decompression-bomb threshold, refused rather than warned
    image_file_bytes: int = 512 << 20
    label_file_bytes: int = 16 << 20      # one YOLO label file (a line per box)
    annotation_file_bytes: int = 2 << 30  # one COCO instances JSON (COCO's own train file is ~450 MB)


LIMITS = Limits()  # a constant, not state: nothing assigns to it
