"""Whether an INT8 QDQ file computes what its fake-quantized torch model computes, and if not, where not.

The file and the model share every integer grid, so an exact interpretation of the file (ONNX Runtime
with optimizations off) should follow the model to within rounding. Three answers:

* **matches**: the logits' SQNR against the model's is at least ``min_sqnr_db`` (identical outputs,
  including tied or all-zero ones, are infinitely close: a file equal to its reference always matches);
* **diverges**: some op, given *the model's own* integer inputs, does not reproduce the model's integer
  output: that op is named;
* **matches op by op**: every op reproduces the model's integers to within one step from the model's
  own inputs, yet the logits drift apart: one-step rounding differences (two float libraries summing in
  another order land on the other side of a .5) amplified by the network. Measured on the pretrained
  EfficientNet-Lite0: 5 of 401 408 stem values flip one step and the logits end 28 dB apart.

The op-by-op comparison is *teacher-forced*: the file is cut at every activation quantizer (each
``QuantizeLinear``'s readers read a new graph input instead), the model's quantized values are fed into
every cut, and one run gives each quantizer's output computed from exact inputs. Comparing the two end to
end instead would blame the first op where accumulated noise crosses a threshold, not the op that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# an element more than one step off, computed from identical inputs, is a different computation; a few
# per million are allowed for transcendental ops (Sigmoid, Erf, Exp) whose float libraries differ in ulps
LOCAL_TOLERANCE_STEPS = 1
LOCAL_TOLERANCE_FRACTION = 1e-4


@dataclass
class QuantizerSite:
    """One activation quantizer: the model's proxy (by module name, in call order) and the file's node."""

    module: str
    node: str
    ops: list[str]                 # the float ops between the previous quantizers and this one
    worst_steps: int = 0
    off_fraction: float = 0.0      # elements more than LOCAL_TOLERANCE_STEPS off
    moved_fraction: float = 0.0    # elements off at all (one step included)

    @property
    def diverges(self) -> bool:
        return self.worst_steps > LOCAL_TOLERANCE_STEPS and self.off_fraction > LOCAL_TOLERANCE_FRACTION


@dataclass
class Localization:
    aligned: bool
    why: str = ""
    sites: list[QuantizerSite] = field(default_factory=list)
    sample: int = 0                # which sample of the judged batch was compared op by op

    @property
    def first_divergence(self) -> QuantizerSite | None:
        return next((s for s in self.sites if s.diverges), None)

    def to_json(self) -> dict[str, Any]:
        bad = self.first_divergence
        return {"aligned": self.aligned, "why": self.why, "sample": self.sample, "quantizers": len(self.sites),
                "worst_local_steps": max((s.worst_steps for s in self.sites), default=0),
                "first_divergence": None if bad is None else {
                    "module": bad.module, "node": bad.node, "ops": bad.ops, "worst_steps": bad.worst_steps,
                    "off_fraction": bad.off_fraction},
                "moved_sites": [{"module": s.module, "worst_steps": s.worst_steps, "moved_fraction": s.moved_fraction}
                                for s in self.sites if s.moved_fraction > 0][:8]}


def model_quantizer_outputs(qmodel: Any, x: Any) -> list[tuple[str, np.ndarray]]:
    """Each enabled activation quantizer's dequantized output on ``x``, in call order (a module called
    twice, like a shared ReLU, appears twice), as the file's ``QuantizeLinear`` nodes are ordered."""
    import torch
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjector

    seen: list[tuple[str, np.ndarray]] = []

    def record(name: str):
        def hook(_module: Any, _inputs: Any, out: Any) -> None:
            value = getattr(out, "value", None)
            if value is not None and getattr(out, "scale", None) is not None:
                # a copy: an in-place op after the quantizer (ReLU(inplace=True) in layerwise mode) would
                # otherwise rewrite the recorded values (dla34 "diverged" by 115 steps on its negative half)
                seen.append((name, value.detach().float().cpu().numpy().copy()))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in qmodel.named_modules()
               if isinstance(m, ActQuantProxyFromInjector) and m.is_quant_enabled]
    try:
        with torch.no_grad():
            qmodel.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _constant(model: Any, name: str) -> np.ndarray | None:
    from .onnx_folds import constant_value

    return None if not name else constant_value(model, name)


def _float_ops_before(graph: Any, tensor: str, stops: set[str]) -> list[str]:
    """The non-quantization ops that compute ``tensor`` back to the nearest quantized values."""
    producer = {o: n for n in graph.node for o in n.output}
    ops, todo, seen = [], [tensor], set()
    while todo:
        name = todo.pop()
        node = producer.get(name)
        if name in stops or node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in ("DequantizeLinear", "QuantizeLinear", "Constant"):
            continue
        ops.append(f"{node.op_type} {node.name!r}")
        todo.extend(node.input)
    return ops[::-1]


