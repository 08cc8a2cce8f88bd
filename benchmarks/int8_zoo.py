"""INT8 on the architectures people deploy (issue 13): edgekd's INT8 against each runtime's own quantizer.

For each model (random weights, 10 classes, 1x3xSxS; torchvision's, timm's tf_efficientnet_lite0 and
torchvision's vit_b_16) one FP32 ONNX file is exported, then quantized three ways from it with the same
calibration images:
- edgekd: the quantize stage's PTQ (``quantize_model`` + ``calibrate``) and the export stage's files,
  the s8s8 file for OpenVINO and the u8s8 file for ONNX Runtime (``edgekd.stages.export.int8_layouts``);
- OpenVINO's anchor: NNCF's ``nncf.quantize`` of the FP32 file;
- ONNX Runtime's anchor: ``quantize_static`` (QDQ, QUInt8 activations, per-channel QInt8 weights).
Per runtime the FP32 file, edgekd's INT8 and the anchor are timed in rounds (``--rounds`` rounds of
``--seconds`` windows each, the lowest p50 kept: a co-tenant only adds time), at batch 1 with the
built-in targets' threads; then edgekd's file and the anchor's take turns of a few calls
(``int8_verdict.interleaved_ratio``, sessions without spinning threads) for about as long, and *that*
ratio edgekd / anchor is the one printed and judged (goal <= 1.05): two lowest p50s from windows a minute
apart moved a row's OpenVINO ratio 1.40 -> 1.08 (lcnet_100) and 1.09 -> 0.89 (mnasnet0_75) between runs
of the same code. It prints p50s, INT8 layer counts as each runtime reports them, and each INT8 file's
SQNR against the FP32 file's outputs. OpenVINO runs the ``s8s8-onednn`` layout where the export writes
one (``edgekd.stages.export.int8_layouts``), as edgekd's OpenVINO CPU targets do.

With ``--accuracy`` it also scores, on MNIST's 10 000 test images, the three INT8 versions of torchvision
models trained on MNIST at 64x64 (resnet18 is benchmarks/pareto.py's teacher; the others are trained here
for ``--epochs`` on 10 000 images and cached under runs/bench-zoo/) on the runtime that runs them: the
same weights, so any difference is the quantizer's.

With ``--all`` (issue 23) the models are every torchvision classifier
(``torchvision.models.list_models(torchvision.models)``) and ``TIMM_EDGE``, the timm families built for edge
devices, each at the smallest input it accepts, its BatchNorm statistics first settled on a few random
batches (random init otherwise leaves some of them degenerate: tied logits, dead ReLUs); a model over
``--max-params`` is a row that says so. Each row also carries the export check's verdict
(``edgekd.stages.export.int8_fidelity``: the INT8 file's exactly interpreted outputs against its fake-quant model), and
a row under 95% INT8 layers names its first float layer and why, a row slower than its anchor the op
types the runtime runs a different number of in the two files. ``--no-latency`` counts layers and
judges the export only (no anchors, no timing). ``--native`` runs each model at the input it is trained
and deployed at instead (``native_size``): the smallest input is quick for counting layers, but its
timings measure per-op dispatch (a 32x32 conv takes 8-10 us), not the kernels a user will run.

    pip install 'edgekd[anchors]'                     # nncf is a benchmark-only extra
    python benchmarks/int8_zoo.py                     # every model at 224x224: about 40 minutes on 2 cores
    python benchmarks/int8_zoo.py --all --no-latency  # coverage and verdicts of the whole zoo
    python benchmarks/int8_zoo.py --all --native --max-params 60 --seconds 0.5  # timed at native sizes
    python benchmarks/int8_zoo.py --models resnet18 mobilenet_v3_small --size 160 --rounds 2
    python benchmarks/int8_zoo.py --models none --accuracy
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from edgekd.config.schema import TrainSpec
from edgekd.train.loop import LoopSettings
from edgekd.stages.quantize.quantization import QuantSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
               "regnet_x_400mf", "shufflenet_v2_x1_0", "convnext_tiny", "vit_b_16"]
TIMM = ["tf_efficientnet_lite0"]
# timm's families for edge devices, a small member or two of each
TIMM_EDGE = ["mobilenetv4_conv_small", "mobilenetv4_conv_medium", "mobilenetv4_hybrid_medium", "mobileone_s0",
             "mobileone_s1", "repvit_m0_9", "repvit_m1_0", "fastvit_t8", "fastvit_sa12", "efficientvit_b0",
             "efficientvit_m0", "edgenext_xx_small", "edgenext_x_small", "mobilevit_xxs", "mobilevitv2_050",
             "ghostnet_100", "ghostnetv2_100", "lcnet_050", "lcnet_100", "tinynet_a", "tinynet_e", "regnetx_002",
             "regnety_002", "levit_128s", "levit_conv_128s", "mobilenetv3_small_100", "mobilenetv3_large_100",
             "mixnet_s", "mnasnet_small", "efficientnet_lite0", "tf_efficientnet_lite0", "efficientformer_l1",
             "efficientformerv2_s0", "hardcorenas_a", "fbnetc_100", "spnasnet_100", "semnasnet_050", "resnet10t",
             "hgnetv2_b0", "convnext_atto", "rexnet_100", "tiny_vit_5m_224", "pvt_v2_b0", "mobilenetv1_100",
             "mobilenetv2_050", "efficientnet_b0", "regnetz_b16", "dla34", "cspresnet50"]
SIZES = (32, 64, 96, 128, 160, 192, 224, 256, 299)


def zoo_names() -> list[str]:
    """Every torchvision classifier, then ``timm:`` + each of ``TIMM_EDGE``."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models)) + [f"timm:{n}" for n in TIMM_EDGE]


