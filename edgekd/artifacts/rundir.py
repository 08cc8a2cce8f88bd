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
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from ..fileio import content_sha256

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


RESOLVED_RECIPE = "recipe.resolved.yaml"
DRY_RUN_LEFTOVERS = {LOCK_NAME, RESOLVED_RECIPE}  # all a dry run writes: a folder holding only these is free


DEFAULT_RUNS_DIR = Path("runs")


def run_dir_path(out: Path | None, name: str, resume: bool) -> Path:
    """``--out``, or ``runs/<recipe name>`` (numbered past existing ones unless resuming)."""
    if out is not None:
        return out
    out, n = DEFAULT_RUNS_DIR / name, 2
    while out.exists() and not resume:
        out, n = DEFAULT_RUNS_DIR / f"{name}{n}", n + 1
    return out


class RunDirectory:
    """A run directory through one ``compress``: locked at once, but changed only once every input has
    been checked (``start``). Until then nothing in it is deleted or rewritten, so an exit 2 (a bad
    recipe, checkpoint or data found late) leaves a finished run as it was, and a directory this call
    created is removed again (``abandon``), so the same command can simply be rerun."""

    def __init__(self, path: Path, lock: RunLock, existing: bool, created: bool, resume: bool) -> None:
        self.path, self._lock, self.existing, self.created, self.resume = path, lock, existing, created, resume
        self.started = False

    @classmethod
    def open(cls, out: Path, resume: bool, force: bool) -> "RunDirectory":
        out = out.resolve()
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: --out must be a directory; this is a file")
        existing = out.is_dir() and any(p.name not in DRY_RUN_LEFTOVERS for p in out.iterdir())
        if existing and not resume:
            if not force:
                raise InputError(f"{out}: run directory exists; pass --resume to continue it, --force to replace "
                                 f"it, or another --out")
            if not (out / RESOLVED_RECIPE).is_file():
                raise InputError(f"{out}: --force replaces only an edgekd run directory (no {RESOLVED_RECIPE} here)")
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file on the way, no permission, a read-only filesystem: the user's --out
            raise InputError(f"{out}: --out cannot be created here ({exc.strerror}); choose another --out") from None
        try:
            lock = RunLock(out).acquire()
        except BaseException:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        return cls(out, lock, existing, created, resume)

    def dry_run(self, resolved_recipe: str) -> bool:
        """A dry run writes ``recipe.resolved.yaml`` only where no run lives yet (it changes nothing in an
        existing run, finished or not); returns whether it wrote it."""
        if self.existing:
            return False
        from ..fileio import write_text

        write_text(self.path / RESOLVED_RECIPE, resolved_recipe)
        self.created = False  # the user asked for this file: keep it
        return True

    def start(self, resolved_recipe: str) -> None:
        """Every input is checked: now replace (``--force``) or tidy (``--resume``) the directory and
        record the recipe. Work done from here on is kept for ``--resume`` even if the run fails."""
        from ..fileio import write_text

        if self.existing and not self.resume:
            empty_except_lock(self.path)
        elif self.resume:
            remove_temporaries(self.path)
        for stale in REPORT_FILES:  # from an earlier, finished try
            (self.path / stale).unlink(missing_ok=True)
        write_text(self.path / RESOLVED_RECIPE, resolved_recipe)
        self.started = True

    def abandon(self) -> None:
        """After a failure before ``start``: remove the directory if this call created it (an exit 2 then
        leaves nothing behind); an existing directory was not touched."""
        if self.created and not self.started:
            self.release()
            shutil.rmtree(self.path, ignore_errors=True)

    def release(self) -> None:
        self._lock.release()


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


def remove_stale(folder: Path, current: Callable[[str], bool]) -> list[str]:
    """Delete the files in ``folder`` that ``current`` (given a file name) says this run does not make:
    a resumed run whose recipe dropped a target or variant must not keep reporting its old files."""
    gone = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and not current(path.name):
                path.unlink()
                gone.append(path.name)
    return gone


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




def input_hashes(data_path: str | None, teachers: list[str]) -> dict[str, Any]:
    """Hashes of the data (its file or folder; None for built-in and generated data, which the data
    spec alone determines) and of each extra teacher file."""
    data = content_sha256(data_path) if data_path and Path(data_path).exists() else None
    return {"data": data, "teachers": {t: content_sha256(t) for t in teachers if Path(t).is_file()}}


MANIFEST = "manifest.json"
# rebuilt by 'edgekd report' (verdicts.json: written by gate / compress --budget, shown by the report)
REPORT_FILES = ("report.json", "report.md", "report.html", "tradeoff.png", "verdicts.json")
RECORDED_FOLDERS = ("models", "measurements")


