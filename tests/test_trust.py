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

from . import spawn

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: object, stdin: str = "y\ny\ny\n", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed ``edgekd`` entry point as a user runs it, with answers waiting on stdin."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_DEBUG"}
    return spawn.run([sys.executable, "-c", "from edgekd.cli.app import main; main()", *map(str, args)],
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
        assert "--data" not in result.stdout + result.stderr  # got past the data's form to the folder itself


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
    """The rule as code: edgekd calls ``from_pretrained``/``from_config`` only inside ``models/hub.py``,
    which pins trust_remote_code=False and local_files_only=True; a new call elsewhere fails here."""
    offenders = []
    for path in (ROOT / "edgekd").rglob("*.py"):
        if path.name == "hub.py" and path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("from_pretrained", "from_config"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"transformers loads outside edgekd/models/hub.py: {offenders}"


def test_the_door_cannot_be_opened_by_a_caller():
    from edgekd.models.hub import pretrained

    with pytest.raises(TypeError, match="trust_remote_code"):
        pretrained("AutoConfig", "anywhere", trust_remote_code=True)


def test_the_command_line_reads_nothing_from_stdin():
    """``detach_stdin``: what a library reads from standard input is end-of-file, not the pipe's ``y``."""
    probe = ("import sys; from edgekd.cli.app import detach_stdin; detach_stdin(); "
             "import os; print(repr(sys.stdin.read()), repr(os.read(0, 10)))")
    out = spawn.run([sys.executable, "-c", probe], input="y\n", capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "'' b''", out.stdout + out.stderr


# ---------------------------------------------------------------- torch.export programs (.pt2)
class Planted:
    """Unpickling this runs a shell command that touches ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data  # BINUNICODE


def memo_stack_global(marker: Path) -> bytes:
    """A pickle whose STACK_GLOBAL takes ``os``/``system`` from the memo while decoy strings
    (``collections``, ``OrderedDict``) were the last ones pushed: an opcode scanner that pairs the last
    two strings reads a harmless global."""
    return (b"\x80\x04" + _unicode("os") + b"\x940" + _unicode("system") + b"\x940"
            + _unicode("collections") + b"0" + _unicode("OrderedDict") + b"0"
            + b"h\x00h\x01\x93" + _unicode(f"touch {marker}") + b"\x85R.")


def payloads(marker: Path) -> dict[str, bytes]:
    """Ways to encode "run a command" that torch opens: its zip format, its legacy format (several
    pickles back to back), plain pickles at protocols 0 and 2, and the memo trick."""
    import io
    import pickle

    import torch

    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save({"x": Planted(marker)}, zipped)
    torch.save({"x": Planted(marker)}, legacy, _use_new_zipfile_serialization=False)
    return {"torch.save zip": zipped.getvalue(), "torch.save legacy stream": legacy.getvalue(),
            "pickle protocol 0": pickle.dumps(Planted(marker), protocol=0),
            "pickle protocol 2": pickle.dumps(Planted(marker), protocol=2),
            "STACK_GLOBAL from the memo behind decoys": memo_stack_global(marker)}


CARRIERS = ("use_pickle weight", "use_pickle constant", "sample inputs", "legacy weights file",
            "legacy constants file", "opaque constant", "custom object constant")


def plant(clean: Path, planted: Path, carrier: str, payload: bytes) -> None:
    """Copy the program ``clean`` to ``planted`` with ``payload`` where ``carrier`` says torch reads it."""
    import zipfile

    with zipfile.ZipFile(clean) as src:
        members = {n: src.read(n) for n in src.namelist()}
    root = next(n for n in members if n.endswith("archive_format")).rsplit("archive_format", 1)[0]
    weights_cfg, constants_cfg = f"{root}data/weights/model_weights_config.json", \
        f"{root}data/constants/model_constants_config.json"
    if carrier == "use_pickle weight":
        config = json.loads(members[weights_cfg])
        name = next(iter(config["config"]))
        config["config"][name]["use_pickle"] = True
        members[weights_cfg] = json.dumps(config).encode()
        members[f"{root}data/weights/{config['config'][name]['path_name']}"] = payload
    elif carrier == "sample inputs":
        members[f"{root}data/sample_inputs/model.pt"] = payload
    elif carrier == "legacy weights file":
        members[f"{root}data/weights/model.pt"] = payload
    elif carrier == "legacy constants file":
        members[f"{root}data/constants/model.pt"] = payload
    else:
        path_name = {"use_pickle constant": "tensor_0", "opaque constant": "opaque_obj_0",
                     "custom object constant": "custom_obj_0"}[carrier]
        config = json.loads(members[constants_cfg])
        a_weight = next(iter(json.loads(members[weights_cfg])["config"].values()))
        config["config"]["planted"] = {"path_name": path_name, "is_param": False,
                                       "use_pickle": carrier == "use_pickle constant",
                                       "tensor_meta": a_weight["tensor_meta"]}
        members[constants_cfg] = json.dumps(config).encode()
        # torch first maps every listed constant as float32 storage: a size that is no multiple of 4
        # fails that before the object is opened (pickle ignores bytes after its STOP)
        members[f"{root}data/constants/{path_name}"] = payload + b"\0" * (-len(payload) % 8)
    with zipfile.ZipFile(planted, "w") as dst:
        for name, data in members.items():
            dst.writestr(name, data)


@pytest.fixture(scope="module")
def clean_program(tmp_path_factory) -> Path:
    import torch

    from edgekd.stages.exporting import export_program

    path = tmp_path_factory.mktemp("pt2") / "clean.pt2"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    export_program(model, torch.randn(1, 3, 8, 8), path)
    return path


@pytest.mark.parametrize("scanner", ["with the opcode scanner", "torch alone (scanner switched off)"])
@pytest.mark.parametrize("carrier", CARRIERS)
def test_no_planted_program_runs_code_without_trust(tmp_path, clean_program, carrier, scanner, monkeypatch):
    """Every carrier torch reads x every encoding of a command: the load is refused (exit 2 from bench,
    CheckpointError from the gate every torch target goes through) and the marker never appears; also
    with the opcode scanner switched off, since it is only the second line."""
    from edgekd.models import checkpoint
    from edgekd.models.checkpoint import load_exported_program
    from edgekd.errors import CheckpointError

    from .conftest import invoke

    if scanner.startswith("torch alone"):
        monkeypatch.setattr(checkpoint, "archive_unsafe_globals", lambda data, where="": [])
    marker = tmp_path / "PWNED"
    for label, payload in payloads(marker).items():
        evil = tmp_path / f"{label.replace(' ', '_')}.pt2"
        plant(clean_program, evil, carrier, payload)
        before = evil.read_bytes()
        with pytest.raises(CheckpointError, match="--trust-checkpoint|could not load"):
            load_exported_program(evil)
        result = invoke("bench", evil, "--target", "cpu-torch", "--runs", "3", "--warmup", "1")
        assert not marker.exists(), f"{carrier} / {label} ran its command"
        assert result.exit_code == 2 and "Traceback" not in result.output, (label, result.output)
        assert evil.read_bytes() == before


def test_a_pickled_tensor_weight_still_loads_and_the_switch_is_put_back(tmp_path, clean_program):
    """Refusing code is not refusing pickles: a ``use_pickle`` weight holding a plain tensor is what
    weights_only accepts, so the program loads; the forcing variable is gone afterwards."""
    import io

    import torch

    from edgekd.models.checkpoint import load_exported_program

    buf = io.BytesIO()
    torch.save(torch.nn.Parameter(torch.full((4, 3, 3, 3), 0.5)), buf)
    ok = tmp_path / "pickled_tensor.pt2"
    plant(clean_program, ok, "use_pickle weight", buf.getvalue())
    program = load_exported_program(ok)
    assert torch.equal(program.state_dict["0.weight"], torch.full((4, 3, 3, 3), 0.5))
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
    import pickle

    assert pickle.loads(pickle.dumps([1, 2])) == [1, 2]


def test_a_planted_program_runs_only_with_trust(tmp_path, clean_program):
    from edgekd.models.checkpoint import load_exported_program

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt2"
    plant(clean_program, evil, "opaque constant", payloads(marker)["pickle protocol 2"])
    error = ""
    try:
        load_exported_program(evil, trust=True)
    except Exception as exc:  # noqa: BLE001 - the planted constant need not make a valid program; it ran already
        error = str(exc)
    assert marker.exists(), error