def build(name: str, size: int | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    if name in TIMM or name.startswith("timm:"):
        import timm

        return timm.create_model(name.removeprefix("timm:"), pretrained=False, num_classes=10).eval()
    import torchvision

    extra = {"image_size": size} if name.startswith("vit") and size else {}
    return torchvision.models.get_model(name, num_classes=10, **extra).eval()


def native_size(name: str) -> int:
    """The input a model is trained and deployed at: timm's pretrained config, torchvision's weights'
    crop size (224 where neither says). Timed there, ratios measure kernels; at 32x32 a mnasnet0_5 conv
    takes 8-10 us and a 1-us dispatch difference decides a 1.05 verdict (1.03-1.10 at 32, 0.98 at 224)."""
    if name in TIMM or name.startswith("timm:"):
        import timm

        cfg = timm.models.get_pretrained_cfg(name.removeprefix("timm:"))
        return int(cfg.input_size[-1]) if cfg is not None else 224
    import torchvision

    try:
        return int(torchvision.models.get_model_weights(name).DEFAULT.transforms.keywords.get("crop_size", 224))
    except (ValueError, KeyError, AttributeError):
        return 224


def smallest_input(name: str) -> tuple[torch.nn.Module, int]:
    """The model and the smallest of ``SIZES`` it runs (in training and eval mode) and exports to ONNX at
    (torchvision's ViTs are built for it)."""
    last: Exception | None = None
    for size in SIZES:
        try:
            model = build(name, size)
            x = torch.rand(1, 3, size, size)
            with torch.no_grad():
                model(x)
                model.train()(torch.rand(2, 3, size, size))  # settle_batchnorm runs it in training mode
                model.eval()  # (inception_v3's auxiliary head needs 75x75 where the main one runs at 32)
            with warnings.catch_warnings():  # exportable at that size too (adaptive pools need factors)
                warnings.simplefilter("ignore")
                torch.onnx.export(model, x, io.BytesIO(), dynamo=False, opset_version=17)
            return model, size
        except Exception as exc:  # noqa: BLE001 - too small an input fails in many ways
            last = exc
    raise RuntimeError(f"no input size in {SIZES} works ({type(last).__name__}: {str(last).splitlines()[0][:120]})")


@torch.no_grad()
def settle_batchnorm(model: torch.nn.Module, size: int, batches: int = 4) -> torch.nn.Module:
    """BatchNorm statistics from a few random batches (cumulative averages), so a random-init model's
    activations have the scale of a trained one's instead of its init's running_var = 1; and every scalar
    parameter moved off its init value: HGNetV2's learnable affine after each ReLU starts at ``x * 1 + 0``,
    which ONNX Runtime removes as a no-op, merging the quantizers on either side into one on a grid the
    next conv's bias was not quantized for (16 convs float, 1.6x). A trained model's never is a no-op."""
    generator = torch.Generator().manual_seed(4)
    for parameter in model.parameters():
        if parameter.numel() == 1:
            parameter.add_(0.1 * torch.randn(1, generator=generator).to(parameter.dtype))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    generator = torch.Generator().manual_seed(5)
    for _ in range(batches):
        model(torch.rand(8, 3, size, size, generator=generator))
    return model.eval()


def edgekd_int8(model: torch.nn.Module, calibration: torch.Tensor, path: Path,
                hardswish: str = "fused", with_model: bool = False, bias_correction: bool = False):
    """The quantize stage's PTQ and the export stage's two files; returns (s8s8, u8s8, seconds), and the
    fake-quantized model last when ``with_model``.
    ``hardswish``: what the stage's ``auto`` picks for the recipe's targets (split: ORT-only recipes);
    ``bias_correction``: the stage's option of that name."""
    from edgekd.stages.export.int8_layouts import onednn_float_convs, write_s8s8_onednn, write_u8s8
    from edgekd.artifacts.qdq_rules import ONEDNN_LAYOUT, layout_path
    from edgekd.stages.quantize.quantization import calibrate, quantize_model
    from edgekd.stages.export.int8_layouts import export_qdq

    began = time.perf_counter()
    # the stage's input_quant: auto (unsigned when the data is never negative)
    qmodel = quantize_model(model, QuantSpec(unsigned_input=bool(calibration.min() >= 0), hardswish=hardswish), example=calibration[:1])
    calibrate(qmodel, calibration.split(8), bias_correction=bias_correction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, calibration[:1], path, 17)
    write_u8s8(path, layout_path(path, "u8s8"))
    if onednn_float_convs(path):  # as the export stage: OpenVINO CPU's file where it differs from s8s8
        write_s8s8_onednn(path, layout_path(path, ONEDNN_LAYOUT))
    files = (path, layout_path(path, "u8s8"), time.perf_counter() - began)
    return (*files, qmodel) if with_model else files


def export_verdict(qmodel: torch.nn.Module, path: Path, held_out: np.ndarray) -> str:
    """The export stage's verdict (``judge_exact``) on every file it writes: the s8s8 file, and the u8s8
    (and ``s8s8-onednn``) layouts where one judges otherwise, named after it."""
    from edgekd.artifacts.qdq_rules import ONEDNN_LAYOUT, layout_path

    verdicts = {layout: one_verdict(qmodel, layout_path(path, layout), held_out)
                for layout in ("s8s8", "u8s8", ONEDNN_LAYOUT) if layout_path(path, layout).exists()}
    main = verdicts.pop("s8s8")
    others = [f"{layout}: {v}" for layout, v in verdicts.items() if v.split(" (")[0] != main.split(" (")[0]]
    return "; ".join([main, *others])


def one_verdict(qmodel: torch.nn.Module, path: Path, held_out: np.ndarray) -> str:
    """The export stage's verdict on one INT8 file against its fake-quant model (its own check, as a run
    makes it: ``compare_with_torch``)."""
    from edgekd.errors import StageError
    from edgekd.stages.export.config import ExportConfig
    from edgekd.stages.export.stage import TorchSide, compare_with_torch

    x = torch.from_numpy(held_out)
    with torch.no_grad():
        ref = np.concatenate([getattr(o, "value", o).numpy() for o in (qmodel(x[i:i + 1]) for i in range(len(x)))])
    try:
        verdict = compare_with_torch(path, TorchSide(ref, x, qmodel), "int8", ExportConfig(stage="export"), path.stem)
    except StageError as exc:
        return f"diverges: {str(exc).split(': ', 1)[-1][:200]}"
    db = verdict["sqnr_db"]  # None: identical outputs
    floor = verdict.get("own_rounding_db")  # the model against its own float64 twin: what rounding allows
    twin = "" if floor is None else f"; model vs its float64 twin {'inf' if floor == float('inf') else f'{floor:.0f}'}"
    return verdict["verdict"] + ("" if db is None else f" ({db:.0f} dB{twin})")


def the_fp32_file(model: torch.nn.Module, calibration: torch.Tensor, path: Path) -> tuple[Path, list]:
    """The FP32 ONNX file every quantizer starts from, and the calibration images as the anchors'
    loaders give them (batches of ``(x, label, index)``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, calibration[:1], str(path), input_names=["input"], output_names=["logits"],
                          dynamo=False, opset_version=17)
    return path, [(calibration[i:i + 8], None, None) for i in range(0, len(calibration), 8)]


def quantize_static_anchor(fp32: Path, out: Path, batches: list) -> Path:
    """ORT's quantize_static (benchmarks/pareto.py's settings); where ORT's own pre-processing (symbolic
    shape inference) fails on the file, as on vit_b_16's Reshape and EfficientViT-M's, the FP32 file is
    quantized as is."""
    from pareto import ort_quantize_static

    try:
        return ort_quantize_static(fp32, out, batches)
    except Exception:  # noqa: BLE001 - AssertionError, or "Incomplete symbolic shape inference" (EfficientViT-M)
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = ({"input": x[i:i + 1].numpy()} for x, _, _ in batches for i in range(len(x)))

            def get_next(self):
                return next(self._it, None)

        print(f"{fp32.name}: quant_pre_process failed; quantize_static without it", flush=True)
        quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        return out


def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    noise = float(np.mean((reference - output) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.mean(reference ** 2)) / noise)


def zoo_row(name: str, size: int | None, calibration: torch.Tensor | None, held_out: np.ndarray | None, rounds: int,
            seconds: float, tmp: Path, latency: bool = True, settle: bool = False, max_params: float = 0,
            ort_ops: bool = False) -> dict:
    """One model's row. ``size`` None: the smallest input it accepts, with calibration and held-out images
    made at that size; ``settle``: BatchNorm statistics from random batches first (``--all``); ``ort_ops``
    (without ``latency``): also quantize_static's file, for the ops ORT runs in each (``op_difference``)."""
    from edgekd.backends.base import predict
    from edgekd.backends.openvino import OvModel
    from edgekd.measure.latency import measure_latency, seeded_input
    from edgekd.backends import load_target
    from edgekd.artifacts.qdq_rules import ONEDNN_LAYOUT, layout_path
    from edgekd.measure.int8_verdict import interleaved_ratio
    from edgekd.measure.measurement import BackendPool

    if size is None and max_params:  # counted first: a model too big to run is skipped, not failed at export
        params = sum(p.numel() for p in build(name).parameters()) / 1e6  # (vit_h_14, regnet_y_128gf: > 2 GiB)
        if params > max_params:
            return {"model": name, "size": "", "params_m": params,
                    "skipped": f"{params:.0f} M parameters > --max-params {max_params:.0f} M"}
    model, size = smallest_input(name) if size is None else (build(name, size), size)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    row = {"model": name, "size": size, "params_m": params}
    if max_params and params > max_params:
        return {**row, "skipped": f"{params:.0f} M parameters > --max-params {max_params:.0f} M"}
    if calibration is None or calibration.shape[-1] != size:
        calibration = torch.rand(32, 3, size, size, generator=torch.Generator().manual_seed(1))
        held_out = np.random.default_rng(2).random((8, 3, size, size), dtype=np.float32)
    if settle:
        settle_batchnorm(model, size)
    safe = name.replace(":", "_")
    fp32, batches = the_fp32_file(model, calibration, tmp / f"{safe}.fp32.onnx")
    s8, u8, edgekd_s, qmodel = edgekd_int8(model, calibration, tmp / f"{safe}.int8.onnx", with_model=True)
    mode = getattr(qmodel, "quant_mode", "graph")  # named in the verdict cell where not Brevitas' graph mode
    row["verdict"] = export_verdict(qmodel, s8, held_out) + ("" if mode == "graph" else f"; quant_mode {mode}")
    if any(isinstance(m, torch.nn.Hardswish) for m in model.modules()):  # an ORT-only recipe splits Hardswish
        _, u8, _ = edgekd_int8(model, calibration, tmp / f"{safe}.int8-ort.onnx", hardswish="split")
    row["quantize_s"] = {"edgekd": edgekd_s}
    onednn = layout_path(s8, ONEDNN_LAYOUT)  # OpenVINO's CPU runs this layout where the export writes it
    files = {"fp32": fp32, "edgekd": {"onnxruntime": u8, "openvino": onednn if onednn.exists() else s8}}
    if latency:
        from pareto import nncf_ptq

        files["anchor"] = {}
        anchors = {"onnxruntime": ("quantize_static", lambda: quantize_static_anchor(
                       fp32, tmp / f"{safe}.quantize_static.onnx", batches)),
                   "openvino": ("nncf", lambda: nncf_ptq(fp32, tmp / f"{safe}.nncf.xml", batches))}
        for runtime, (anchor_name, make) in anchors.items():
            began = time.perf_counter()
            try:  # an anchor that cannot quantize the model leaves edgekd's columns standing, saying so
                files["anchor"][runtime] = make()
            except Exception as exc:  # noqa: BLE001 - NNCF and ORT raise many types
                row.setdefault("anchor_failed", {})[runtime] = (
                    f"{anchor_name} failed ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:100]})")
            row["quantize_s"][anchor_name] = time.perf_counter() - began

    import openvino as ov

    ort_t, ov_t = load_target("cpu-onnxruntime"), load_target("cpu-openvino")
    pool, core = BackendPool(), ov.Core()
    shape = (1, 3, size, size)

    def compiled(runtime: str, path: Path, quiet: bool = False):
        if runtime == "onnxruntime":  # quiet: no spinning pool to run into the other session's turns
            target = ort_t.model_copy(update={"spinning": False}) if quiet else ort_t
            return pool.get("onnxruntime").compile(path, target)
        return OvModel(core, path, ov_t, {"input": shape}, False)

    spec = ort_t.latency.model_copy(update={"min_seconds": seconds, "runs": 20})
    x = seeded_input(shape)
    for runtime in ("onnxruntime", "openvino"):  # one runtime at a time: two thread pools would fight
        group = {"edgekd": compiled(runtime, files["edgekd"][runtime])}
        row[runtime] = {"layers": {"edgekd": group["edgekd"].int8_layers()}}
        if ort_ops and not latency and runtime == "onnxruntime":
            anchor = quantize_static_anchor(fp32, tmp / f"{safe}.quantize_static.onnx", batches)
            row[runtime]["layers"]["anchor"] = compiled(runtime, anchor).int8_layers()
        if not latency:
            continue
        group["fp32"] = compiled(runtime, fp32)
        if runtime in files["anchor"]:
            group["anchor"] = compiled(runtime, files["anchor"][runtime])
            row[runtime]["layers"]["anchor"] = group["anchor"].int8_layers()
        p50 = {k: float("inf") for k in group}
        for _ in range(rounds):
            for k, c in group.items():
                p50[k] = min(p50[k], measure_latency(lambda c=c: c(x), spec).p50)
        if "anchor" in group:  # edgekd and the anchor taking turns (sessions that do not spin): the judged ratio
            quiet = {k: compiled(runtime, files[k][runtime], quiet=True) for k in ("edgekd", "anchor")}
            runs = int(min(400, max(30, rounds * seconds * 1000 / p50["edgekd"])))
            row[runtime]["interleaved"] = interleaved_ratio(lambda: quiet["edgekd"](x), lambda: quiet["anchor"](x),
                                                            runs)["ratio"]
        outputs = {k: np.concatenate([predict(c, held_out[i:i + 1]) for i in range(len(held_out))])
                   for k, c in group.items()}
        row[runtime].update(p50=p50, sqnr={k: sqnr_db(outputs["fp32"], outputs[k]) for k in ("edgekd", "anchor")
                                           if k in outputs})
    return row


