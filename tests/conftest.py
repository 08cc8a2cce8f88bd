"""Shared fixtures: tiny data, a tiny teacher, a tiny recipe, and one tiny run reused by many tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.models.zoo import TinyCNN

TINY_DATA = {"source": "synthetic", "samples": 192, "classes": 4, "image_size": 16, "batch_size": 32}
# int8_max_ratio off: on a 16x16 toy per-op overhead makes INT8 slower than FP32 (0.020 vs 0.013 ms), and
# these targets serve tests of other things; the verdict has its own tests (test_int8_verdict.py)
FAST_LATENCY = {"warmup_runs": 3, "warmup_seconds": 0.0, "runs": 20, "min_seconds": 0.0, "batch": 2,
                "throughput_seconds": 0.05, "int8_max_ratio": None}


def pytest_configure(config: pytest.Config) -> None:
    """The tests' children come from a clean process (``tests/spawn.py``: the pytest process died of
    SIGSEGV inside ``subprocess.run`` after ~500 tests, with vfork() and with fork()); its pool starts
    here, before any test has run a runtime."""
    from .spawn import clean_spawner

    clean_spawner()


def invoke(*args: str):
    """Run the CLI in-process; returns click's Result (exit_code, output)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def save_model(model: torch.nn.Module, path: Path) -> Path:
    """``model``'s weights as a safetensors checkpoint (what users hand to ``compress``)."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def trained_tiny_cnn(epochs: int = 8, seed: int = 0) -> TinyCNN:
    """A TinyCNN trained on ``TINY_DATA``'s train split (a teacher worth distilling: runs check that a
    teacher beats chance before anything trains); about a second."""
    from edgekd.config.schema import DataSpec
    from edgekd.data import build_splits

    torch.manual_seed(seed)
    model, splits = TinyCNN(num_classes=4), build_splits(DataSpec(**TINY_DATA))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for x, y in splits.arrays("train"):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y).long()).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return save_model(trained_tiny_cnn(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """A tiny recipe and two fast targets (same backends as the built-ins, fewer runs)."""
    d = tmp_path_factory.mktemp("cfg")
    recipe = {"name": "tiny", "arch": "edgekd:tiny_cnn", "data": TINY_DATA, "student": {"width": 0.5},
              "stages": [{"stage": "distill", "epochs": 2, "lr": 0.01},
                         {"stage": "quantize", "mode": "qat", "epochs": 1, "calibration_batches": 2,
                          "reduce_range": True},
                         {"stage": "export"}],
              "targets": [str(d / "ort.yaml"), str(d / "ov.yaml")]}
    write_yaml(d / "ort.yaml", {"name": "tiny-ort", "backend": "onnxruntime", "threads": 1, "latency": FAST_LATENCY})
    write_yaml(d / "ov.yaml", {"name": "tiny-ov", "backend": "openvino", "threads": 1, "precision_hint": "f32",
                               "latency": FAST_LATENCY})
    return {"recipe": write_yaml(d / "tiny.yaml", recipe), "ort": d / "ort.yaml", "ov": d / "ov.yaml"}


@pytest.fixture(scope="session")
def tiny_run(tiny_teacher, tiny_files, tmp_path_factory) -> Path:
    """One real end-to-end ``edgekd compress`` on the tiny recipe, shared by report/gate/CLI tests."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", out)
    assert result.exit_code == 0, result.output
    return out


def reseal(run_dir: Path) -> Path:
    """Record a copied run's edited files as its own, as ``compress`` does when a run finishes: tests that
    stand in for *another* run (slower timings, other numbers) edit a copy and then reseal it, since
    report and gate refuse a run whose files changed after it completed."""
    import json

    from edgekd.artifacts.rundir import output_hashes, record_report

    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["outputs"] = output_hashes(run_dir)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    record_report(run_dir)
    return run_dir
