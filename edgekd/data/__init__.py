"""The data seam: sources (a registry), preprocessing recorded as data, and the run's splits."""

from .base import Splits, SampleSet
from .build import build_splits
from .sources import SOURCES
from . import detection_sources  # noqa: F401 - registers the yolo and coco sources
from .transforms import Preprocess, augment_batch

__all__ = ["Splits", "SampleSet", "build_splits", "SOURCES", "Preprocess", "augment_batch"]
