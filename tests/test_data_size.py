"""The data's sample size comes from the data (issue 25): the default recipe's 32x32 digits do not resize a
user's 28x28 npz given with --data, a recipe's own resize is kept, and a model that rejects the size is
told which key sets it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edgekd.data import build_splits
from edgekd.run.recipe import assemble_recipe

from .conftest import invoke, write_yaml


def npz_28(path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 4, n)
    np.savez(path, **arrays)
    return path


def test_the_default_recipe_keeps_a_28x28_npz_at_28x28(tmp_path):
    data = npz_28(tmp_path / "mnist.npz")
    rec = assemble_recipe("default", str(data), arch=None, arch_args=None, device=None, targets=None)
    assert rec.data.source == "npz" and rec.data.image_size is None
    assert build_splits(rec.data).input_shape == (1, 28, 28)
    own = write_yaml(tmp_path / "r.yaml", {"name": "r", "data": {"image_size": 32},  # no source: a resize
                                           "stages": [{"stage": "export"}]})
    resized = assemble_recipe(own, str(data), arch=None, arch_args=None, device=None, targets=None)
    assert build_splits(resized.data).input_shape == (1, 32, 32)


class Only32(nn.Module):
    """A third-party model that checks its input in forward."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels * 32 * 32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (1, 32, 32):
            raise ValueError(f"input shape {tuple(x.shape)}")
        return self.fc(x.flatten(1))


def test_a_model_that_rejects_the_data_size_is_told_which_key_sets_it(tmp_path):
    checkpoint = tmp_path / "only32.safetensors"
    save_file(Only32().state_dict(), str(checkpoint))
    data = npz_28(tmp_path / "mnist.npz")
    result = invoke("compress", checkpoint, "--arch", "tests.test_data_size:Only32", "--data", str(data),
                    "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "does not accept the data's input shape (1, 1, 28, 28) (input shape (1, 1, 28, 28))" in out
    assert "the size (28, 28) is the data's own; data.image_size (or data.preprocess.size) resizes it" in out


def npz_rgb(path, size: int = 40):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 3, n)
    np.savez(path, **arrays)
    return path


@pytest.mark.floor
def test_the_architectures_preprocessing_is_printed_written_down_and_can_be_turned_off(tmp_path):
    """Issue 26.1: torchvision's weights table picks resize 256 -> crop 224 and ImageNet's mean/std; a dry
    run says so with each value's origin, recipe.resolved.yaml records the values (so it reruns the same),
    and ``preprocess: none`` keeps the samples as they are."""
    import yaml

    torchvision = pytest.importorskip("torchvision", reason="the vision extra is not installed")
    checkpoint = tmp_path / "m.safetensors"
    save_file(torchvision.models.mobilenet_v3_small(num_classes=3).state_dict(), str(checkpoint))
    data = npz_rgb(tmp_path / "rgb.npz")
    recipe = write_yaml(tmp_path / "r.yaml", {"name": "r", "stages": [{"stage": "export"}], "targets": [],
                                              "teacher_check": False})  # an untrained mobilenet
    common = ["compress", checkpoint, "--arch", "torchvision:mobilenet_v3_small", "--recipe"]
    chosen = invoke(*common, recipe, "--data", str(data), "--out", tmp_path / "a", "--dry-run")
    assert chosen.exit_code == 0, chosen.output
    assert "data: preprocess: size 224 (architecture), resize 256 (architecture)" in chosen.output
    assert "mean [0.485, 0.456, 0.406] (architecture)" in chosen.output
    resolved = yaml.safe_load((tmp_path / "a" / "recipe.resolved.yaml").read_text())
    assert resolved["data"]["preprocess"]["size"] == 224 and resolved["data"]["preprocess"]["resize"] == 256
    again = invoke(*common, tmp_path / "a" / "recipe.resolved.yaml", "--out", tmp_path / "b", "--dry-run")
    assert again.exit_code == 0, again.output
    assert "size 224 (recipe), resize 256 (recipe)" in again.output  # the same values, now the recipe's own
    plain = write_yaml(tmp_path / "p.yaml", {"name": "p", "data": {"preprocess": "none"}, "teacher_check": False,
                                             "stages": [{"stage": "export"}], "targets": []})
    raw = invoke(*common, plain, "--data", str(data), "--out", tmp_path / "c", "--dry-run")
    assert raw.exit_code == 0, raw.output
    assert "data: preprocess: none" in raw.output
    assert yaml.safe_load((tmp_path / "c" / "recipe.resolved.yaml").read_text())["data"]["preprocess"] == "none"
    rec = assemble_recipe(plain, str(data), arch="torchvision:mobilenet_v3_small", arch_args=None, device=None,
                          targets=None)
    from edgekd.data.transforms import arch_preprocess

    assert build_splits(rec.data, arch_preprocess(rec.arch)).input_shape == (3, 40, 40)
