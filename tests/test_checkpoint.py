"""Safe loading: no code from a checkpoint runs without --trust-checkpoint."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from edgekd.models.checkpoint import build_model, load_checkpoint
from edgekd.errors import CheckpointError
from edgekd.models.zoo import TinyCNN

from .conftest import invoke, trained_tiny_cnn


class _Planted:
    """Unpickling this creates the marker file: the proof that code from the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("fmt", ["torch-zip", "raw-pickle"])
def test_planted_pickle_is_refused_and_never_runs(tmp_path, tiny_files, fmt):
    marker = tmp_path / "MARKER"
    ckpt = tmp_path / "evil.pt"
    payload = {"state_dict": {"w": torch.zeros(1)}, "x": _Planted(str(marker))}
    if fmt == "torch-zip":
        torch.save(payload, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(payload))
    result = invoke("compress", ckpt, "--arch", "edgekd:tiny_cnn", "--recipe", tiny_files["recipe"],
                    "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "unsafe globals" in result.output and "open" in result.output
    assert "--trust-checkpoint" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_trusted_pickled_module_loads_and_is_recorded(tmp_path, tiny_files):
    ckpt = tmp_path / "module.pt"
    torch.save(trained_tiny_cnn(), ckpt)
    refused = invoke("compress", ckpt, "--recipe", tiny_files["recipe"], "--out", tmp_path / "a", "--dry-run")
    assert refused.exit_code == 2 and "--trust-checkpoint" in refused.output  # --dry-run opens the checkpoint too
    out = tmp_path / "b"
    result = invoke("compress", ckpt, "--recipe", tiny_files["recipe"], "--out", out, "--trust-checkpoint",
                    "--target", tiny_files["ort"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoint"]["trusted_checkpoint"] is True
    assert manifest["checkpoint"]["format"] == "pickled-module"
    untrusted = invoke("compress", ckpt, "--recipe", tiny_files["recipe"], "--out", tmp_path / "c")
    assert untrusted.exit_code == 2 and "TinyCNN" in untrusted.output


def test_torchscript_needs_trust(tmp_path):
    path = tmp_path / "m.ts"
    torch.jit.script(TinyCNN()).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript.*--trust-checkpoint"):
        load_checkpoint(path, None)
    assert load_checkpoint(path, None, trust=True).format == "torchscript"


def test_state_dict_and_safetensors_load_exactly(tmp_path):
    model = TinyCNN(num_classes=4).eval()
    torch.save({"model_state_dict": model.state_dict(), "epoch": 3}, tmp_path / "sd.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    x = torch.rand(2, 1, 16, 16)
    for name in ("sd.pth", "w.safetensors"):
        loaded = load_checkpoint(tmp_path / name, "edgekd:tiny_cnn", num_classes=4)
        assert not loaded.trusted
        assert torch.equal(loaded.model.eval()(x), model(x))


def test_mismatched_weights_name_the_keys(tmp_path):
    save_file({k: v.contiguous() for k, v in TinyCNN(num_classes=4).state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatch: classifier.weight"):
        load_checkpoint(tmp_path / "w.safetensors", "edgekd:tiny_cnn", num_classes=10)
    with pytest.raises(CheckpointError, match="missing: features.8.weight.*shape mismatch: features.0.weight"):
        load_checkpoint(tmp_path / "w.safetensors", "edgekd:digits_cnn", num_classes=4)
    with pytest.raises(CheckpointError, match="needs --arch"):
        load_checkpoint(tmp_path / "w.safetensors", None)


def test_arch_spec_forms():
    assert isinstance(build_model("edgekd:tiny_cnn", width=0.5), TinyCNN)
    model = build_model("edgekd.models.zoo:TinyCNN", num_classes=3)  # package.module:factory
    assert model.classifier.out_features == 3
    with pytest.raises(CheckpointError, match="known: digits_cnn, tiny_cnn"):
        build_model("edgekd:resnet")
    with pytest.raises(CheckpointError, match="expected edgekd:NAME"):
        build_model("resnet18")
    with pytest.raises(CheckpointError, match="cannot import"):
        build_model("no_such_pkg.mod:factory")


def test_torchvision_arch_builds_without_download():
    pytest.importorskip("torchvision", reason="torchvision is the 'vision' extra, not installed by make test")
    model = build_model("torchvision:resnet18", num_classes=7)
    assert model.fc.out_features == 7


def test_missing_checkpoint_exit_2(tmp_path):
    result = invoke("compress", tmp_path / "nope.safetensors", "--arch", "edgekd:tiny_cnn")
    assert result.exit_code == 2 and "checkpoint file not found" in result.output


def test_a_safetensors_file_loads_into_a_module_that_reads_its_state_dict_version(tmp_path):
    """safetensors keeps no module versions (``state_dict()._metadata``); torchvision's MNASNet refuses a
    state dict without one ("version should be set to 1 or 2 instead of None"), so a user's mnasnet0_75
    checkpoint failed with an internal error. Weights without versions load as the current architecture's."""
    torchvision = pytest.importorskip("torchvision", reason="torchvision is the 'vision' extra")
    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_75(num_classes=3).eval()
    path = tmp_path / "mnasnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_checkpoint(path, "torchvision:mnasnet0_75", num_classes=3)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), model(x))
