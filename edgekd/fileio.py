"""Atomic writes (a file appears whole under its final name or not at all) and content hashes.

An interrupted run therefore leaves the last good files intact, and ``--resume`` can trust any
file it finds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
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
