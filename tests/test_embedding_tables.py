"""INT8 embedding tables (issue 25): a text model's lookup tables quantized weight-only, per row, stored
as INT8 in every file edgekd writes, read row by row on ONNX Runtime and OpenVINO, with the outputs of
the fake-quantized torch model; and the ONNX rewrite behind ORT's files checked on generated tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers", reason="the text extra (pip install 'edgekd[text]') is not installed")

from edgekd.backends import BACKENDS, make_target  # noqa: E402
from edgekd.backends.base import predict  # noqa: E402
from edgekd.data.packed import packed_feed  # noqa: E402
from edgekd.stages.export.int8_layouts import export_qdq, write_dynamic, write_u8s8  # noqa: E402
from edgekd.stages.export.onnx_folds import gathers_before_dequantize  # noqa: E402
from edgekd.stages.quantize.quantization import QuantSpec, calibrate, quantize_model  # noqa: E402
from edgekd.tasks import embedding_scores  # noqa: E402

VOCAB, HIDDEN = 3000, 32


def encoder() -> torch.nn.Module:
    """A random-weight 2-layer BERT sentence encoder whose word table (3000 x 32) outweighs its layers."""
    import transformers

    from edgekd.models.text import TextModel

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=2 * HIDDEN, max_position_embeddings=32)
    return TextModel(transformers.BertModel(config), "embedding").eval()


def packed_ids(n: int, seed: int) -> torch.Tensor:
    """``n`` packed (ids, mask, token types) samples of 16 tokens, ids anywhere in the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, 16), generator=g)
    return torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1)


