"""Benchmarking any ONNX file (issue 16.1): several int64 inputs, dynamic axes, a sequence sweep,
generated inputs that look like real ones, or the user's own from an .npz."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.backends.inputs import graph_inputs, make_feed, resolve_shapes, vocab_sizes, read_graph

from .conftest import invoke

transformers = pytest.importorskip("transformers", reason="the text extra (pip install 'edgekd[text]') is not installed")

VOCAB = 120


def tiny_bert() -> torch.nn.Module:
    """A 2-layer BERT from a local config (nothing downloaded), random weights."""
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


class Hidden(torch.nn.Module):
    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory) -> Path:
    """The tiny BERT exported as users do: three int64 inputs, dynamic batch and sequence axes."""
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    ids = torch.randint(0, VOCAB, (1, 16))
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"}, "hidden": {0: "batch", 1: "sequence"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Hidden(tiny_bert()), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["hidden"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def test_inputs_are_read_with_types_and_symbolic_dims_and_ids_stay_inside_the_vocabulary(bert_onnx):
    inputs = graph_inputs(bert_onnx)
    assert [(i.name, i.dtype) for i in inputs] == [("input_ids", "int64"), ("attention_mask", "int64"),
                                                   ("token_type_ids", "int64")]
    assert inputs[0].dims == ("batch", "sequence")
    assert vocab_sizes(read_graph(bert_onnx))["input_ids"] == VOCAB
    shapes, reshape = resolve_shapes(bert_onnx, {"input_ids": (2, 48)})  # 'sequence' is shared by name
    assert shapes == {"input_ids": (2, 48), "attention_mask": (2, 48), "token_type_ids": (2, 48)} and reshape
    feed = make_feed(inputs, shapes, vocab=vocab_sizes(read_graph(bert_onnx)))
    assert feed["input_ids"].dtype == np.int64 and 0 <= feed["input_ids"].min() and feed["input_ids"].max() < VOCAB
    assert len(np.unique(feed["input_ids"])) > 10  # not a constant: real text has many tokens
    assert (feed["attention_mask"] == 1).all() and (feed["token_type_ids"] == 0).all()


def test_bench_times_a_three_input_int64_file_on_both_runtimes(bert_onnx, tmp_path):
    result = invoke("bench", bert_onnx, "--target", "cpu-onnxruntime", "--target", "cpu-openvino", "--runs", "5",
                    "--seconds", "0", "--warmup", "1", "--batch", "2", "--shape", "input_ids=1x64",
                    "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r in rows:
        assert r["input_shapes"] == {"input_ids": [1, 64], "attention_mask": [1, 64], "token_type_ids": [1, 64]}
        assert r["latency_ms"]["p50"] > 0 and r["throughput_batch"]["ips"] > 0  # batch 2 ran too
    assert "inputs input_ids 1x64" in result.output


def test_a_sequence_sweep_gives_one_row_per_length_and_longer_is_slower(bert_onnx, tmp_path):
    result = invoke("bench", bert_onnx, "--target", "cpu-onnxruntime", "--runs", "30", "--seconds", "0",
                    "--warmup", "3", "--batch", "1", "--seq", "8,256", "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["seq"] for r in rows] == [8, 256]
    assert rows[0]["input_shapes"]["attention_mask"] == [1, 8] and rows[1]["input_shapes"]["input_ids"] == [1, 256]
    # 32x the tokens: attention alone is 1024x the work; this is a sanity check of what ran, not a speed claim
    assert rows[1]["latency_ms"]["p50"] > rows[0]["latency_ms"]["p50"]


def test_the_users_arrays_are_fed_as_given_and_their_shapes_win(bert_onnx, tmp_path):
    ids = np.arange(20, dtype=np.int64).reshape(1, 20) % VOCAB
    np.savez(tmp_path / "inputs.npz", input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
    result = invoke("bench", bert_onnx, "--target", "cpu-onnxruntime", "--runs", "3", "--seconds", "0", "--warmup",
                    "1", "--batch", "1", "--inputs", tmp_path / "inputs.npz", "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "rows.json").read_text())[0]["input_shapes"]["input_ids"] == [1, 20]


@pytest.mark.parametrize("args, message", [
    ((), "input 'input_ids' has dynamic dims (batchxsequence); pass --shape input_ids=..., or --seq N"),
    (("--shape", "1x64"), "the file has 3 inputs (input_ids, attention_mask, token_type_ids); name each shape"),
    (("--shape", "words=1x64"), "--shape names input 'words'; the file's inputs: input_ids, attention_mask"),
    (("--shape", "input_ids=64"), "--shape 64 has rank 1; input 'input_ids' has rank 2"),
    (("--seq", "0,64"), "--seq '0,64': expected positive lengths"),
])
def test_bad_shapes_for_a_multi_input_file_are_one_line_exit_2(bert_onnx, args, message):
    result = invoke("bench", bert_onnx, "--target", "cpu-onnxruntime", *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_npz_naming_no_input_is_refused(bert_onnx, tmp_path):
    np.savez(tmp_path / "bad.npz", words=np.zeros((1, 4), dtype=np.int64))
    result = invoke("bench", bert_onnx, "--target", "cpu-onnxruntime", "--inputs", tmp_path / "bad.npz")
    assert result.exit_code == 2 and "array 'words' is not an input of the model" in result.output


def test_seq_on_a_fixed_file_is_refused(tmp_path):
    from .test_bench import export_plain  # a static image model

    path = export_plain(tmp_path / "plain.onnx")
    result = invoke("bench", path, "--target", "cpu-onnxruntime", "--seq", "32")
    assert result.exit_code == 2 and "--seq needs a dynamic sequence axis" in result.output


def test_a_dynamically_quantized_file_is_benched_as_int8(bert_onnx, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgekd.measure.measurement import file_precision

    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(bert_onnx), str(dynamic), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    assert file_precision(bert_onnx) == "fp32" and file_precision(dynamic) == "int8"
    result = invoke("bench", dynamic, "--target", "cpu-onnxruntime", "--runs", "3", "--seconds", "0", "--warmup",
                    "1", "--batch", "1", "--seq", "16", "--json", tmp_path / "rows.json")
    row = json.loads((tmp_path / "rows.json").read_text())[0]
    assert result.exit_code == 0 and row["precision"] == "int8" and row["int8_layers"]["int8"] > 0
