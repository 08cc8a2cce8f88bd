"""Issue 22.3: each bad input the issue names, as a regression test of its class's validation layer (the
generators in test_properties.py explore around them). Every case ends as an edgekd error naming the
file or key (exit 2), quickly, with the input unchanged."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import DataError, InputError

from . import spawn
from .conftest import invoke


def _png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    from PIL import Image

    Image.new(mode, size).save(path, format="PNG")
    return path


# ---------------------------------------------------------------- images
@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "bomb"])
def test_a_bad_image_is_a_data_error_naming_it(tmp_path, kind):
    from edgekd.data.sources import decode_image

    path = tmp_path / f"{kind}.png"
    if kind == "truncated":
        path.write_bytes(_png(tmp_path / "ok.png", (64, 64)).read_bytes()[:60])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an image")
    else:  # 10 000 x 10 000 one-bit pixels: a few KB on disk, 100 M pixels decoded
        _png(path, (10_000, 10_000), "1")
    with pytest.raises(DataError, match=str(path.name)):
        decode_image(path)


def test_dry_run_decodes_every_image_so_a_bad_one_in_train_fails_before_training(tmp_path):
    import torch

    from edgekd.models.zoo import TinyCNN

    from .conftest import save_model

    torch.manual_seed(0)
    teacher = save_model(TinyCNN(num_classes=2, in_channels=3), tmp_path / "t.safetensors")
    root = tmp_path / "images"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            _png(root / cls / f"{i}.png", (16, 16))
    (root / "b" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = invoke("compress", teacher, "--arch", "edgekd:tiny_cnn", "--data", f"imagefolder:{root}",
                    "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 2 and "5.png" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_image_folders_are_walked_without_following_directory_links(tmp_path):
    from edgekd.data.sources import scan_class_folders

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _png(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)        # a loop: walked forever before
    (tmp_path / "b" / "again").symlink_to(tmp_path / "b")  # a self-link: the class counted its files again
    (tmp_path / "b" / "linked.png").symlink_to(tmp_path / "a" / "0.png")  # a linked file is a sample
    started = time.monotonic()
    classes, samples = scan_class_folders(tmp_path, None)
    assert time.monotonic() - started < 60  # a hang detector, not a speed claim
    assert classes == ["a", "b"] and [label for _, label in samples].count(0) == 3
    assert [label for _, label in samples].count(1) == 4


# ---------------------------------------------------------------- text rows
def _rows(tmp_path: Path, name: str, data: bytes | str):
    from edgekd.data.text import read_rows

    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return read_rows(path, "text", "label")


@pytest.mark.parametrize("name, data, message", [
    ("bad.csv", b"text,label\n\xff\xfe bad bytes,1\n", "not UTF-8"),
    ("long.csv", "text,label\n" + "x" * 128_000 + ",1\n", "at most"),
    ("ragged.csv", "text,label\ngood,1\nmissing a column\n", "line 3 has 1 fields"),
    ("list.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', "line 2 is a JSON list"),
    ("line.jsonl", '{"text": "' + "y" * 1_000_000 + '", "label": 1}\n', "longer than"),
    ("nolabel.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', "row 2 has no 'label'"),
])
def test_a_bad_text_file_is_a_data_error_naming_the_line(tmp_path, name, data, message):
    with pytest.raises(DataError, match=message):
        _rows(tmp_path, name, data)


def test_a_bom_is_read_as_one(tmp_path):
    parts = _rows(tmp_path, "bom.csv", "\ufefftext,label\nhello,1\n")
    assert parts["train"] == (["hello"], ["1"])


@pytest.mark.parametrize("label, message", [(1e12, "out of range"), (1.7, "not a whole number"),
                                            (float("nan"), "not a whole number"), (True, "boolean"),
                                            (-1, "out of range")])
def test_a_label_that_is_no_class_index_is_refused_not_rounded(label, message):
    from edgekd.data.text import label_ids

    with pytest.raises(DataError, match=message):
        label_ids([0, 1, label], None)


def test_whole_number_labels_in_any_form_are_class_indices():
    from edgekd.data.text import label_ids

    ids, names = label_ids([0, 1.0, "2"], None)
    assert ids.tolist() == [0, 1, 2] and names is None


# ---------------------------------------------------------------- hf configs and tokenizers
@pytest.mark.parametrize("config, message", [({"num_hidden_layers": 100_000}, "num_hidden_layers 100000"),
                                             ({"vocab_size": 400_000_000, "hidden_size": 128}, "parameters")])
def test_an_hf_config_too_large_to_build_is_refused_before_allocating(tmp_path, config, message):
    pytest.importorskip("transformers", reason="the text extra is not installed")
    from edgekd.models.text import build_hf

    base = {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
            "num_hidden_layers": 2, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps({**base, **config}))
    started = time.monotonic()
    with pytest.raises(InputError, match=message):
        build_hf(str(tmp_path), 2)
    assert time.monotonic() - started < 60  # a hang detector, not a speed claim


def test_a_huge_tokenizer_file_is_refused_before_it_is_read(tmp_path):
    from edgekd.models.hub import check_folder

    with open(tmp_path / "tokenizer.json", "wb") as f:  # sparse: 300 MB on paper, nothing on disk
        f.truncate(300 << 20)
    with pytest.raises(InputError, match="tokenizer.json"):
        check_folder(tmp_path)


# ---------------------------------------------------------------- npz, YAML, environment
def test_an_npy_header_claiming_more_rows_than_the_file_holds_is_refused(tmp_path):
    import zipfile

    from edgekd.data.sources import npz_arrays

    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((10, 1, 4, 4), np.float32), y_train=np.zeros(10, np.int64))
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src:
        members = {n: src.read(n) for n in src.namelist()}
    members["x_train.npy"] = members["x_train.npy"].replace(b"(10, 1, 4, 4)", b"(999999, 1, 4, 4)")
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)
    with pytest.raises(DataError, match="claims shape"):
        npz_arrays(tmp_path / "d.npz")


def test_a_small_yaml_that_expands_to_billions_of_nodes_is_refused(tmp_path):
    from edgekd.run.recipe import load_recipe
    from edgekd.errors import RecipeError

    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 33)]  # 64 aliases
    path = tmp_path / "r.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1600
    with pytest.raises(RecipeError, match="expands to more than"):
        load_recipe(path)


@pytest.mark.parametrize("value", ["abc", "nan", "-1", "1e400"])
def test_a_bad_environment_variable_is_exit_2_before_the_run_directory_exists(tmp_path, tiny_teacher, tiny_files,
                                                                               monkeypatch, value):
    monkeypatch.setenv("EDGEKD_TEACHER_CACHE_MB", value)
    result = invoke("compress", tiny_teacher, "--recipe", tiny_files["recipe"], "--out", tmp_path / "run")
    assert result.exit_code == 2 and "EDGEKD_TEACHER_CACHE_MB" in result.output, result.output
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- Ctrl-C
def test_ctrl_c_is_honoured_even_when_a_library_swallows_it(tmp_path):
    """A library that catches BaseException around an import (as some do) ate the KeyboardInterrupt and
    the run exited 0; the CLI's own handler remembers the signal and exits 130."""
    script = tmp_path / "swallow.py"
    script.write_text("import os, signal, sys, time\n"
                      "import edgekd.cli, edgekd.cli.app\n"
                      "cli = sys.modules['edgekd.cli.app']\n"
                      "real = cli.app\n"
                      "def swallowing(*args, **kwargs):\n"
                      "    try:\n"
                      "        os.kill(os.getpid(), signal.SIGINT)\n"
                      "        time.sleep(1)\n"
                      "    except BaseException:\n"
                      "        pass\n"
                      "    return real(*args, **kwargs)\n"
                      "cli.app = swallowing\n"
                      "sys.argv = ['edgekd', 'list', 'losses']\n"
                      "cli.main()\n")
    done = spawn.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 130, done.stdout + done.stderr
