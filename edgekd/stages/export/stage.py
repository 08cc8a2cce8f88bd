"""The export stage: every variant to ONNX, checked, and compared with the torch model it came from.

FP32 variants go through torch's TorchScript exporter and INT8 variants through Brevitas' QCDQ
exporter, both at a fixed batch of 1 (the edge case) and the recipe's opset. Each file must pass
``onnx.checker`` with strict shape inference, and its outputs on real test samples, run by ONNX
Runtime as an exact reference interpreter (graph optimizations off), must match the torch model: within ``fp32_atol``/``fp32_rtol``
for FP32; for INT8 files on the model's own integer grids, the fake-quantized torch model by
``edgekd.stages.export.int8_fidelity``'s three answers (matches by SQNR; matches op by op; or diverges at a named op),
with top-1 agreement on the samples that are not near-ties recorded beside it; ONNX Runtime's dynamic
layout, which requantizes by design, by that agreement (or cosine, for embeddings). A failed check fails
the stage with the numbers.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...artifacts.artifact import Artifact, config_hash, count_params_macs, onnx_size_bytes
from .config import ExportConfig
from ...errors import InputError, StageError, first_line
from ..exporting import INPUT_NAME, OUTPUT_NAME, export_fp32, export_program
from ...progress import console, runtime_log_severity
from ...fileio import atomic_path
from .int8_layouts import DYNAMIC_LAYOUT, onednn_float_convs, write_dynamic, write_s8s8_onednn, write_u8s8
from ...artifacts.qdq_rules import ONEDNN_LAYOUT, layout_path
from ...tasks.classification import decisive_agreement
from ...tasks.parity import parity
from .int8_layouts import export_qdq
from ...data.packed import export_signature, packed_feed
from ...models.text import TextModel
from ...artifacts.onnx_files import write_metadata
from ...tasks import Agreement, Classification, Task
from ...train.evaluate import predict_logits
from ..base import PREFLIGHTS, RESOLVERS, STAGES, Preview, StageContext, TargetFacts, preflight_error


@RESOLVERS.register("export")
def resolve_export(spec: ExportConfig, targets: list[TargetFacts], where: str) -> ExportConfig:
    """Settle ``torch_program``: programs are written only when a torch target will run them (a
    torch.export costs seconds per variant)."""
    if spec.torch_program is None:
        spec = spec.model_copy(update={"torch_program": any(t.file_suffix == ".pt2" for t in targets)})
    return spec


@STAGES.register("export")
def export(variants: dict[str, Artifact], cfg: ExportConfig, ctx: StageContext) -> list[Artifact]:
    out: list[Artifact] = []
    example = ctx.splits.example(1, "test")
    parity_x = ctx.splits.example(cfg.parity_samples, "test")
    task = ctx.splits.scoring.task  # how two files' outputs are judged to agree
    args, input_names, _ = export_signature(example, INPUT_NAME, OUTPUT_NAME)  # the file's own inputs
    shapes = {n: list(a.shape) for n, a in zip(input_names, args)}
    deployment = {"preprocess": ctx.splits.preprocess.deployment_json(), "class_names": ctx.splits.class_names,
                  # one input: its shape, as before; a text model's three inputs: each one's shape
                  "input_shape": shapes[input_names[0]] if len(shapes) == 1 else shapes}
    for name, art in variants.items():
        if art.kind == "onnx":
            continue
        model = ctx.model(variants, name).eval()
        path = ctx.stage_dir / f"{name}.onnx"
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if art.precision == "int8":
                    export_qdq(model, example, tmp, cfg.opset)
                else:
                    export_fp32(model, example, tmp, cfg.opset)
            except Exception as exc:  # noqa: BLE001 - exporters raise many types for unsupported ops
                raise StageError(f"export {name}: ONNX export failed at opset {cfg.opset} ({exc})") from None
            write_metadata(tmp, deployment)  # how to make the inputs the backends were scored on
            check_onnx(tmp, name)
            logits = predict_logits(model, ctx.splits, "test").numpy()  # the torch model on the test split
            torch_side = TorchSide(logits[:len(parity_x)], parity_x, model)
            checked = compare_with_torch(tmp, torch_side, art.precision, cfg, name, task)
        layouts = {}
        if art.precision == "int8":  # each runtime's INT8 layout, from the same file, each parity-checked
            writers = {"u8s8": write_u8s8}
            if isinstance(model, TextModel):
                writers[DYNAMIC_LAYOUT] = write_dynamic  # ONNX Runtime runs transformers fastest so
            if onednn_float_convs(path):  # convs OpenVINO's CPU runs faster in float than in its INT8 fallback
                writers[ONEDNN_LAYOUT] = write_s8s8_onednn
            for layout, write in writers.items():
                layouts[layout] = layout_path(path, layout)
                with atomic_path(layouts[layout]) as tmp:
                    write(path, tmp)
                    check_onnx(tmp, f"{name} ({layout})")
                    checked[layout] = compare_with_torch(tmp, torch_side, art.precision, cfg, f"{name} ({layout})", task,
                                                         requantized=layout == DYNAMIC_LAYOUT)
        program = None
        if cfg.torch_program and art.precision != "int8":  # the torch baseline runs the float graph
            program = ctx.stage_dir / f"{name}.pt2"
            try:
                with atomic_path(program) as tmp:
                    export_program(model, example, tmp)
            except Exception as exc:  # noqa: BLE001 - torch.export raises many types for untraceable code
                console.print(f"export {name}: no torch.export program for the torch baseline "
                              f"({first_line(exc, with_type=True)})", style="yellow")
                program = None
        reference = ctx.stage_dir / f"{name}.reference.npy"  # kept for each backend's parity at measurement
        with atomic_path(reference) as tmp:
            np.save(tmp, logits)
        metrics = art.meta.get("metrics", {})
        params, macs = metrics.get("params"), metrics.get("macs")
        if params is None:
            params, macs = count_params_macs(model, ctx.splits.input_shape)
        meta = {"source": art.path, "size_bytes": onnx_size_bytes(path), "params": params, "macs": macs,
                "parity": checked, "reference_logits": str(reference), "input_shape": [1, *ctx.splits.input_shape], "opset": cfg.opset,
                "program": str(program) if program else None,
                "layouts": {k: str(v) for k, v in layouts.items()},
                "kept_float": art.meta.get("quantization", {}).get("float_layers", {}),
                "accuracy_torch": metrics.get("test_accuracy_torch")}
        out.append(Artifact(name, "onnx", art.precision, str(path), "export", name,
                            config_hash(cfg.model_dump(), art.config_hash), meta))
    return out


def check_onnx(path: Path, name: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise StageError(f"export {name}: onnx.checker rejected {path.name} ({first_line(exc)})") from None


INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat"}  # ops whose ORT kernels depend on the CPU's integer instructions


@dataclass(frozen=True)
class TorchSide:
    """The torch side of an export check: the model's ``outputs`` on ``inputs``; ``model`` (the fake-quantized
    torch model of an INT8 file) lets a file that misses on SQNR be compared op by op."""

    outputs: np.ndarray
    inputs: torch.Tensor
    model: torch.nn.Module | None = None


def compare_with_torch(path: Path, torch_side: TorchSide, precision: str, cfg: ExportConfig, name: str,
                       task: Task | None = None, requantized: bool = False) -> dict[str, Any]:
    """The ONNX file's outputs on ``torch_side.inputs`` against the torch model's outputs on them.

    An INT8 file on the model's own grids gets ``judge_exact``'s verdict; a ``requantized`` layout (ONNX
    Runtime's dynamic one measures its activation ranges per call) is judged by the ``task``'s agreement
    (classification when None)."""
    ref, x, model = torch_side.outputs, torch_side.inputs, torch_side.model
    import onnxruntime as ort

    # Optimizations off: ORT then interprets QDQ exactly (DequantizeLinear -> float op -> QuantizeLinear),
    # so this checks the file, not a CPU's int8 kernels (those show in each target's accuracy). A file with
    # integer-arithmetic ops (the dynamic layout's MatMulInteger) has no such float path in ORT, and ORT's
    # u8s8 kernels saturate on x86 CPUs without VNNI (255 x 127 pairs clip at 32767): such a file is
    # interpreted by onnx's own reference evaluator, exact on every machine.
    import onnx

    if INTEGER_OPS & {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}:
        from onnx.reference import ReferenceEvaluator

        try:
            evaluator = ReferenceEvaluator(str(path))
        except Exception as exc:  # noqa: BLE001 - an op the reference evaluator lacks: say so, use ORT
            raise StageError(f"export {name}: onnx's reference evaluator cannot interpret {path.name} exactly "
                             f"({type(exc).__name__}: {str(exc)[:160]})") from None
        names = list(evaluator.input_names)
        run = lambda feed: evaluator.run(None, feed)[0]  # noqa: E731
    else:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = runtime_log_severity()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        run = lambda feed: sess.run(None, feed)[0]  # noqa: E731
    got = np.concatenate([run(packed_feed(x[i:i + 1].numpy(), names)) for i in range(len(x))])
    if got.shape != ref.shape:
        raise StageError(f"export {name}: ONNX output shape {got.shape} != torch {ref.shape}")
    for what, logits in (("the ONNX file", got), ("the torch model", ref)):
        if not np.isfinite(logits).all():  # NaN compares as nothing: it must fail, not pass as max |diff| nan
            raise StageError(f"export {name}: {what} computed NaN/Inf logits on {int((~np.isfinite(logits)).any(1).sum())} "
                             f"of {len(logits)} check samples")
    result = {**parity(ref, got), "reference": "fake-quantized torch model" if precision == "int8" else "torch model"}
    diff = result["max_abs_diff"]
    if precision == "int8":
        result.update(decisive_agreement(ref, got))  # reported; the gate is the verdict below
        task = task or Classification()
        agreement = task.agreement(ref, got)
        result.update(agreement.detail)
        if requantized:
            judge_requantized(result, agreement, task.agreement_floor, getattr(cfg, task.agreement_floor), name)
        else:
            result.update(judge_exact(path, ref, got, x, cfg, name, model))
    else:
        limit = cfg.fp32_atol + cfg.fp32_rtol * float(np.max(np.abs(ref)))
        if diff > limit:
            raise StageError(f"export {name}: ONNX output differs from torch by {diff:.3g} > {limit:.3g} "
                             f"(fp32_atol={cfg.fp32_atol}, fp32_rtol={cfg.fp32_rtol})")
        result["tolerance"] = limit
    return result


def judge_exact(path: Path, ref: np.ndarray, got: np.ndarray, x: torch.Tensor, cfg: ExportConfig, name: str,
                model: torch.nn.Module | None) -> dict[str, Any]:
    """The three answers of ``edgekd.stages.export.int8_fidelity``: matches (SQNR at least ``int8_min_sqnr_db``; equal
    outputs, tied or all-zero ones included, are infinitely close); matches op by op (every op reproduces
    the model's integers from its own inputs: the logits' gap is rounding the network amplifies); or
    diverges, a StageError naming the op."""
    from .int8_fidelity import localize, own_rounding_db, worst_sample
    from ...tasks.parity import sqnr_db

    sqnr = sqnr_db(ref, got)
    if sqnr >= cfg.int8_min_sqnr_db:
        return {"verdict": "matches", "judged_by": f"SQNR against the fake-quant model >= {cfg.int8_min_sqnr_db} dB"}
    shown = "-inf" if sqnr == -np.inf else f"{sqnr:.1f}"
    if model is None:
        raise StageError(f"export {name}: the file's outputs are {shown} dB from the fake-quant model's, below "
                         f"int8_min_sqnr_db={cfg.int8_min_sqnr_db}")
    worst = worst_sample(ref, got)  # where the outputs are furthest apart: the first may show nothing
    where = localize(path, model, x[worst:worst + 1])
    where.sample = worst
    if not where.aligned:
        raise StageError(f"export {name}: the file's outputs are {shown} dB from the fake-quant model's, below "
                         f"int8_min_sqnr_db={cfg.int8_min_sqnr_db}, and the two cannot be compared op by op "
                         f"({where.why})")
    bad = where.first_divergence
    if bad is not None:
        ops = ", ".join(bad.ops) or "nothing but quantization"
        raise StageError(f"export {name}: the file computes something other than its fake-quant model at {ops} "
                         f"(before quantizer {bad.module}): from the model's own inputs its output is "
                         f"{bad.worst_steps} steps off on {bad.off_fraction:.2%} of the values; outputs {shown} dB "
                         f"apart (int8_min_sqnr_db={cfg.int8_min_sqnr_db})")
    floor = own_rounding_db(model, x)
    itself = "" if floor is None else (f"; the model computed in float64 is {floor:.1f} dB from itself in float32, "
                                       "so rounding alone moves it this far")
    return {"verdict": "matches op by op", "localization": where.to_json(), "own_rounding_db": floor,
            "judged_by": (f"outputs {shown} dB apart, below {cfg.int8_min_sqnr_db} dB, but on the furthest sample "
                          f"({worst}) every one of the {len(where.sites)} quantized ops reproduces the model's "
                          f"integers to within one step from the model's own inputs: rounding differences the "
                          f"network amplifies{itself}")}


def judge_requantized(result: dict[str, Any], agreement: Agreement, floor_key: str, floor: float, name: str) -> None:
    """A layout that quantizes activations its own way cannot match the model's grids: it must agree
    with the model's answers by the task's measure (top-1 on the samples that are not near-ties, or the
    embeddings' cosine) at least ``floor`` (the export key ``floor_key`` the task names)."""
    if agreement.value is None:
        result.update(verdict="undecidable", judged_by=f"the samples cannot decide ({agreement.says})")
        return
    result["verdict"] = "agrees" if agreement.value >= floor else "diverges"
    if agreement.value < floor:
        raise StageError(f"export {name}: the ONNX file's {agreement.says} with the fake-quant model is "
                         f"{agreement.value:.4f} on {result['samples']} samples, below {floor_key}={floor} (max |diff| "
                         f"{result['max_abs_diff']:.4g})")


def check_export(model: nn.Module, example: torch.Tensor, opset: int, where: str) -> None:
    """A throw-away FP32 ONNX export at the recipe's opset."""
    with tempfile.TemporaryDirectory(prefix="edgekd-preflight-") as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_fp32(copy.deepcopy(model), example, Path(tmp) / "m.onnx", opset)
        except Exception as exc:  # noqa: BLE001 - exporters raise many types
            raise preflight_error(where, "export", f"ONNX export at opset {opset} fails ({first_line(exc, with_type=True)})",
                        "export needs a forward torch.onnx can trace; try another opset or simplify forward") from None


@PREFLIGHTS.register("export")
def preflight_export(cfg: ExportConfig, preview: Preview, where: str) -> None:
    check_onnx_runtime(where)
    check_export(preview.model, preview.example, cfg.opset, where)


def check_onnx_runtime(where: str) -> None:
    """The export stage checks every file it writes with ONNX Runtime (and writes its INT8 layouts with
    ORT's tools), whatever the targets: a runtime extra, not a hard dependency, so that a CUDA
    environment's ``onnxruntime-gpu`` is never replaced by the CPU wheel. Missing, it is the user's
    install to fix (exit 2), said before anything trains."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise InputError(f"{where}: the export stage checks its files with ONNX Runtime, which is not installed: "
                          f"pip install 'edgekd[onnxruntime]' (or 'edgekd[onnxruntime-gpu]' in a CUDA "
                          f"environment; not both)") from None
