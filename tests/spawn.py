"""Child processes for the tests, started from a small clean process rather than from pytest's own.

After some 500 tests the pytest process holds torch, ONNX Runtime and OpenVINO thread pools, and in 6 of
13 full runs (CI included, twice) it died of SIGSEGV, with no faulthandler trace, inside a
``subprocess.run`` of tests/test_trust.py: with vfork() (CPython's default), and again with fork()
(conftest's first mitigation). Never in a subset of the tests, nor under gdb. Whatever the runtime
does to a process that forks while its pools run, it cannot happen here: every child a test starts is
forked by a one-worker process pool whose worker was made by multiprocessing's fork server, a fresh
interpreter started at session start (``pytest_configure``) that never imports torch.
"""

from __future__ import annotations

import functools
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor
from typing import Any


@functools.cache
def clean_spawner() -> ProcessPoolExecutor:
    """The one-worker pool, started now (at session start, before any test has run a runtime)."""
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
    pool.submit(os.getpid).result()
    return pool


def run(args: list[Any], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(args, **kwargs)`` from the clean worker, with this process's current environment
    and working directory unless given (the worker's date from session start)."""
    kwargs.setdefault("env", dict(os.environ))
    kwargs.setdefault("cwd", os.getcwd())
    return clean_spawner().submit(subprocess.run, [str(a) for a in args], **kwargs).result()
