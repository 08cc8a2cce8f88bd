"""Quantized distillation vs its alternatives (issue 4's evidence).

The comparison of Polino, Pascanu, Alistarh, "Model compression via distillation and quantization":
the float student, quantization-aware training without a teacher (QAT, cross-entropy), quantized
distillation (QAT against the float teacher, the default recipe's ``kd`` term) and calibration-only
PTQ, at W8A8 and W4A8, for 3 seeds; plus W4A8 PTQ with accuracy-driven mixed precision
(``max_accuracy_drop``), which reports how many layers it had to keep in float. The student is the
default recipe's (half width, distilled from the teacher for each seed); QAT uses the default
recipe's quantize settings (epochs, lr, reduce_range for 8 bits). Accuracy is measured on the
exported QDQ file running on ONNX Runtime and on OpenVINO.

The teacher is the bundled digits CNN, or (``--model torchvision:NAME``) a torchvision model trained
here from random weights on the same digits, repeated to 3 channels.

    python benchmarks/quantized_distillation.py                                  # about 7 minutes on 2 cores
    python benchmarks/quantized_distillation.py --model torchvision:mobilenet_v2 # about 25 minutes
    python benchmarks/quantized_distillation.py --seeds 1                        # a quicker look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from edgekd.backends import BACKENDS, evaluate_accuracy
from edgekd.models.checkpoint import build_model, load_checkpoint
from edgekd.config.schema import recipe_with, TrainSpec
from edgekd.backends import load_target
from edgekd.run.recipe import load_recipe
from edgekd.data import build_splits
from edgekd.train.default_teacher import ARCH, default_teacher
from edgekd.errors import StageError
from edgekd.stages.quantize.mixed_precision import search
from edgekd.train.objective import Objective, build_objective
from edgekd.stages.channels import uniform_width
from edgekd.stages.quantize.quantization import calibrate, layer_names, quantize_model, QuantSpec
from edgekd.stages.export.int8_layouts import export_qdq
from edgekd.train.evaluate import accuracy
from edgekd.train.loop import fit, LoopSettings
from edgekd.train.teacher_outputs import TeacherRun

TARGETS = ("cpu-onnxruntime", "cpu-openvino")
METHODS = ("ptq", "qat", "qad")  # calibration only; QAT on labels; QAT against the teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="default", help="default (the bundled digits CNN) or torchvision:NAME")
    parser.add_argument("--teacher-epochs", type=int, default=10, help="torchvision teachers: epochs from scratch")
    parser.add_argument("--mixed-budget", type=float, default=0.01,
                        help="max_accuracy_drop for the mixed-precision row; 0 skips the row (its leave-one-out "
                             "search calibrates the model about twice per layer: slow on deep models)")
    args = parser.parse_args()

    recipe = load_recipe("default")
    if args.model != "default":
        recipe = recipe_with(recipe, data={**recipe.data.model_dump(), "channels": 3})
    distill_cfg, quant_cfg = recipe.stages[0], recipe.stages[1]
    splits = build_splits(recipe.data)
    if args.model == "default":
        teacher = load_checkpoint(default_teacher(), ARCH, num_classes=splits.num_classes,
                                  in_channels=splits.input_shape[0]).model
    else:
        torch.manual_seed(0)
        teacher = build_model(args.model, num_classes=splits.num_classes, in_channels=3)
        fit(teacher, splits, Objective.cross_entropy(), TrainSpec(epochs=args.teacher_epochs, lr=distill_cfg.lr, weight_decay=5e-4), LoopSettings(seed=0, batch_size=recipe.data.batch_size), label=f"train {args.model}")
    teacher = teacher.eval().requires_grad_(False)
    mixed_layers: list[str] = []
    targets = [load_target(t) for t in TARGETS]
    x_test, y_test = splits.example(splits.size("test"), "test").numpy(), splits.labels("test").numpy()
    results: dict[tuple[str, int, str], list[float]] = {}
    float_acc: dict[str, list[float]] = {t.name: [] for t in targets}

    def on_backends(path: Path) -> dict[str, float]:
        return {t.name: evaluate_accuracy(BACKENDS.get(t.backend)().compile(path, t), x_test, y_test) for t in targets}

    with tempfile.TemporaryDirectory() as tmp:
        teacher_onnx = Path(tmp) / "teacher.onnx"
        torch.onnx.export(teacher, (splits.example(1, "test"),), str(teacher_onnx), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
        teacher_acc = on_backends(teacher_onnx)
        print("float teacher: " + ", ".join(f"{n} {a:.4f}" for n, a in teacher_acc.items()), flush=True)
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            student = uniform_width(teacher, splits.example(1), recipe.student.width or 0.5, splits.num_classes)
            kd, outputs = build_objective(distill_cfg.loss, "distill", student, teacher, splits,
                                          TeacherRun("bench"))
            fit(student, splits, kd, TrainSpec(epochs=distill_cfg.epochs, lr=distill_cfg.lr, weight_decay=distill_cfg.weight_decay), LoopSettings(seed=seed, batch_size=recipe.data.batch_size), teacher=outputs, label=f"distill seed {seed}")
            fp32 = Path(tmp) / f"fp32-{seed}.onnx"
            torch.onnx.export(student.eval(), (splits.example(1, "test"),), str(fp32), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"])
            for name, acc in on_backends(fp32).items():
                float_acc[name].append(acc)
            print(f"seed {seed} float student: " + ", ".join(f"{n} {a[-1]:.4f}" for n, a in float_acc.items()),
                  flush=True)
            for bits in (8, 4):
                for method in METHODS:
                    q = quantize_model(student, QuantSpec(unsigned_input=True, reduce_range=quant_cfg.reduce_range, weight_bits=bits))
                    calibrate(q, splits.calibration_loader(quant_cfg.calibration_batches))
                    if method != "ptq":
                        objective, teacher_out = (build_objective(quant_cfg.loss, "quantize", q, teacher, splits,
                                                                  TeacherRun("bench"))
                                                  if method == "qad" else (Objective.cross_entropy(), None))
                        fit(q, splits, objective, TrainSpec(epochs=quant_cfg.epochs, lr=quant_cfg.lr, weight_decay=quant_cfg.weight_decay), LoopSettings(seed=seed, batch_size=recipe.data.batch_size), teacher=teacher_out, label=f"W{bits} {method} seed {seed}")
                    path = Path(tmp) / f"w{bits}-{method}-{seed}.onnx"
                    export_qdq(q, splits.example(1, "test"), path, 17)
                    for name, acc in on_backends(path).items():
                        results.setdefault((name, bits, method), []).append(acc)
                    print(f"seed {seed} W{bits}A8 {method}: " + ", ".join(
                        f"{n} {results[(n, bits, method)][-1]:.4f}" for n in float_acc), flush=True)
            if args.mixed_budget <= 0:
                continue
            path, kept = _mixed_ptq(student, splits, quant_cfg, recipe.data.batch_size, args.mixed_budget,
                                    Path(tmp) / f"w4-mixed-{seed}.onnx")
            mixed_layers.append(kept)
            for name, acc in on_backends(path).items():
                results.setdefault((name, 4, "mixed"), []).append(acc)
            print(f"seed {seed} W4A8 PTQ + mixed precision ({kept}): " + ", ".join(
                f"{n} {results[(n, 4, 'mixed')][-1]:.4f}" for n in float_acc), flush=True)

    def cell(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {std:.4f}"

    print(f"\n{args.model} teacher, student width {recipe.student.width}, {args.seeds} seeds; QAT "
          f"{quant_cfg.epochs} epochs at lr {quant_cfg.lr}; accuracy of the exported file on each backend "
          f"({len(y_test)} test digits)\n")
    print("| variant | " + " | ".join(t.name for t in targets) + " |")
    print("|---|" + "---:|" * len(targets))
    print("| float teacher | " + " | ".join(f"{teacher_acc[t.name]:.4f}" for t in targets) + " |")
    print("| float student | " + " | ".join(cell(float_acc[t.name]) for t in targets) + " |")
    labels = {"ptq": "PTQ (calibration only)", "qat": "QAT without teacher", "qad": "quantized distillation"}
    for bits in (8, 4):
        for method in METHODS:
            print(f"| W{bits}A8 {labels[method]} | "
                  + " | ".join(cell(results[(t.name, bits, method)]) for t in targets) + " |")
    if args.mixed_budget > 0:
        print(f"| W4A8 PTQ + mixed precision (max drop {args.mixed_budget}; float layers per seed: "
              f"{', '.join(mixed_layers)}) | " + " | ".join(cell(results[(t.name, 4, 'mixed')]) for t in targets) + " |")


def _mixed_ptq(student, splits, quant_cfg, batch_size: int, budget: float, path: Path) -> tuple[Path, str]:
    """W4A8 PTQ with the fewest layers in float that keep the validation drop within ``budget``;
    exported to ``path``. Returns the path and "kept/total" (or "budget missed" with the best drop)."""
    layers = layer_names(student)
    float_val = accuracy(student, splits, "val")
    made = {}

    def drop_of(chosen):
        q = quantize_model(student, QuantSpec(unsigned_input=True, weight_bits=4, overrides=chosen))
        calibrate(q, splits.calibration_loader(quant_cfg.calibration_batches))
        made["model"] = q
        return float_val - accuracy(q, splits, "val")

    try:
        result = search(layers, {}, budget, drop_of, "mixed")
        label = f"{len(result.float_layers)}/{len(layers)}"
    except StageError as err:  # the benchmark still reports what the best attempt scored
        label = "budget missed"
        print(f"mixed precision: {err}", flush=True)
    export_qdq(made["model"], splits.example(1, "test"), path, 17)
    return path, label


if __name__ == "__main__":
    main()
