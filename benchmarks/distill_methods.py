"""Every distillation loss against no distillation, on the embedded default (issue 3's evidence).

Trains the default recipe's student (the bundled digits teacher narrowed to width 0.5 by Torch-Pruning,
``student.init`` as in the recipe) with each registered loss and with plain cross-entropy, for the same
number of epochs and 3 seeds, and prints: method, mean ± std test accuracy (torch, on the same 359 test
digits), and training seconds per epoch relative to no-KD, all measured side by side in this one run.

Feature losses that their papers add to a logit loss (hint, spatial-attention, nd) run as ``kd`` + that
term, and say so in the table. Nothing is tuned per method: every loss runs with its registry defaults.

    python benchmarks/distill_methods.py              # about 20 minutes on 2 cores
    python benchmarks/distill_methods.py --seeds 1 --epochs 3 --methods kd,no-kd   # a smoke run

On MNIST (issue 12: a task hard enough that methods separate), with the teacher
``mnist_end_to_end.py`` trained, few labels and a small, freshly initialised student:

    python benchmarks/distill_methods.py --mnist runs/bench-mnist --max-train 1000 --width 0.25 --init random
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from edgekd.models.checkpoint import load_checkpoint
from edgekd.config.schema import LossTerm, TrainSpec
from edgekd.run.recipe import load_recipe
from edgekd.data import build_splits
from edgekd.train.default_teacher import ARCH, default_teacher
from edgekd.fileio import atomic_path
from edgekd.losses import LOSSES
from edgekd.train.objective import Objective, build_objective
from edgekd.stages.channels import uniform_width
from edgekd.train.evaluate import accuracy
from edgekd.train.loop import fit, LoopSettings
from edgekd.models.zoo import TinyCNN
from edgekd.train.teacher_outputs import TeacherRun

# Module names of DigitsCNN: features.6 / .13 are the ReLU outputs at 16x16 and 8x8, .10 the 8x8 one before.
METHODS: dict[str, list[dict]] = {
    "no-kd": [],
    "kd": [{"name": "kd"}],
    "kd-labelfree": [{"name": "kd-labelfree"}],
    "nkd": [{"name": "nkd"}],
    "dhkd": [{"name": "dhkd"}],
    "multi-teacher": [{"name": "multi-teacher", "teachers": [{"checkpoint": "SECOND", "arch": "edgekd:tiny_cnn"}]}],
    "taid": [{"name": "taid"}],
    "bdkd": [{"name": "bdkd"}],
    "pskd": [{"name": "pskd"}],
    "layered-self": [{"name": "layered-self", "exits": ["features.6", "features.10"]}],
    "hint": [{"name": "kd"}, {"name": "hint", "pairs": [["features.13", "features.13"]]}],
    "spatial-attention": [{"name": "kd"}, {"name": "spatial-attention",
                                           "pairs": [["features.6", "features.6"], ["features.13", "features.13"]]}],
    "nd": [{"name": "kd"}, {"name": "nd"}],
    "ofa": [{"name": "ofa", "stages": ["features.6", "features.10"]}],
}


def second_teacher(splits, cache: Path) -> Path:
    """A second teacher of another architecture (edgekd's TinyCNN) for multi-teacher; trained once, cached."""
    path = cache / "second_teacher_tiny_cnn.safetensors"
    if not path.is_file():
        from safetensors.torch import save_file

        torch.manual_seed(1)
        model = TinyCNN(num_classes=splits.num_classes)
        fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs=15, lr=5e-3, weight_decay=5e-4), LoopSettings(seed=1, batch_size=64), label="second teacher")
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: the default recipe's distill epochs")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--init", choices=["pruned", "random"], default=None,
                        help="student init; default: the default recipe's (pruned: the teacher's kept weights)")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench-distill"))
    parser.add_argument("--mnist", type=Path, default=None, help="the folder mnist_end_to_end.py wrote: its MNIST "
                        "ImageFolder and trained teacher replace the digits demo")
    parser.add_argument("--max-train", type=int, default=None, help="labelled train images (a seeded subset)")
    parser.add_argument("--width", type=float, default=None, help="student width (default: the recipe's)")
    args = parser.parse_args()

    recipe = load_recipe("default")
    distill_cfg = recipe.stages[0]
    epochs = args.epochs or distill_cfg.epochs
    init = args.init or recipe.student.init
    width = args.width or recipe.student.width or 0.5
    checkpoint = default_teacher()
    if args.mnist is not None:
        from mnist_data import ensure_npz
        from mnist_end_to_end import data_spec

        # the same images as the teacher's ImageFolder, memory-mapped: no PNG decoding every epoch
        data = data_spec(ensure_npz(args.mnist / "mnist.npz"), recipe.data.batch_size, args.max_train)
        data = data.model_copy(update={"source": "npz"})
        checkpoint = args.mnist / "mnist_digits_cnn.safetensors"
        args.cache = args.mnist / "distill-methods"
    else:
        data = recipe.data.model_copy(update={"max_train_samples": args.max_train})
    splits = build_splits(data)
    print(f"data: {splits.describe()['sizes']} ({data.source}); teacher {checkpoint}")
    teacher = load_checkpoint(checkpoint, ARCH, num_classes=splits.num_classes,
                              in_channels=splits.input_shape[0]).model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    args.cache.mkdir(parents=True, exist_ok=True)
    second = second_teacher(splits, args.cache)

    def load_extra(checkpoint: str, arch: str | None) -> torch.nn.Module:
        return load_checkpoint(checkpoint, arch, num_classes=splits.num_classes,
                               in_channels=splits.input_shape[0]).model.eval().requires_grad_(False)

    print(f"second teacher (tiny_cnn) test accuracy "
          f"{accuracy(load_extra(str(second), 'edgekd:tiny_cnn'), splits, 'test'):.4f}")

    methods = args.methods.split(",")
    rows = []
    for method in methods:
        accs, epoch_seconds = [], []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            student = uniform_width(teacher, splits.example(1), width, splits.num_classes,
                                    keep_weights=init == "pruned")
            terms = [LossTerm.model_validate(json.loads(json.dumps(t).replace("SECOND", str(second))))
                     for t in METHODS[method]]
            if terms:
                objective, outputs = build_objective(terms, method, student, teacher, splits,
                                                     TeacherRun("bench"), load_extra)
            else:
                objective, outputs = Objective.cross_entropy(), None
            began = time.perf_counter()
            result = fit(student, splits, objective, TrainSpec(epochs=epochs, lr=distill_cfg.lr, weight_decay=distill_cfg.weight_decay), LoopSettings(seed=seed, batch_size=recipe.data.batch_size), teacher=outputs, label=f"{method} seed {seed}")
            wall = time.perf_counter() - began
            accs.append(accuracy(student, splits, "test"))
            epoch_seconds.append(statistics.median(h["seconds"] for h in result.history))
            print(f"{method:18s} seed {seed}: test {accs[-1]:.4f}, {epoch_seconds[-1]:.2f} s/epoch "
                  f"(wall {wall:.1f} s incl. teacher outputs and validation)", flush=True)
        rows.append((method, accs, statistics.mean(epoch_seconds)))

    base = dict((m, s) for m, _, s in rows).get("no-kd")
    teacher_acc = accuracy(teacher, splits, "test")
    print(f"\nteacher test accuracy {teacher_acc:.4f}; student width {width}, init {init}; "
          f"{splits.size('train')} train images; {epochs} epochs; seeds 0..{args.seeds - 1}\n")
    print("| method | loss terms | test accuracy (mean ± std) | s/epoch | epoch time vs no-KD |")
    print("|---|---|---:|---:|---:|")
    for method, accs, sec in rows:
        terms = " + ".join(t["name"] for t in METHODS[method]) or "ce"
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ratio = f"{sec / base:.2f}x" if base else "n/a"
        print(f"| {method} | {terms} | {statistics.mean(accs):.4f} ± {std:.4f} | {sec:.2f} | {ratio} |")
    text_losses = {"minilm", "minilm-v2", "tinybert-hidden", "embedding-cosine"}  # benchmarks/text_distill.py
    assert set(LOSSES.names()) - text_losses <= set(METHODS), "a registered loss is missing from the benchmark"


if __name__ == "__main__":
    main()