def int8_fraction(layers: dict) -> float:
    """INT8 layers among those the file's layout quantizes for its runtime (OpenVINO CPU's layout keeps the
    convs it has no fast INT8 kernel for in float on purpose: ``float_by_layout``)."""
    meant = (layers.get("total") or 0) - (layers.get("float_by_layout") or 0)
    return (layers.get("int8") or 0) / meant if meant > 0 else 1.0


def layer_cell(layers: dict) -> str:
    """``int8/total``, and how many of the float ones the layout keeps float by its rule."""
    kept = layers.get("float_by_layout") or 0
    return f"{layers.get('int8')}/{layers.get('total')}" + (f" ({kept} float by layout)" if kept else "")


def why_float(layers: dict) -> str:
    """The first float layer and its cause, as the runtime's optimized graph shows it."""
    floats = layers.get("float_layers") or {}
    return next((f"{k}: {v}" for k, v in floats.items()), "")


RUNTIME_WORDS = {"onnxruntime": ("ORT", "q_static"), "openvino": ("OV", "NNCF")}


def anchor_ratio(r: dict, runtime: str) -> float | None:
    """edgekd / anchor on ``runtime``: the interleaved ratio where timed so, else the two lowest p50s."""
    timed = r[runtime]
    if "anchor" not in timed.get("p50", {}):
        return None
    return timed.get("interleaved") or timed["p50"]["edgekd"] / timed["p50"]["anchor"]


