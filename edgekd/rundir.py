"""The run directory as a transaction: one writer at a time, no temporaries left behind, and hashes of
what went in, so that ``--resume`` reuses only work whose inputs are unchanged.

A run directory is edgekd's contract with ``report``, ``gate`` and CI. It must not lie: two runs
writing it at once (``--force`` on a directory a live run is filling deleted it under that run, and both
exited 0), a data file changed under ``--resume`` (the stage keys hashed its *path*), and files copied
from a killed run's temporaries all made it say what had not happened.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import InputError
from .fingerprint import file_sha256

LOCK_NAME = ".edgekd.lock"
TEMPORARY_GLOB = ".*.tmp*"  # what fileio.atomic_path writes before renaming into place


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.edgekd.lock`` for as long as a run writes the directory.

    The kernel releases it when the process dies, however it dies, so a SIGKILLed run never leaves a
    stale lock; a second run on the same directory is refused at once (exit 2) with the holder's pid.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"{self.path.parent}: another edgekd run (pid {holder}) is writing this run "
                                 f"directory; wait for it or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def empty_except_lock(run_dir: Path) -> None:
    """``--force``: remove everything in ``run_dir`` but the lock this run holds."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove_temporaries(run_dir: Path) -> int:
    """Delete the half-written files a killed run left (``atomic_path``'s temporaries); safe only while
    holding the run's lock, since a live writer's temporaries look the same. Returns how many."""
    found = [p for p in run_dir.rglob(TEMPORARY_GLOB) if p.is_file()]
    for path in found:
        path.unlink()
    return len(found)


FREE_SPACE_BASE = 64 << 20  # bytes every run needs beside its models: reports, plots, measurements, caches


def check_free_space(run_dir: Path, model_bytes: int, stages: int) -> int:
    """Refuse (exit 2) to start work that cannot fit: each stage writes a model about the teacher's size,
    and the export writes an FP32 file, two INT8 layouts and their published copies. The estimate is
    generous (x2) because a disk filling mid-run wastes the training done so far. Returns the estimate."""
    need = 2 * model_bytes * (2 * stages + 6) + FREE_SPACE_BASE
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise InputError(f"{run_dir}: {free / (1 << 20):.0f} MB free, and this run needs about "
                         f"{need / (1 << 20):.0f} MB ({stages} stage(s) for a {model_bytes / (1 << 20):.1f} MB model); "
                         f"free space or choose another --out")
    return need


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


def input_hashes(data_path: str | None, teachers: list[str]) -> dict[str, Any]:
    """Hashes of the data (its file or folder; None for built-in and generated data, which the data
    spec alone determines) and of each extra teacher file."""
    data = content_sha256(data_path) if data_path and Path(data_path).exists() else None
    return {"data": data, "teachers": {t: content_sha256(t) for t in teachers if Path(t).is_file()}}
