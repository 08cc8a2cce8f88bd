"""Where a number was measured: the machine, the runtimes, the artifact.

Latencies are only comparable on the same machine and runtime versions, so every measurement file
carries a fingerprint and ``gate`` refuses to judge latencies measured under different ones. The
``machine_id`` hashes everything but the artifact, so one run's variants share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from ..fileio import file_sha256

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
             "amx_tile", "asimd", "asimddp", "sve")  # x86 then ARM (NEON is "asimd", dot product "asimddp")
RUNTIMES = ("onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "torch", "onnx", "numpy")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def cpu_description() -> dict[str, Any]:
    """CPU model, the ISA flags that decide which kernels run, and core/thread counts."""
    lines = _cpuinfo()
    def field(key: str) -> str | None:
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.split(":")[0].strip() == key), None)

    flags = set((field("flags") or field("Features") or "").split())
    cores = {(ln_p, ln_c) for ln_p, ln_c in zip(
        [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("physical id")],
        [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("core id")])}
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": field("model name") or platform.processor() or platform.machine(),
            "arch": platform.machine(), "isa": {f: f in flags for f in ISA_FLAGS},
            "logical_cpus": os.cpu_count(), "physical_cores": len(cores) or None, "usable_cpus": affinity}


def gpu_description() -> list[dict[str, str]]:
    """NVIDIA GPUs with their driver, from nvidia-smi when it is on PATH (empty otherwise)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(("name", "driver", "memory"), (p.strip() for p in line.split(",")))) for line in out.splitlines()
            if line.strip()]


def runtime_versions() -> dict[str, str]:
    """Installed versions of the runtimes that time models (read from package metadata: no imports)."""
    found = {}
    for name in RUNTIMES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


@lru_cache(maxsize=1)
def machine() -> dict[str, Any]:
    """The machine part of a fingerprint, with its ``machine_id``."""
    desc = {"cpu": cpu_description(), "gpus": gpu_description(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "runtimes": runtime_versions(), "host": platform.node()}
    key = {k: v for k, v in desc.items() if k != "host"}  # same hardware and software under another name: same id
    return {**desc, "machine_id": hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}




def fingerprint(artifact: Path) -> dict[str, Any]:
    """Machine, runtimes and the measured file's SHA-256 (external weights beside it included)."""
    from ..artifacts.onnx_files import onnx_files

    files = onnx_files(artifact) if artifact.suffix == ".onnx" else [artifact]
    digest = (file_sha256(files[0]) if len(files) == 1
              else hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest())
    return {**machine(), "artifact_sha256": digest}
