"""Issue 27, the benchmark's data: real MNIST digits on canvases, written as a YOLO layout that edgekd's
own yolo source reads back, with exact boxes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mnist_canvases_are_a_yolo_set_with_tight_boxes_and_separate_splits(tmp_path):
    from PIL import Image

    from edgekd.config.schema import DataSpec
    from edgekd.data import build_splits
    from edgekd.data.boxes import unpack

    data = load("detection_data")
    root = data.write_yolo(tmp_path / "digits", {"train": 24, "val": 6, "test": 8}, size=128, seed=0)
    splits = build_splits(DataSpec.model_validate({"source": "yolo", "path": str(root), "workers": 0}))
    assert [splits.size(s) for s in ("train", "val", "test")] == [24, 6, 8]  # MNIST's splits, never mixed
    assert splits.num_classes == 10
    counts = []
    for split in ("train", "test"):
        for i in range(splits.size(split)):
            truth = unpack(splits.labels(split)[i])
            counts.append(len(truth))
            image = np.asarray(Image.open(root / "images" / split / f"{i:06d}.png").convert("L"))
            for x1, y1, x2, y2 in truth.boxes.round().astype(int):
                # tight: a digit pixel on each edge of its box
                assert image[y1, x1:x2].max() > 32 and image[y2 - 1, x1:x2].max() > 32
                assert image[y1:y2, x1].max() > 32 and image[y1:y2, x2 - 1].max() > 32
    assert 1 <= min(counts) and max(counts) <= 6 and np.mean(counts) >= 2.5
    # the same seed writes the same canvases
    again = data.write_yolo(tmp_path / "again", {"test": 8}, size=128, seed=0)
    assert (again / "labels" / "test" / "000003.txt").read_text() == (root / "labels" / "test" / "000003.txt").read_text()
