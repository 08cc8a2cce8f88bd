"""The embedded default end to end (what `make demo` runs), held to the issue's accuracy and size bar.

Speed is not asserted here (benchmarks/ measure it); accuracy and size are deterministic enough.
"""

from __future__ import annotations

import json

import pytest

from edgekd.train.default_teacher import ARCH, BUNDLED
from edgekd.models.checkpoint import load_checkpoint
from edgekd.config.schema import DataSpec
from edgekd.data import build_splits
from edgekd.train.evaluate import accuracy

from .conftest import invoke


def test_bundled_teacher_loads_and_is_accurate():
    splits = build_splits(DataSpec())
    loaded = load_checkpoint(BUNDLED, ARCH, num_classes=10, in_channels=1)
    assert sum(p.numel() for p in loaded.model.parameters()) > 900_000
    assert accuracy(loaded.model, splits, "test") >= 0.98


@pytest.mark.slow
def test_default_compress_meets_accuracy_and_size_bar(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # built-in recipe, targets and teacher resolve from any directory
    result = invoke("compress")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "runs" / "default" / "report.json").read_text())
    sizes = {v["name"]: v["size_bytes"] for v in report["variants"]}
    assert sizes["student-int8"] <= sizes["teacher-fp32"] / 4
    for target in ("cpu-onnxruntime", "cpu-openvino"):
        acc = {r["variant"]: r["accuracy"] for r in report["results"] if r["target"] == target}
        assert acc["student-int8"] >= acc["teacher-fp32"] - 0.01, (target, acc)
    assert "cpu-openvino" in result.output and "student-int8" in result.output
