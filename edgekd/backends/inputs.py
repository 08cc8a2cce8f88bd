"""What a model file takes, and the inputs the harness feeds it (issue 16.1).

An image classifier has one float input; a text encoder exported from transformers has three int64 ones
(``input_ids``, ``attention_mask``, ``token_type_ids``) with dynamic batch and sequence axes. This module
reads a file's inputs (names, element types, dims, symbolic ones by name), resolves the shapes to run
(the file's own, ``--shape name=1x128`` per input, or one sequence length for every dynamic non-batch
axis), and builds a feed that looks like real data: floats seeded and never zero; ids drawn inside the
vocabulary the file's own embedding table has (or a tokenizer's); masks of ones; token types of zeros;
position ids counting up; or the user's arrays from an ``.npz``. Zeros and out-of-range ids are not
neutral for a transformer: a Gather past the table's end fails, and an all-zero mask takes other paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import InputError, first_line

# ONNX element type -> numpy dtype, for the inputs the harness can make
ELEMENT_TYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool"}

# ``shape`` as callers pass it: one tuple (a single-input file), or per input name
ShapeRequest = tuple[int, ...] | Mapping[str, tuple[int, ...]] | None


@dataclass(frozen=True)
class GraphInput:
    """One input of a model file: its name, numpy dtype and declared dims (a symbolic dim as its name)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]


def read_graph(onnx_path: Path) -> Any:
    """The file's graph, weights not loaded; a damaged file is the user's input error."""
    import onnx

    try:
        return onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others on a damaged file
        raise InputError(f"{onnx_path}: not a readable ONNX model ("
                         f"{first_line(exc, with_type=True)})") from None


def inputs_of(graph: Any, onnx_path: Path) -> list[GraphInput]:
    """The graph's real inputs (not initializers listed as inputs), refusing element types the harness
    cannot make."""
    import onnx

    weights = {t.name for t in graph.initializer}
    found = []
    for i in graph.input:
        if i.name in weights:
            continue
        elem = i.type.tensor_type.elem_type
        if elem not in ELEMENT_TYPES:
            raise InputError(f"{onnx_path}: input {i.name!r} is {onnx.TensorProto.DataType.Name(elem)}; edgekd "
                             f"feeds {', '.join(ELEMENT_TYPES.values())} inputs")
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in i.type.tensor_type.shape.dim)
        found.append(GraphInput(i.name, ELEMENT_TYPES[elem], dims))
    if not found:
        raise InputError(f"{onnx_path}: the graph has no inputs to feed")
    return found


def graph_inputs(onnx_path: Path) -> list[GraphInput]:
    return inputs_of(read_graph(onnx_path), onnx_path)


def parse_shape_options(values: list[str] | None) -> ShapeRequest:
    """``--shape`` as given: ``1x3x224x224`` (the only input) or ``name=1x128`` per input, repeatable."""
    if not values:
        return None
    named: dict[str, tuple[int, ...]] = {}
    for text in values:
        name, _, dims = text.rpartition("=")
        shape = _dims(dims, text)
        if not name:
            if len(values) > 1:
                raise InputError(f"--shape {text!r}: with several --shape options each names its input, "
                                 f"e.g. --shape input_ids=1x128")
            return shape
        named[name] = shape
    return named