def op_difference(r: dict, runtime: str = "onnxruntime") -> str:
    """The op types the runtime runs a different number of in edgekd's file and its anchor's (edgekd/anchor),
    largest differences first: where a slower file spends its time (ORT: float Mul/Add where the anchor
    runs QLinearMul/QLinearAdd, extra Q/DQ pairs; OpenVINO: its executed layers by type and precision,
    e.g. a Reorder or an f32 Eltwise the anchor does not run)."""
    layers = r[runtime]["layers"]
    short, anchor = RUNTIME_WORDS[runtime]
    if "anchor" not in layers or "all_ops" not in layers["anchor"]:
        return ""
    ours, theirs = layers["edgekd"]["all_ops"], layers["anchor"]["all_ops"]
    diff = sorted((op for op in set(ours) | set(theirs) if ours.get(op, 0) != theirs.get(op, 0)),
                  key=lambda op: -abs(ours.get(op, 0) - theirs.get(op, 0)))
    if not diff:  # the same op counts: a slower ratio is timing noise or a kernel choice, not a fusion
        return f"{short} runs as many of each op type in both files: not a fusion difference (re-time it; else kernels)"
    return f"{short} ops edgekd/{anchor}: " + ", ".join(f"{op} {ours.get(op, 0)}/{theirs.get(op, 0)}" for op in diff[:6])


