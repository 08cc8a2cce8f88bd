"""A detection split as a torch ``Dataset``: item ``i`` is ``(x, rows, i)``, ``x`` the preprocessed image
and ``rows`` its boxes moved through the same geometry, packed as (K, 5) ``(class, x1, y1, x2, y2)`` rows
in the model input's pixels (``boxes`` module docstring). The label array of the whole split is built
once from the box table and the images' sizes, without decoding a single image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import SampleSet
from .boxes import move_boxes, pack
from .transforms import Preprocess


class DetectionSampleSet(SampleSet):
    def __init__(self, raw: Any, preprocess: Preprocess, name: str, table: Any, rows: int) -> None:
        self.raw_set, self.preprocess, self.name = raw, preprocess, name
        ids = np.asarray(raw.labels, dtype=np.int64)
        moved = [move_boxes(table.truth[j], table.sizes[j], preprocess.geometry(*table.sizes[j])) for j in ids]
        self._labels = torch.from_numpy(pack(moved, rows))

    @property
    def labeled(self) -> bool:
        return True  # padding rows are class -1; every image is labelled, with or without boxes