def _dims(text: str, whole: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise InputError(f"--shape {whole!r}: expected positive dims joined by 'x', e.g. 1x3x224x224 or "
                         f"input_ids=1x128")
    return shape


def resolve_shapes(onnx_path: Path, shape: ShapeRequest = None, seq: int | None = None,
                   inputs: list[GraphInput] | None = None) -> tuple[dict[str, tuple[int, ...]], bool]:
    """(the shape to run per input, whether the file must be re-declared for them).

    Per input: a given shape (same rank as the file's); else the file's dims with a symbolic batch dim
    as 1, ``seq`` for every other symbolic dim, and a symbolic dim named like one already resolved
    (``sequence`` in ``input_ids`` and ``attention_mask``) taking the same value. Whatever stays unknown
    needs ``--shape`` (or ``--seq``)."""
    inputs = inputs if inputs is not None else graph_inputs(onnx_path)
    by_name = {i.name: i for i in inputs}
    given: dict[str, tuple[int, ...]] = {}
    if isinstance(shape, tuple):
        if len(inputs) != 1:
            raise InputError(f"{onnx_path}: the file has {len(inputs)} inputs ({', '.join(by_name)}); name each "
                             f"shape, e.g. --shape {inputs[0].name}=1x128")
        given = {inputs[0].name: shape}
    elif shape:
        unknown = [n for n in shape if n not in by_name]
        if unknown:
            raise InputError(f"{onnx_path}: --shape names input {unknown[0]!r}; the file's inputs: {', '.join(by_name)}")
        given = dict(shape)
    symbols: dict[str, int] = {}
    for name, dims in given.items():
        declared = by_name[name].dims
        if len(dims) != len(declared):
            raise InputError(f"{onnx_path}: --shape {'x'.join(map(str, dims))} has rank {len(dims)}; input "
                             f"{name!r} has rank {len(declared)} ({'x'.join(map(str, declared))})")
        symbols.update({d: v for d, v in zip(declared, dims) if isinstance(d, str) and d != "?"})
    if seq is not None and not any(isinstance(d, str) for i in inputs for d in i.dims[1:]):
        raise InputError(f"{onnx_path}: --seq needs a dynamic sequence axis; the inputs are fixed "
                         f"({', '.join(f'{i.name} ' + 'x'.join(map(str, i.dims)) for i in inputs)})")
    shapes: dict[str, tuple[int, ...]] = {}
    for i in inputs:
        if i.name in given:
            shapes[i.name] = given[i.name]
            continue
        dims = []
        for axis, d in enumerate(i.dims):
            if isinstance(d, int) and d > 0:
                dims.append(d)
            elif isinstance(d, str) and d in symbols:
                dims.append(symbols[d])
            elif axis == 0:
                dims.append(1)
            elif seq is not None:
                dims.append(seq)
            else:
                raise InputError(f"{onnx_path}: input {i.name!r} has dynamic dims ({'x'.join(map(str, i.dims))}); "
                                 f"pass --shape {i.name}=..., or --seq N for a sequence axis")
        shapes[i.name] = tuple(dims)
    reshape = any(list(shapes[i.name]) != list(i.dims) for i in inputs)
    return shapes, reshape


def with_batch(shapes: Mapping[str, tuple[int, ...]], batch: int) -> dict[str, tuple[int, ...]]:
    """Every input at batch ``batch`` (axis 0), for the throughput session."""
    return {n: (batch, *s[1:]) for n, s in shapes.items()}


def vocab_sizes(graph: Any) -> dict[str, int]:
    """Input name -> rows of the embedding table it indexes (a Gather of an initializer by that input,
    possibly through Cast/Unsqueeze; an INT8 table through its DequantizeLinear): the range its ids must
    stay in."""
    rows = {t.name: (t.dims[0] if t.dims else 0) for t in graph.initializer}
    rows.update({n.output[0]: _constant_rows(n) for n in graph.node if n.op_type == "Constant"})
    rows.update({n.output[0]: rows.get(n.input[0], 0) for n in graph.node if n.op_type == "DequantizeLinear"})
    producer = {o: n for n in graph.node for o in n.output}
    sizes: dict[str, int] = {}
    for n in graph.node:
        if n.op_type != "Gather" or len(n.input) < 2 or not rows.get(n.input[0]):
            continue
        source = n.input[1]
        while source in producer and producer[source].op_type in ("Cast", "Unsqueeze", "Reshape", "Squeeze"):
            source = producer[source].input[0]
        sizes[source] = min(sizes.get(source, 1 << 62), rows[n.input[0]])
    return sizes


def _constant_rows(node: Any) -> int:
    for a in node.attribute:
        if a.name == "value" and a.t.dims:
            return int(a.t.dims[0])
    return 0


def make_feed(inputs: list[GraphInput], shapes: Mapping[str, tuple[int, ...]], *, vocab: Mapping[str, int] | None = None,
              vocab_default: int | None = None, arrays: Mapping[str, np.ndarray] | None = None,
              seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays for every input, made as real data would look (module docstring). ``vocab``: per input,
    from ``vocab_sizes``; ``vocab_default``: a tokenizer's size for id inputs the file does not say;
    ``arrays``: the user's own, used as given (their shapes win)."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for i in inputs:
        if arrays is not None and i.name in arrays:
            feed[i.name] = np.ascontiguousarray(arrays[i.name].astype(i.dtype, copy=False))
            continue
        shape = tuple(shapes[i.name])
        kind = _kind(i.name)
        if i.dtype.startswith("float"):
            feed[i.name] = rng.random(shape, dtype=np.float32).astype(i.dtype, copy=False)
        elif i.dtype == "bool" or kind == "mask":
            feed[i.name] = np.ones(shape, dtype=i.dtype)
        elif kind == "type":
            feed[i.name] = np.zeros(shape, dtype=i.dtype)
        elif kind == "position":
            feed[i.name] = np.broadcast_to(np.arange(shape[-1], dtype=i.dtype), shape).copy()
        else:
            high = (vocab or {}).get(i.name) or vocab_default
            if not high:
                raise InputError(f"input {i.name!r} takes integers whose range edgekd cannot read from the file "
                                 f"(no embedding table indexed by it); pass --tokenizer DIR or --inputs FILE.npz")
            feed[i.name] = rng.integers(0, high, size=shape, dtype=i.dtype)
    return feed


def _kind(name: str) -> str:
    low = name.lower()
    if re.search(r"mask", low):
        return "mask"
    if re.search(r"token_?type|segment", low):
        return "type"
    if re.search(r"position", low):
        return "position"
    return "ids"


def load_arrays(path: Path, inputs: list[GraphInput]) -> dict[str, np.ndarray]:
    """The user's ``--inputs FILE.npz`` (no pickles), checked against the file's input names."""
    if not path.is_file():
        raise InputError(f"--inputs {path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - a damaged zip or a pickled array
        raise InputError(f"--inputs {path}: not a readable .npz of plain arrays ({type(exc).__name__})") from None
    names = [i.name for i in inputs]
    unknown = [k for k in arrays if k not in names]
    if unknown:
        raise InputError(f"--inputs {path}: array {unknown[0]!r} is not an input of the model; its inputs: "
                         f"{', '.join(names)}")
    return arrays


def tokenizer_vocab(path: Path) -> int:
    """The vocabulary size of a local tokenizer directory (transformers, offline)."""
    from ..models.hub import pretrained

    try:
        return len(pretrained("AutoTokenizer", path))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError for a wrong folder
        raise InputError(f"--tokenizer {path}: not a tokenizer directory ({first_line(exc)[:160]})") from None


def reshaped_onnx(onnx_path: Path, shapes: Mapping[str, tuple[int, ...]]) -> bytes:
    """``onnx_path`` with its inputs declared as ``shapes`` and its outputs' batch dim as theirs (onnx's
    own ``update_inputs_outputs_dims``; stale intermediate shapes dropped). Used to time a batch-1
    export at batch N, or a dynamic one at a fixed shape, on runtimes that compile for one shape. A
    graph that bakes batch 1 into a Reshape still fails when run; the caller reports that as the reason."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(onnx_path))
    batch = next(iter(shapes.values()))[0]
    outputs = {o.name: [batch] + [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{o.name}_{i}")
                                  for i, d in enumerate(o.type.tensor_type.shape.dim)][1:]
               for o in model.graph.output}
    del model.graph.value_info[:]
    for vi in [*model.graph.input, *model.graph.output]:  # the tool only fills dims it finds unset
        for d in vi.type.tensor_type.shape.dim:
            d.Clear()
    weights = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:  # initializers listed as inputs keep their own shapes
        if vi.name in weights:
            shapes = {**shapes, vi.name: tuple(next(t.dims for t in model.graph.initializer if t.name == vi.name))}
    return update_inputs_outputs_dims(model, {n: list(s) for n, s in shapes.items()}, outputs).SerializeToString()


@dataclass(frozen=True)
class FeedSpec:
    """How the harness makes a file's inputs beyond what the file says: the user's arrays (``--inputs
    FILE.npz``) and a tokenizer's vocabulary size (``--tokenizer DIR``) for ids the file does not bound."""

    arrays: Mapping[str, np.ndarray] | None = None
    vocab: int | None = None

    def shapes(self, shape: ShapeRequest) -> ShapeRequest:
        """``shape`` with the user's arrays' shapes added (theirs are the shapes the file is run at)."""
        if not self.arrays:
            return shape
        if isinstance(shape, tuple):
            raise InputError("--inputs FILE.npz gives the shapes; name any --shape as input=dims")
        return {**{n: tuple(a.shape) for n, a in self.arrays.items()}, **(shape or {})}


def feed_for(compiled: Any, path: Path, spec: FeedSpec | None = None) -> dict[str, np.ndarray]:
    """The feed one compiled file is timed with: ``make_feed`` at its compiled shapes, ids bounded by the
    file's own embedding tables. The user's arrays are tiled along the batch axis when the session runs
    a larger batch (throughput)."""
    spec = spec or FeedSpec()
    vocab = vocab_sizes(read_graph(path)) if path.suffix == ".onnx" else {}
    arrays = None
    if spec.arrays:
        arrays = {n: (np.repeat(a[:1], compiled.input_shapes[n][0], axis=0)
                      if n in compiled.input_shapes and a.shape[0] != compiled.input_shapes[n][0] else a)
                  for n, a in spec.arrays.items()}
    return make_feed(compiled.inputs, compiled.input_shapes, vocab=vocab, vocab_default=spec.vocab, arrays=arrays)