def print_coverage(rows: list[dict]) -> None:
    """The --all table: INT8 layers per runtime, the export verdict, the edgekd/anchor ratios when timed,
    and why a row misses; then the summary line."""
    print("\n| model | input | params M | INT8 layers ORT (u8s8) | INT8 layers OV (s8s8, -onednn) | export verdict "
          "| ORT edgekd / q_static | OV edgekd / NNCF | misses because |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---|")
    for r in rows:
        if "skipped" in r or "failed" in r:
            print(f"| {r['model']} | {r.get('size', '')} | {r.get('params_m', 0):.1f} | | | | | | "
                  f"{r.get('skipped') or r.get('failed')} |")
            continue
        cells, why = [], []
        for runtime in ("onnxruntime", "openvino"):
            layers = r[runtime]["layers"]["edgekd"]
            cells.append(layer_cell(layers))
            if int8_fraction(layers) < 0.95:
                why.append(f"{runtime}: {why_float(layers)}")
        ratios = [f"{anchor_ratio(r, rt):.2f}" if anchor_ratio(r, rt) else "" for rt in ("onnxruntime", "openvino")]
        why += list(r.get("anchor_failed", {}).values())
        for runtime in ("onnxruntime", "openvino"):
            if (anchor_ratio(r, runtime) or 0) > 1.05:  # slower: what it runs differently
                why.append(op_difference(r, runtime))
        if "p50" not in r["onnxruntime"]:  # not timed: the op difference is all there is
            why.append(op_difference(r))
        print(f"| {r['model']} | {r['size']} | {r['params_m']:.1f} | {cells[0]} | {cells[1]} | {r['verdict']} | "
              f"{ratios[0]} | {ratios[1]} | {'; '.join(w for w in why if w)[:300]} |", flush=True)
    done = [r for r in rows if "onnxruntime" in r]
    full = [r for r in done if all(int8_fraction(r[rt]["layers"]["edgekd"]) >= 0.95 for rt in ("onnxruntime", "openvino"))]
    timed = [r for r in done if all("anchor" in r[rt].get("p50", {}) for rt in ("onnxruntime", "openvino"))]
    fast = [r for r in timed if all(anchor_ratio(r, rt) <= 1.05 for rt in ("onnxruntime", "openvino"))]
    matches = [r for r in done if "diverges" not in r["verdict"]]
    per_runtime = []
    for rt in ("onnxruntime", "openvino"):
        anchored = [r for r in done if "anchor" in r[rt].get("p50", {})]
        within = [r for r in anchored if anchor_ratio(r, rt) <= 1.05]
        if anchored:
            per_runtime.append(f"{RUNTIME_WORDS[rt][0]} {len(within)}/{len(anchored)} "
                               f"({100 * len(within) / len(anchored):.0f}%) at <= 1.05x {RUNTIME_WORDS[rt][1]}")
    print(f"\nsummary: {len(rows)} models, {len(done)} quantized and exported "
          f"({len(rows) - len(done)} not: skipped or failed, each says why); "
          f"{len(full)}/{len(done)} at >= 95% INT8 layers on both CPU runtimes; "
          f"{len(matches)}/{len(done)} exports match their fake-quant model"
          + (f"; {len(fast)}/{len(timed)} timed rows at <= 1.05x the runtime's own quantizer on both" if timed else "")
          + (f"; per runtime: {', '.join(per_runtime)}" if per_runtime else ""), flush=True)


