"""Packaging that fits a user's environment (issue 26): the runtimes are extras, a missing one is named
with the extra that installs it, the declared floors are what ``make test-floor`` installs, and the
deprecated TorchScript ONNX exporter edgekd relies on is a tripwire, not a surprise."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

from .spawn import run

ROOT = Path(__file__).parents[1]
BLOCK = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
sys.argv = ["edgekd", *{args!r}]
from edgekd.cli.app import main
sys.exit(main())
"""


def without(module: str, *args: str) -> subprocess.CompletedProcess:
    """edgekd run in a child process where ``module`` cannot be imported (as if its extra was left out)."""
    return run([sys.executable, "-c", BLOCK.format(module=module, args=list(args))], capture_output=True, text=True)


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_runtimes_are_extras_so_an_onnxruntime_gpu_install_is_left_alone():
    core = " ".join(project()["dependencies"])
    assert "onnxruntime" not in core and "openvino" not in core and "tensorrt" not in core
    extras = project()["optional-dependencies"]
    assert extras["onnxruntime"] == ["onnxruntime>=1.18"] and extras["onnxruntime-gpu"] == ["onnxruntime-gpu>=1.18"]
    assert extras["openvino"] and extras["tensorrt"]
    assert any(d.startswith("torch>=2.10") for d in project()["dependencies"])  # what pickled checkpoints need


@pytest.mark.parametrize("module, extra", [("onnxruntime", "edgekd[onnxruntime]"), ("openvino", "edgekd[openvino]")])
def test_a_missing_runtime_is_named_with_its_extra(module, extra):
    listed = without(module, "list", "backends")
    assert listed.returncode == 0, listed.stderr[-2000:]
    line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{module}:"))
    assert "unavailable" in line and extra in line, line


def test_the_export_stage_without_onnx_runtime_is_refused_before_training(tmp_path):
    done = without("onnxruntime", "compress", "--out", str(tmp_path / "run"), "--target", "cpu-openvino",
                   "--dry-run")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "export stage checks its files with ONNX Runtime" in done.stderr and "edgekd[onnxruntime]" in done.stderr
    assert "stage 1/" not in done.stderr


def test_the_floor_constraints_pin_every_declared_floor():
    sys.path.insert(0, str(ROOT / ".ci"))
    try:
        from floors import floors
    finally:
        sys.path.pop(0)
    pinned = floors(str(ROOT / "pyproject.toml"), ["cpu", "vision", "data", "text", "dev"])
    assert pinned["torch"] == "2.10" and pinned["torchvision"] == "0.25.0"  # the pair built together
    assert pinned["brevitas"] == "0.13" and pinned["onnxruntime"] == "1.18"
    declared = [r for r in project()["dependencies"] if ">=" in r]
    assert len([r for r in declared if r.split(">=")[0].strip().lower() in pinned]) == len(declared)


def test_the_torchscript_onnx_exporter_edgekd_relies_on_still_exists(tmp_path):
    """Brevitas writes QuantizeLinear/DequantizeLinear through ``symbolic`` functions that only the
    TorchScript exporter (``dynamo=False``) calls; PyTorch has deprecated it. When a torch release
    removes it this test fails first, naming the reason (docs/compatibility.md says what to do)."""
    from brevitas.export import export_onnx_qcdq
    from brevitas.nn import QuantConv2d, QuantIdentity

    model = torch.nn.Sequential(QuantIdentity(return_quant_tensor=True), QuantConv2d(1, 2, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_qcdq(model, torch.rand(1, 1, 8, 8), export_path=str(tmp_path / "q.onnx"), dynamo=False,
                         opset_version=17)
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