def worst_sample(reference: np.ndarray, output: np.ndarray) -> int:
    """The index of the sample whose outputs are furthest apart (lowest SQNR; a zero reference with any
    difference is the furthest). The op-by-op comparison runs there: on a random-init mobilenet_v2, 6 of 8
    samples came out bit-identical and 2 at 8-12 dB, so the first sample showed nothing to locate."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    noise = ((ref - output.reshape(len(output), -1)) ** 2).mean(axis=1)
    signal = (ref ** 2).mean(axis=1)
    ratio = np.where(noise == 0, np.inf, signal / np.where(noise == 0, 1.0, noise))
    return int(np.argmin(ratio))


def own_rounding_db(qmodel: Any, x: Any, samples: int = 16) -> float | None:
    """How far the fake-quantized model is from itself computed in float64 instead of float32 (SQNR of its
    outputs, dB, on the first ``samples`` of ``x``): the closeness that rounding alone allows any other
    float32 implementation of the same grids, the file included. On the pretrained EfficientNet-Lite0 it is
    28 dB, as is the file: no float32 interpretation can reach the 35 dB the issue hoped for, the model's own
    second computation does not. None where the model cannot run in float64 (a layer that insists on float32)."""
    import copy

    import torch

    from ...tasks.parity import sqnr_db

    batch = x[:samples].detach().cpu()
    try:
        twin = copy.deepcopy(qmodel).cpu().eval()
        with torch.no_grad():
            single = twin(batch.float())
            single = getattr(single, "value", single).float().numpy()
            double = twin.double()(batch.double())
            double = getattr(double, "value", double).float().numpy()
    except Exception:  # noqa: BLE001 - an explanatory number: a model that cannot run in float64 has none
        return None
    return sqnr_db(double, single)


def localize(path: Any, qmodel: Any, x: Any) -> Localization:
    """Teacher-forced comparison of the file at ``path`` with ``qmodel`` on ``x`` (one sample, the file's
    batch of 1): see the module docstring."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ...artifacts.qdq_rules import added_by_layout
    from ...data.packed import packed_feed

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    quants = [n for n in graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] not in inits and not added_by_layout(n)]
    values = model_quantizer_outputs(qmodel, x)
    if len(values) != len(quants):
        return Localization(False, f"the model calls {len(values)} activation quantizers, the file has "
                                   f"{len(quants)} QuantizeLinear nodes on activations")
    sites, feeds = [], {}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = []
    for k, (q, (module, value)) in enumerate(zip(quants, values)):
        scale = _constant(model, q.input[1])
        zero = _constant(model, q.input[2]) if len(q.input) > 2 else np.zeros((), np.uint8)
        if scale is None or zero is None or np.size(scale) != 1:
            return Localization(False, f"{q.name}: not a per-tensor activation quantizer with constant parameters")
        integers = np.round(value / float(scale)) + zero.astype(np.int32)
        info = np.iinfo(zero.dtype)
        if integers.min() < info.min or integers.max() > info.max:
            return Localization(False, f"{q.name}: the model's values at {module} are off this quantizer's grid")
        cut = f"edgekd_cut_{k}"
        feeds[cut] = integers.astype(zero.dtype)
        elem = TensorProto.UINT8 if zero.dtype == np.uint8 else TensorProto.INT8
        graph.input.append(helper.make_tensor_value_info(cut, elem, list(feeds[cut].shape)))
        for reader in readers.get(q.output[0], []):
            for j, name in enumerate(reader.input):
                if name == q.output[0]:
                    reader.input[j] = cut
        outputs.append(q.output[0])
        sites.append(QuantizerSite(module, q.name, []))
    stops = set(feeds) | {i.name for i in graph.input}
    for site, q in zip(sites, quants):
        site.ops = _float_ops_before(graph, q.input[0], stops)
    del graph.output[:]
    graph.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs() if not i.name.startswith("edgekd_cut_")]
    feeds.update(packed_feed(x.numpy(), names))
    got = session.run(outputs, feeds)
    for site, ours, theirs in zip(sites, got, feeds.values()):
        if ours.shape != theirs.shape:
            return Localization(False, f"{site.node}: the file's output has shape {ours.shape}, "
                                       f"the model's {theirs.shape}")
        steps = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
        site.worst_steps = int(steps.max()) if steps.size else 0
        site.off_fraction = float(np.mean(steps > LOCAL_TOLERANCE_STEPS)) if steps.size else 0.0
        site.moved_fraction = float(np.mean(steps > 0)) if steps.size else 0.0
    return Localization(True, "", sites)