def print_zoo(rows: list[dict], size: int, rounds: int) -> None:
    print(f"\n{size}x{size}, batch 1, 2 threads; {rounds} interleaved rounds per runtime, lowest p50; "
          f"ratio = edgekd / anchor (lower is better; goal <= 1.05)\n")
    print("| model | OpenVINO: edgekd / NNCF | ORT: edgekd / quantize_static | p50 ms OV edgekd, NNCF, FP32 "
          "| p50 ms ORT edgekd, q_static, FP32 | INT8 layers OV edgekd / NNCF | INT8 layers ORT edgekd / q_static "
          "| SQNR dB vs FP32 (OV e/a, ORT e/a) |")
    print("|---|---:|---:|---|---|---|---|---|")
    for r in rows:
        ov, ort = r["openvino"], r["onnxruntime"]
        if r.get("anchor_failed"):
            print(f"| {r['model']} | {'; '.join(r['anchor_failed'].values())} | | | | | | |", flush=True)
            continue

        def ms(g: dict) -> str:
            return ", ".join(f"{g['p50'][k]:.2f}" for k in ("edgekd", "anchor", "fp32"))

        def layers(g: dict) -> str:
            return " / ".join(f"{g['layers'][k].get('int8')}/{g['layers'][k].get('total')}" for k in ("edgekd", "anchor"))

        sq = ", ".join(f"{g['sqnr'][k]:.1f}" for g in (ov, ort) for k in ("edgekd", "anchor"))
        print(f"| {r['model']} | {ov['p50']['edgekd'] / ov['p50']['anchor']:.2f} | "
              f"{ort['p50']['edgekd'] / ort['p50']['anchor']:.2f} | {ms(ov)} | {ms(ort)} | {layers(ov)} | "
              f"{layers(ort)} | {sq} |", flush=True)


