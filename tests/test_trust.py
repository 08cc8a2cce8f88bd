"""Issue 22.1: nothing a user hands edgekd runs code unless they pass --trust-checkpoint, and the rule is
enforced by the libraries (torch's ``weights_only``, transformers' ``trust_remote_code=False``), not by
a scanner of ours. Each test plants a file or folder whose code would touch a marker file, runs the
real command-line entry point (a subprocess, with ``y`` waiting on stdin), and fails if the marker appears.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: object, stdin: str = "y\ny\ny\n", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed ``edgekd`` entry point as a user runs it, with answers waiting on stdin."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    return subprocess.run([sys.executable, "-c", "from edgekd.cli.app import main; main()", *map(str, args)],
                          input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


# ---------------------------------------------------------------- transformers folders
def remote_code_folder(root: Path, marker: Path, *, where: str) -> Path:
    """A Hugging Face folder whose ``auto_map`` points at its own Python (which touches ``marker`` when
    imported): in config.json with an unknown ``model_type`` (transformers then asks on stdin when
    ``trust_remote_code`` is unset), or in tokenizer_config.json."""
    root.mkdir(parents=True)
    code = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    (root / "evil_config.py").write_text(code + "from transformers import PretrainedConfig\n"
                                         "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    (root / "evil_tok.py").write_text(code + "from transformers import PreTrainedTokenizerFast\n"
                                      "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    if where == "config":
        (root / "config.json").write_text(json.dumps({"model_type": "evil-unknown", "auto_map": {
            "AutoConfig": "evil_config.EvilConfig", "AutoModel": "evil_config.EvilConfig",
            "AutoModelForSequenceClassification": "evil_config.EvilConfig",
            "AutoTokenizer": ["evil_tok.EvilTokenizer", "evil_tok.EvilTokenizer"]}}))
        (root / "model.safetensors").write_bytes(b"")
    (root / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["evil_tok.EvilTokenizer", None]}}))
    return root


@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_a_folder_with_remote_code_runs_nothing_under_compress_or_bench(tmp_path, where):
    pytest.importorskip("transformers", reason="the text extra (pip install 'edgekd[text]') is not installed")
    marker = tmp_path / "PWNED"
    folder = remote_code_folder(tmp_path / "evil", marker, where=where)
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": f"a b c {i}", "label": i % 2}) + "\n" for i in range(40)))
    onnx_file = tiny_onnx(tmp_path / "m.onnx")
    runs = [("compress", "--arch", f"hf:{folder}", "--data", f"text:{texts}", "--out", tmp_path / "run",
             "--dry-run"),
            ("bench", onnx_file, "--tokenizer", folder, "--target", "cpu-onnxruntime", "--runs", "3")]
    if where == "tokenizer":  # a real model folder, the evil tokenizer given as the data's tokenizer
        from .text_models import bert_folder

        bert = bert_folder(tmp_path / "bert")
        runs[0] = ("compress", "--arch", f"hf:{bert}", "--data", f"text:{texts}", "--out", tmp_path / "run",
                   "--dry-run", "--recipe", text_recipe(tmp_path, folder))
    for args in runs:
        result = run_cli(*args)
        assert not marker.exists(), f"{args[0]} imported the folder's code: {result.stdout}{result.stderr}"
        assert result.returncode in (0, 1, 2), result.stderr
        assert "Traceback" not in result.stderr


def text_recipe(tmp_path: Path, tokenizer: Path) -> Path:
    import yaml

    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "data": {"source": "text", "path": "x.jsonl",
                                                         "tokenizer": str(tokenizer), "max_length": 16},
                                    "stages": [{"stage": "distill", "epochs": 1}, {"stage": "export"}]}))
    return path


def tiny_onnx(path: Path) -> Path:
    """A one-input int64 ONNX file (an embedding lookup), so bench asks the tokenizer for ids."""
    import onnx
    from onnx import TensorProto, helper

    table = helper.make_tensor("table", TensorProto.FLOAT, [50, 4], [0.1] * 200)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "input_ids"], ["y"])], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_every_transformers_load_goes_through_the_locked_door():
    """The rule as code: edgekd calls ``from_pretrained``/``from_config`` only inside ``text/hub.py``,
    which pins trust_remote_code=False and local_files_only=True; a new call elsewhere fails here."""
    offenders = []
    for path in (ROOT / "edgekd").rglob("*.py"):
        if path.name == "hub.py" and path.parent.name == "text":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("from_pretrained", "from_config"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"transformers loads outside edgekd/text/hub.py: {offenders}"


def test_the_door_cannot_be_opened_by_a_caller():
    from edgekd.text.hub import pretrained

    with pytest.raises(TypeError, match="trust_remote_code"):
        pretrained("AutoConfig", "anywhere", trust_remote_code=True)


def test_the_command_line_reads_nothing_from_stdin():
    """``detach_stdin``: what a library reads from standard input is end-of-file, not the pipe's ``y``."""
    probe = ("import sys; from edgekd.cli.app import detach_stdin; detach_stdin(); "
             "import os; print(repr(sys.stdin.read()), repr(os.read(0, 10)))")
    out = subprocess.run([sys.executable, "-c", probe], input="y\n", capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "'' b''", out.stdout + out.stderr
