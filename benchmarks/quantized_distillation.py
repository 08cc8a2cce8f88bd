"""Quantized distillation vs its alternatives on the embedded default (issue 4's evidence).

The comparison of Polino, Pascanu, Alistarh, "Model compression via distillation and quantization":
the float student, quantization-aware training without a teacher (QAT, cross-entropy), quantized
distillation (QAT against the float teacher, the default recipe's ``kd`` term) and calibration-only
PTQ, at W8A8 and W4A8, for 3 seeds. The student is the default recipe's (distilled from the bundled
teacher for each seed); QAT uses the default recipe's quantize settings (epochs, lr, reduce_range for
8 bits). Accuracy is measured on the exported QDQ file running on ONNX Runtime and on OpenVINO.

    python benchmarks/quantized_distillation.py            # about 6 minutes on 2 cores
    python benchmarks/quantized_distillation.py --seeds 1  # a quicker look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from edgekd.backends import BACKENDS, evaluate_accuracy
from edgekd.checkpoint import load_checkpoint
from edgekd.config import load_recipe, load_target
from edgekd.data import build_splits
from edgekd.default import ARCH, default_teacher
from edgekd.objective import Objective, build_objective
from edgekd.pruning import uniform_width
from edgekd.quantization import calibrate, export_qdq, quantize_model
from edgekd.training import fit

TARGETS = ("cpu-onnxruntime", "cpu-openvino")
METHODS = ("ptq", "qat", "qad")  # calibration only; QAT on labels; QAT against the teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    recipe = load_recipe("default")
    distill_cfg, quant_cfg = recipe.stages[0], recipe.stages[1]
    splits = build_splits(recipe.data)
    teacher = load_checkpoint(default_teacher(), ARCH, num_classes=splits.num_classes,
                              in_channels=splits.input_shape[0]).model.eval().requires_grad_(False)
    targets = [load_target(t) for t in TARGETS]
    x_test, y_test = splits.x_test.numpy(), splits.y_test.numpy()
    results: dict[tuple[str, int, str], list[float]] = {}
    float_acc: dict[str, list[float]] = {t.name: [] for t in targets}

    def on_backends(path: Path) -> dict[str, float]:
        return {t.name: evaluate_accuracy(BACKENDS.get(t.backend)().compile(path, t), x_test, y_test) for t in targets}

    with tempfile.TemporaryDirectory() as tmp:
        teacher_onnx = Path(tmp) / "teacher.onnx"
        torch.onnx.export(teacher, (splits.x_test[:1],), str(teacher_onnx), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
        teacher_acc = on_backends(teacher_onnx)
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            student = uniform_width(teacher, splits.x_train[:1], recipe.student.width or 0.5, splits.num_classes)
            kd, outputs = build_objective(distill_cfg.loss, "distill", student, teacher, splits, augmented=False,
                                          teacher_key="bench")
            fit(student, splits, kd, teacher=outputs, epochs=distill_cfg.epochs, lr=distill_cfg.lr,
                weight_decay=distill_cfg.weight_decay, batch_size=recipe.data.batch_size, seed=seed,
                label=f"distill seed {seed}")
            fp32 = Path(tmp) / f"fp32-{seed}.onnx"
            torch.onnx.export(student.eval(), (splits.x_test[:1],), str(fp32), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"])
            for name, acc in on_backends(fp32).items():
                float_acc[name].append(acc)
            for bits in (8, 4):
                for method in METHODS:
                    q = quantize_model(student, unsigned_input=True, reduce_range=quant_cfg.reduce_range,
                                       weight_bits=bits)
                    calibrate(q, splits.x_train, quant_cfg.calibration_batches, recipe.data.batch_size)
                    if method != "ptq":
                        objective, teacher_out = (build_objective(quant_cfg.loss, "quantize", q, teacher, splits,
                                                                  augmented=False, teacher_key="bench")
                                                  if method == "qad" else (Objective.cross_entropy(), None))
                        fit(q, splits, objective, teacher=teacher_out, epochs=quant_cfg.epochs, lr=quant_cfg.lr,
                            weight_decay=quant_cfg.weight_decay, batch_size=recipe.data.batch_size, seed=seed,
                            label=f"W{bits} {method} seed {seed}")
                    path = Path(tmp) / f"w{bits}-{method}-{seed}.onnx"
                    export_qdq(q, splits.x_test[:1], path, 17)
                    for name, acc in on_backends(path).items():
                        results.setdefault((name, bits, method), []).append(acc)
                    print(f"seed {seed} W{bits}A8 {method}: " + ", ".join(
                        f"{n} {results[(n, bits, method)][-1]:.4f}" for n in float_acc), flush=True)

    def cell(values: list[float]) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} ± {std:.4f}"

    print(f"\ndefault student (width {recipe.student.width}), {args.seeds} seeds; QAT {quant_cfg.epochs} epochs "
          f"at lr {quant_cfg.lr}; accuracy of the exported file on each backend (359 test digits)\n")
    print("| variant | " + " | ".join(t.name for t in targets) + " |")
    print("|---|" + "---:|" * len(targets))
    print("| float teacher | " + " | ".join(f"{teacher_acc[t.name]:.4f}" for t in targets) + " |")
    print("| float student | " + " | ".join(cell(float_acc[t.name]) for t in targets) + " |")
    labels = {"ptq": "PTQ (calibration only)", "qat": "QAT without teacher", "qad": "quantized distillation"}
    for bits in (8, 4):
        for method in METHODS:
            print(f"| W{bits}A8 {labels[method]} | "
                  + " | ".join(cell(results[(t.name, bits, method)]) for t in targets) + " |")


if __name__ == "__main__":
    main()
