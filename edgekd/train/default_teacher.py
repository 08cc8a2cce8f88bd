"""The embedded default: a digits CNN teacher that edgekd trains itself and bundles.

``edgekd compress`` with no checkpoint uses ``assets/digits_cnn_teacher.safetensors`` shipped in the
package. If that file is absent (a trimmed install), the teacher is trained once on scikit-learn's
digits and cached under ``$EDGEKD_CACHE`` (default ``~/.cache/edgekd``). No network is used.
Regenerate the bundled file with ``make teacher`` (``python -m edgekd.train.default_teacher``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config.schema import DataSpec, TrainSpec
from ..data import build_splits
from ..fileio import atomic_path, cache_dir, write_json
from .evaluate import accuracy
from .loop import LoopSettings, fit
from .objective import Objective
from ..models.zoo import DigitsCNN

ARCH = "edgekd:digits_cnn"
BUNDLED = Path(__file__).parents[1] / "models" / "assets" / "digits_cnn_teacher.safetensors"
DATA = DataSpec(source="digits")
EPOCHS, LR, SEED = 12, 2e-3, 0


def default_teacher() -> Path:
    """Path to the default teacher's weights: bundled, else cached, else trained now and cached."""
    if BUNDLED.is_file():
        return BUNDLED
    cached = cache_dir() / BUNDLED.name
    if not cached.is_file():
        train_teacher(cached)
    return cached


def train_teacher(out: Path, epochs: int = EPOCHS) -> dict[str, float]:
    """Train the digits teacher with plain cross-entropy; write weights and a metrics sidecar."""
    from safetensors.torch import save_file

    splits = build_splits(DATA)
    model = DigitsCNN(width=1.0, num_classes=splits.num_classes, in_channels=splits.input_shape[0])
    result = fit(model, splits, Objective.cross_entropy(), TrainSpec(epochs, LR, 5e-4),
                 LoopSettings(seed=SEED, batch_size=DATA.batch_size), label="train teacher")
    metrics = {"val_accuracy": result.best_val_accuracy, "best_epoch": result.best_epoch,
               "test_accuracy": accuracy(model, splits, "test"), "epochs": epochs}
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata={"arch": ARCH})
    write_json(out.with_suffix(".json"), {"arch": ARCH, "data": DATA.model_dump(), **metrics})
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=BUNDLED)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    print(train_teacher(args.out, args.epochs))


if __name__ == "__main__":
    main()
