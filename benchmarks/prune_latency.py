"""Latency-driven pruning vs uniform pruning at equal MACs, on the embedded default (issue 5's evidence).

Three prunes of the bundled digits teacher, each followed by the same recovery (distillation from the
unpruned teacher, the stage's default loss), each a real ``edgekd compress`` run:

1. uniform 50% of channels (prune-then-distill at half width);
2. latency-driven: ratios chosen from the measured cpu-openvino latency table to meet
   ``max_latency_ms`` = ``--budget`` × the teacher's p50 on cpu-openvino;
3. uniform at the MACs of (2), the ratio found by bisection, so (2) and (3) cost the same FLOPs.

Latency is then re-measured side by side in this one process: the FP32 ONNX files of the teacher and
of the three students compiled on OpenVINO, timed in interleaved rounds (the lowest of the rounds'
p50s: a co-tenant only adds time), so machine noise hits all of them alike. Accuracy is each file's
on OpenVINO (report.json). The budget is judged twice: in ms, and as a fraction of the teacher's
latency in the same rounds (which cancels the drift of a shared 2-core machine between the stage's
timing and the side-by-side one).

    python benchmarks/prune_latency.py                 # about 6 minutes on 2 cores
    python benchmarks/prune_latency.py --budget 0.4 --epochs 5
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import torch

import edgekd
from edgekd.artifacts.artifact import count_params_macs
from edgekd.models.checkpoint import load_checkpoint
from edgekd.config.schema import Recipe
from edgekd.backends import load_target
from edgekd.data import build_splits
from edgekd.train.default_teacher import ARCH, DATA, default_teacher
from edgekd.stages.exporting import export_fp32
from edgekd.measure.measurement import BackendPool, latency_probe
from edgekd.stages.channels import prune_channels
from edgekd.stages.channels import Cut

TARGET = "cpu-openvino"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=0.40, help="latency budget as a fraction of the teacher's")
    parser.add_argument("--epochs", type=int, default=10, help="recovery epochs for every prune")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    args = parser.parse_args()

    target = load_target(TARGET)
    splits = build_splits(DATA)
    teacher = load_checkpoint(default_teacher(), ARCH, num_classes=10, in_channels=1).model.eval()
    example = splits.example(1)

    p50 = latency_probe(target, BackendPool(), windows=1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_onnx = tmp / "teacher.onnx"
        export_fp32(teacher, example, teacher_onnx, 17)
        budget_ms = args.budget * min(p50(teacher_onnx) for _ in range(3))

        def run(name: str, prune: dict) -> dict:
            recipe = Recipe.model_validate({
                "name": name, "data": DATA.model_dump(), "targets": [TARGET],
                "stages": [{"stage": "prune", **prune, "recovery": {"epochs": args.epochs}}, {"stage": "export"}]})
            result = edgekd.compress(recipe=recipe, out=tmp / name, force=True)
            report = json.loads((result.run_dir / "report.json").read_text())
            row = next(r for r in report["results"] if r["variant"] == "student-fp32" and r["target"] == TARGET)
            teacher_row = next(r for r in report["results"] if r["variant"] == "teacher-fp32" and r["target"] == TARGET)
            stage = json.loads((result.run_dir / "stages" / "00-prune" / "stage.json").read_text())
            metrics = stage["artifacts"][0]["meta"]["metrics"]
            return {"name": name, "onnx": result.run_dir / "models" / "student-fp32.onnx", "accuracy": row["accuracy"],
                    "teacher_accuracy": teacher_row["accuracy"], "macs": metrics["macs"], "params": metrics["params"],
                    "latency": metrics.get("latency"), "channels": stage["artifacts"][0]["meta"]["channels"]}

        half = run("uniform-50", {"method": "uniform", "ratio": 0.5})
        driven = run("latency", {"method": "latency", "latency": {"target": TARGET, "max_latency_ms": budget_ms,
                                                                   "steps": [0.25, 0.5, 0.75]}})
        ratio = _uniform_ratio_for_macs(teacher, example, driven["macs"], splits.input_shape)
        equal = run("uniform-equal-macs", {"method": "uniform", "ratio": ratio})

        rows = [("teacher", teacher_onnx, None), ("uniform 50%", half["onnx"], half),
                ("latency-driven", driven["onnx"], driven), (f"uniform {ratio:.3f} (equal MACs)", equal["onnx"], equal)]
        timings: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        for _ in range(args.rounds):  # interleaved: each round times every model once
            for label, path, _ in rows:
                timings[label].append(p50(path))

    base = min(timings["teacher"])
    teacher_params, teacher_macs = count_params_macs(teacher, splits.input_shape)
    lat = driven["latency"]
    print(f"\ncpu-openvino, FP32, batch 1; budget {budget_ms:.3f} ms ({args.budget:.0%} of the teacher's p50); "
          f"recovery {args.epochs} epochs; latency = lowest p50 of {args.rounds} interleaved rounds\n")
    print("| model | MACs | params | accuracy (OpenVINO) | p50 ms | × teacher | meets budget (ms) | "
          "meets budget (× teacher) |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for label, _, info in rows:
        ms = min(timings[label])
        acc = info["accuracy"] if info else half["teacher_accuracy"]
        macs = f"{(info['macs'] if info else teacher_macs) / 1e6:.1f} M"
        params = f"{(info['params'] if info else teacher_params) / 1e3:.0f} K"
        print(f"| {label} | {macs} | {params} | {acc:.4f} | {ms:.3f} | {ms / base:.3f} | "
              f"{'yes' if ms <= budget_ms else 'no'} | {'yes' if ms / base <= args.budget else 'no'} |")
    print(f"\nlatency-driven: predicted {lat['predicted_ms']:.3f} ms, measured by the stage {lat['measured_ms']:.3f} ms "
          f"(after recovery {lat['measured_after_recovery_ms']:.3f} ms); ratios {lat['ratios']}; "
          f"importance removed {lat['importance_removed']:.1%}")
    for i, a in enumerate(lat["attempts"]):
        print(f"  attempt {i + 1}{' (kept)' if i == lat['kept_attempt'] else ''}: planned for "
              f"{a['planned_for_ms']:.3f} ms, predicted {a['predicted_ms']:.3f}, measured {a['measured_ms']:.3f}; "
              f"{a['ratios']}")
    print(f"latency-driven channels: {driven['channels']}")
    print(f"uniform equal-MACs channels: {equal['channels']}")


def _uniform_ratio_for_macs(teacher: torch.nn.Module, example: torch.Tensor, macs: int,
                            input_shape: tuple[int, ...]) -> float:
    """The uniform ratio whose pruned model has the MACs closest to ``macs`` (bisection)."""
    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        model = copy.deepcopy(teacher)
        prune_channels(model, example, Cut(ratio=mid), num_classes=10)
        if count_params_macs(model, input_shape)[1] > macs:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 4)


if __name__ == "__main__":
    main()