def word_table_reads(path: Path) -> list[str]:
    """The element type of the table (an initializer 32 wide) each lookup by ``input_ids`` reads
    (directly, or through a DequantizeLinear of it); the lookup of per-row scales is not one."""
    import onnx

    graph = onnx.load(str(path)).graph
    inits = {i.name: onnx.TensorProto.DataType.Name(i.data_type) for i in graph.initializer}
    dims = {i.name: list(i.dims) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    reads = []
    for node in graph.node:
        if node.op_type == "Gather" and node.input[1] == "input_ids":
            table = node.input[0]
            if table not in inits and producer[table].op_type == "DequantizeLinear":
                table = producer[table].input[0]
            if dims[table][-1] == HIDDEN:
                reads.append(inits[table])
    return reads


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine of paired rows, as the embedding task scores files."""
    return embedding_scores(a, b)["cosine_to_teacher"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Each layout's file of the same calibrated encoder, with float tables and with INT8 tables."""
    root = tmp_path_factory.mktemp("tables")
    model, example = encoder(), packed_ids(1, 0)
    out: dict[str, Any] = {}
    for tables, spec in (("float", QuantSpec()), ("int8", QuantSpec(embedding_bits=8))):
        qmodel = quantize_model(model, spec, example=example)
        calibrate(qmodel, [packed_ids(16, seed) for seed in range(4)])
        out[f"torch/{tables}"] = qmodel
        out[f"qdq/{tables}"] = root / f"{tables}.onnx"
        export_qdq(qmodel, example, out[f"qdq/{tables}"], 17)
        for layout, write in (("dynamic", write_dynamic), ("u8s8", write_u8s8)):
            out[f"{layout}/{tables}"] = root / f"{tables}.{layout}.onnx"
            write(out[f"qdq/{tables}"], out[f"{layout}/{tables}"])
    return out


NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def run_file(path: Path, backend: str, x: torch.Tensor) -> np.ndarray:
    """``path`` compiled by ``backend`` as a target runs it, on each sample of ``x`` (``predict``: each
    output copied, as OpenVINO hands back its reused buffer)."""
    target = make_target(name="t", backend=backend, threads=1)
    return predict(BACKENDS.get(backend)().compile(path, target, {name: (1, 16) for name in NAMES}), x.numpy())


def run_exactly(path: Path, x: torch.Tensor) -> np.ndarray:
    """``path`` interpreted by ONNX Runtime with its graph optimizations off: QDQ computed as written."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, packed_feed(x[i:i + 1].numpy(), NAMES))[0] for i in range(len(x))])


def test_the_word_table_is_int8_in_every_file_and_a_quarter_of_its_float_size(files):
    for layout in ("qdq", "dynamic", "u8s8"):
        assert word_table_reads(files[f"{layout}/float"]) == ["FLOAT"], layout
        assert word_table_reads(files[f"{layout}/int8"]) == ["INT8"], layout
    saved = files["qdq/float"].stat().st_size - files["qdq/int8"].stat().st_size
    assert saved >= 0.7 * VOCAB * HIDDEN * 4  # 3 of the table's 4 bytes per weight (scales cost a little)


def test_the_quantized_table_keeps_each_row_close_to_float():
    model = encoder()
    qmodel = quantize_model(model, QuantSpec(embedding_bits=8), example=packed_ids(1, 0))
    table = model.backbone.embeddings.word_embeddings.weight.detach()
    lookup = qmodel.backbone.embeddings.word_embeddings
    rows = lookup(torch.arange(VOCAB)).detach()
    assert type(lookup).__name__ == "RowQuantEmbedding"
    assert not torch.equal(rows, table)  # quantized: on a grid, not the float values
    assert torch.equal(rows[0], table[0])  # the padding row (zeros) stays zeros
    assert torch.nn.functional.cosine_similarity(rows[1:], table[1:], dim=1).min() > 0.999
    steps = rows / lookup.quant_weight().scale.reshape(-1, 1).detach()  # each row on its own INT8 grid
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 128


def test_the_exact_interpretation_of_the_file_is_the_fake_quant_model(files):
    x = packed_ids(16, 1)
    want = files["torch/int8"](x).detach().numpy()
    got = run_exactly(files["qdq/int8"], x)
    assert cosine(got, want) > 0.9999  # the same rows, the same scales: the export changed no value


@pytest.mark.parametrize("backend,layout", [("onnxruntime", "dynamic"), ("onnxruntime", "u8s8"), ("openvino", "qdq")])
def test_each_runtime_reads_the_int8_rows_at_the_cost_of_their_rounding_only(files, backend, layout):
    """The runtime's output with INT8 tables against its own output for the same model with float tables:
    a lookup of the wrong rows or scales would be far off; rounding the rows costs little."""
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino is the 'openvino' extra")
    x = packed_ids(24, 1)
    assert len({row.tobytes() for row in run_file(files[f"{layout}/int8"], backend, x)}) == len(x)  # one per text
    assert cosine(run_file(files[f"{layout}/int8"], backend, x), run_file(files[f"{layout}/float"], backend, x)) > 0.99


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(2, 40), width=st.integers(1, 6), index_rank=st.integers(1, 3),
       scales=st.sampled_from(["tensor", "row", "column"]), seed=st.integers(0, 2**16))
def test_looking_rows_up_before_scaling_them_computes_the_same_values(rows, width, index_rank, scales, seed):
    """``gathers_before_dequantize`` on generated tables and index shapes: the same outputs as the
    DequantizeLinear -> Gather it replaces (ONNX Runtime, exact), and no DequantizeLinear left that
    reads a whole table when the zero point is 0."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    table = rng.integers(-128, 128, (rows, width)).astype(np.int8)
    scale = {"tensor": rng.random(1)[0], "row": rng.random(rows), "column": rng.random(width)}[scales]
    axis = {"tensor": 1, "row": 0, "column": 1}[scales]
    scale = np.asarray(scale + 0.01, np.float32)
    zero = np.zeros(scale.shape, np.int8)
    index_shape = [int(d) for d in rng.integers(1, 4, index_rank)]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["table", "scale", "zero"], ["values"], axis=axis),
         helper.make_node("Gather", ["values", "ids"], ["out"])], "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, index_shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [*index_shape, width])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(scale, "scale"),
         numpy_helper.from_array(zero, "zero")])
    before = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert gathers_before_dequantize(after) == 1
    onnx.checker.check_model(after, full_check=True)
    assert not [n for n in after.graph.node if n.op_type == "DequantizeLinear"]
    ids = rng.integers(0, rows, index_shape)
    outputs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
               for m in (before, after)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