def output_hashes(run_dir: Path, names: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every file in the run's ``models/`` and ``measurements/`` plus the ``names`` given."""
    found = {str(p.relative_to(run_dir)): content_sha256(p)
             for folder in RECORDED_FOLDERS for p in sorted((run_dir / folder).glob("*")) if p.is_file()}
    found.update({name: content_sha256(run_dir / name) for name in names if (run_dir / name).is_file()})
    return found


def verified_manifest(run_dir: Path, *, rebuilding_report: bool = False) -> dict[str, Any]:
    """The manifest of a finished run whose files are still the bytes it recorded, else a ReportError
    (exit 2) naming the first file that changed, went missing or appeared. ``report`` and ``gate`` read a
    run only through this: an INT8 file replaced by the FP32 one used to gate green. With
    ``rebuilding_report`` the report files themselves are not checked (``edgekd report`` rewrites them)."""
    from ..errors import ReportError
    from ..fileio import read_json

    path = run_dir / MANIFEST
    if not path.is_file():
        raise ReportError(f"{run_dir}: not an edgekd run directory (no {MANIFEST}); report and gate read a run "
                          f"directory made by 'edgekd compress', not a report.json alone")
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: unreadable JSON ({exc})") from None
    status = manifest.get("status") if isinstance(manifest, dict) else None
    if status != "complete":
        raise ReportError(f"{run_dir}: the run did not finish ({MANIFEST} status {status!r}, not 'complete'): "
                          f"its measurements may be missing; finish it with 'edgekd compress --resume'")
    recorded = manifest.get("outputs")
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise ReportError(f"{path}: key 'outputs' (each output's SHA-256) is missing or not a mapping; "
                          f"finish the run again with 'edgekd compress --resume'")
    skip = set(REPORT_FILES) if rebuilding_report else set()
    if not rebuilding_report and "report.json" not in recorded:
        raise ReportError(f"{path}: the run's report is not recorded (a run made by an older edgekd); rebuild "
                          f"it with 'edgekd report {run_dir}'")
    now = output_hashes(run_dir, tuple(n for n in REPORT_FILES if n not in skip))
    for name, digest in recorded.items():
        if name in skip:
            continue
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ReportError(f"{path}: output {name!r} lies outside the run directory")
        if name not in now:
            raise ReportError(f"{run_dir}: {name} is missing since the run completed; restore it or rerun "
                              f"'edgekd compress --resume'")
        if now[name] != digest:
            raise ReportError(f"{run_dir}: {name} changed since the run completed (its SHA-256 is not the one in "
                              f"{MANIFEST}); restore it or rerun 'edgekd compress --resume'")
    extra = sorted(set(now) - set(recorded) - skip)
    if extra:
        raise ReportError(f"{run_dir}: {extra[0]} was not made by this run (not in {MANIFEST}'s outputs); remove "
                          f"it or rerun 'edgekd compress --resume'")
    return manifest


def record_report(run_dir: Path) -> None:
    """After the report files are (re)written: their hashes join the manifest's outputs."""
    from ..fileio import read_json, write_json

    manifest = read_json(run_dir / MANIFEST)
    outputs = {k: v for k, v in manifest.get("outputs", {}).items() if k not in REPORT_FILES}
    outputs.update({n: content_sha256(run_dir / n) for n in REPORT_FILES if (run_dir / n).is_file()})
    write_json(run_dir / MANIFEST, {**manifest, "outputs": outputs})


def run_files(run_dir: Path) -> set[Path]:
    """The files that are a run's own record (never an output path of another command)."""
    names = {MANIFEST, RESOLVED_RECIPE, *REPORT_FILES}
    return {run_dir / n for n in names} | {p for f in (*RECORDED_FOLDERS, "stages") for p in (run_dir / f).rglob("*")}


def refuse_overwriting_a_run(path: Path, option: str) -> Path:
    """``path`` if a command may write there; an InputError (exit 2) if it would replace a run
    directory's own record (``gate --junit RUN/report.json``, ``baseline save --out RUN/manifest.json``)
    or is a folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path}: is a directory; give a file path")
    target = path.resolve()
    for folder in (target.parent, *target.parents):
        if (folder / MANIFEST).is_file() and (folder / RESOLVED_RECIPE).is_file():
            if target in {p.resolve() for p in run_files(folder)} or folder in target.parents and \
                    target.relative_to(folder).parts[0] in (*RECORDED_FOLDERS, "stages"):
                raise InputError(f"{option} {path}: would overwrite the record of the run in {folder}; write it "
                                 f"elsewhere (e.g. beside the run, or a new file name)")
            break
    return path