ACCURACY_MODELS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")


def trained(name: str, splits, epochs: int) -> torch.nn.Module:
    """torchvision ``name`` (10 classes) trained on MNIST with cross-entropy; cached under runs/bench-zoo/
    (resnet18 is benchmarks/pareto.py's teacher, shared)."""
    import torchvision
    from safetensors.torch import load_file, save_file

    from edgekd.train.evaluate import accuracy
    from edgekd.train.loop import fit
    from edgekd.train.objective import Objective

    cache = Path("runs/bench-pareto/resnet18_mnist64.safetensors") if name == "resnet18" else \
        Path(f"runs/bench-zoo/{name}_mnist64.safetensors")
    model = getattr(torchvision.models, name)(num_classes=10)
    if cache.is_file():
        model.load_state_dict(load_file(str(cache)))
        return model.eval()
    torch.manual_seed(0)
    began = time.perf_counter()
    fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs=epochs, lr=1e-3, weight_decay=5e-4), LoopSettings(seed=0), label=name)
    print(f"{name}: {splits.size('train')} MNIST train images, {epochs} epochs, {time.perf_counter() - began:.0f} s; "
          f"val {accuracy(model, splits, 'val'):.4f}", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(cache))
    return model.eval()


def accuracy_table(models: list[str], calibration_images: int, epochs: int) -> None:
    """The three INT8 versions of each trained model, scored on MNIST's test set by their runtimes."""
    from mnist_data import ensure_imagefolder
    from pareto import SIZE, data_spec, nncf_ptq, ort_quantize_static

    from edgekd.backends.base import predict
    from edgekd.backends.openvino import OvModel
    from edgekd.backends import load_target
    from edgekd.data import build_splits
    from edgekd.measure.measurement import BackendPool

    import openvino as ov

    splits = build_splits(data_spec(ensure_imagefolder(Path("runs/bench-mnist/mnist")), 10000))
    calibration = torch.cat([x for x, _, _ in splits.loader("train", limit=calibration_images)])
    test = list(splits.arrays("test"))
    labels = np.concatenate([y for _, y in test])
    ort_t, ov_t = load_target("cpu-onnxruntime"), load_target("cpu-openvino")
    pool, core = BackendPool(), ov.Core()
    shape = (1, *calibration.shape[1:])
    print(f"\nMNIST at {SIZE}x{SIZE} (normalized: signed inputs); PTQ with the same {len(calibration)} train images; "
          f"accuracy on the {len(labels)} test images, run by each runtime\n")
    print("| model | ORT FP32 | ORT edgekd INT8 | ORT quantize_static | OV FP32 | OV edgekd INT8 | OV NNCF PTQ |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in models:
        model = trained(name, splits, epochs)
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            fp32, batches = the_fp32_file(model, calibration, tmp / f"{name}.fp32.onnx")
            s8, u8, _ = edgekd_int8(model, calibration, tmp / f"{name}.int8.onnx")
            qs = ort_quantize_static(fp32, tmp / f"{name}.quantize_static.onnx", batches)
            nn_xml = nncf_ptq(fp32, tmp / f"{name}.nncf.xml", batches)
            files = [pool.get("onnxruntime").compile(fp32, ort_t), pool.get("onnxruntime").compile(u8, ort_t),
                     pool.get("onnxruntime").compile(qs, ort_t), OvModel(core, fp32, ov_t, {"input": shape}, False),
                     OvModel(core, s8, ov_t, {"input": shape}, False), OvModel(core, nn_xml, ov_t, {"input": shape}, False)]
            cells = []
            for compiled in files:
                logits = np.concatenate([predict(compiled, x) for x, _ in test])
                cells.append(f"{float(np.mean(logits.argmax(1) == labels)):.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=TORCHVISION[:-1] + TIMM + ["vit_b_16"],
                        help="model names (timm ones as timm:NAME with --all), or 'none' for the accuracy table only")
    parser.add_argument("--all", action="store_true", help="every torchvision classifier and TIMM_EDGE, each at the "
                        "smallest input it accepts, BatchNorm settled (issue 23)")
    parser.add_argument("--no-latency", action="store_true", help="INT8 layer counts and export verdicts only")
    parser.add_argument("--native", action="store_true", help="--all: each model at its native input (timm's "
                        "pretrained config, torchvision's weights' crop size) instead of the smallest it accepts")
    parser.add_argument("--ort-ops", action="store_true", help="with --no-latency: also quantize_static's file and "
                        "the op types ORT runs a different number of in the two (why a row is slower)")
    parser.add_argument("--max-params", type=float, default=150.0, help="--all: skip models over this many "
                        "million parameters (memory), saying so")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calibration", type=int, default=64, help="random calibration images (speed rows)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per window")
    parser.add_argument("--accuracy", nargs="*", default=None, metavar="MODEL",
                        help=f"also the MNIST accuracy table (default models: {', '.join(ACCURACY_MODELS)})")
    parser.add_argument("--epochs", type=int, default=1, help="MNIST training epochs of an uncached model")
    args = parser.parse_args()

    from edgekd.measure.fingerprint import machine

    cpu = machine()["cpu"]
    print(f"machine: {cpu['model']} ({cpu['usable_cpus']} usable CPUs), ISA: "
          f"{', '.join(k for k, v in cpu['isa'].items() if v)}", flush=True)
    if args.all:
        coverage(zoo_names() if args.models == parser.get_default("models") else args.models, args)
        return
    torch.manual_seed(1)
    calibration = torch.rand(args.calibration, 3, args.size, args.size)
    held_out = np.random.default_rng(2).random((16, 3, args.size, args.size), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models if m != "none"]:
            began = time.perf_counter()
            try:
                rows.append(zoo_row(name, args.size, calibration, held_out, args.rounds, args.seconds, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 - one model's failure is a row, not the end of the run
                print(f"{name}: FAILED ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                      flush=True)
                continue
            print(f"{name}: done in {time.perf_counter() - began:.0f} s", flush=True)
            print_zoo(rows[-1:], args.size, args.rounds)
    if rows:
        print_zoo(rows, args.size, args.rounds)
    if args.accuracy is not None:
        accuracy_table(args.accuracy or list(ACCURACY_MODELS), 300, args.epochs)


def coverage(names: list[str], args: argparse.Namespace) -> None:
    """The --all run: one row per model, each in its own temporary folder (files of 100 models would not fit)."""
    rows = []
    for name in names:
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = zoo_row(name, native_size(name) if args.native else None, None, None, args.rounds, args.seconds, Path(tmp), latency=not args.no_latency,
                              settle=True, max_params=args.max_params, ort_ops=args.ort_ops)
            except Exception as exc:  # noqa: BLE001 - one model's failure is a row, not the end of the run
                row = {"model": name, "failed": f"FAILED ({type(exc).__name__}: "
                                                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"}
        rows.append(row)
        print(f"{name}: {time.perf_counter() - began:.0f} s", flush=True)
        print_coverage(rows[-1:])
    print_coverage(rows)


if __name__ == "__main__":
    main()
