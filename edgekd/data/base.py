"""The data seam: train / val / test datasets and their loaders, built once per run from ``data:``.

The caller owns data (DESIGN.md): every stage and backend is handed the same ``Splits``, so the
teacher, the student and every exported file are scored on the same test samples. Nothing here
holds a whole split in memory unless the source already does (digits, synthetic): samples are read,
decoded and preprocessed when a loader asks for them, and each comes with its index in its split,
which is what the teacher-output cache and the self-distillation buffers are keyed by.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from ..tasks import Classification, Scoring
from .transforms import Preprocess

SPLITS = ("train", "val", "test")


class RawSet(Protocol):
    """A source's samples before preprocessing: ``raw(i)`` is a PIL image or a float CHW tensor in
    [0, 1] (or already normalised, for arrays); ``labels`` every label, read without decoding images."""

    def __len__(self) -> int: ...

    def raw(self, i: int) -> Any: ...

    @property
    def labels(self) -> np.ndarray: ...


@dataclass
class ArraySet:
    """Samples in an array (in memory, or memory-mapped: ``x[i]`` reads one sample from disk)."""

    x: Any          # (N, C, H, W) or (N, H, W) array-like
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def raw(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.x[i], dtype=np.float32, copy=True))

    @property
    def labels(self) -> np.ndarray:
        return self.y


@dataclass
class SubSet:
    """Some samples of another set, in the given order."""

    base: Any
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def raw(self, i: int) -> Any:
        return self.base.raw(int(self.index[i]))

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels[self.index]


class SampleSet(Dataset):
    """One split as a torch ``Dataset``: item ``i`` is ``(x, label, i)``, ``x`` preprocessed."""

    def __init__(self, raw: RawSet, preprocess: Preprocess, name: str) -> None:
        self.raw_set, self.preprocess, self.name = raw, preprocess, name
        self._labels = torch.from_numpy(np.array(raw.labels, dtype=np.int64))  # a copy: labels are small

    def __len__(self) -> int:
        return len(self.raw_set)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any, int]:
        x = self.preprocess(self.raw_set.raw(int(i)))
        if x.is_floating_point() and not torch.isfinite(x).all():  # one NaN pixel poisons training and parity
            raise DataError(f"data: {self.name} sample {int(i)} holds NaN or Inf values; clean the data")
        label = self._labels[i]
        return x, int(label) if label.ndim == 0 else label, int(i)

    @property
    def labels(self) -> torch.Tensor:
        return self._labels

    @property
    def labeled(self) -> bool:
        """False when some samples are unlabeled (label -1): only label-free losses apply."""
        return bool((self._labels >= 0).all())


class EpochBatches(Sampler[list[int]]):
    """The batches of one pass, as index lists: the seeded permutation (or the split's order) cut
    into ``batch_size`` chunks, this rank's share of each under DDP, the first ``skip`` left out (a
    run resumed mid-epoch). Every rank draws the same permutation, so the global batch, and the
    result, match one process."""

    def __init__(self, order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1, skip: int = 0) -> None:
        self.order, self.batch_size, self.rank, self.world, self.skip = order, batch_size, rank, world, skip

    def chunks(self) -> list[torch.Tensor]:
        out = []
        for start in range(0, len(self.order), self.batch_size):
            idx = self.order[start:start + self.batch_size]
            if self.world > 1:
                if len(idx) < self.world:  # every rank needs a sample, or DDP's all-reduce would hang
                    continue
                idx = idx[self.rank::self.world]
            out.append(idx)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.chunks()[self.skip:]:
            yield idx.tolist()

    def __len__(self) -> int:
        return max(0, len(self.chunks()) - self.skip)


def collate(items: list[tuple[torch.Tensor, Any, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch: inputs stacked, labels as int64 class ids (or stacked, for a detection split's box rows)."""
    xs, ys, idx = zip(*items)
    labels = torch.stack(ys) if isinstance(ys[0], torch.Tensor) else torch.tensor(ys, dtype=torch.int64)
    return torch.stack(xs), labels, torch.tensor(idx, dtype=torch.int64)


@dataclass
class Splits:
    """The run's data: one ``SampleSet`` per split, the class count, the preprocessing, and how to
    load them (batch size, workers, pinned memory)."""

    train: SampleSet
    val: SampleSet
    test: SampleSet
    num_classes: int
    preprocess: Preprocess
    batch_size: int = 64
    workers: int = 0
    pin_memory: bool = False
    class_names: list[str] | None = None
    calibration_size: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)  # where each split came from, for the manifest
    # how every model's outputs are scored on these splits: the run's task bound to its references
    # (labels, or the teacher's own outputs); the run sets it, top-1 accuracy until then
    scoring: Scoring = field(default_factory=lambda: Scoring(Classification()))
    _shape: tuple[int, ...] | None = None

    def set(self, split: str) -> SampleSet:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        return getattr(self, split)

    def size(self, split: str) -> int:
        return len(self.set(split))

    def labels(self, split: str) -> torch.Tensor:
        return self.set(split).labels

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape (C, H, W), from the first train sample."""
        if self._shape is None:
            self._shape = tuple(self.train[0][0].shape)
        return self._shape

    @property
    def labeled(self) -> bool:
        """False when the train split holds unlabeled samples (label -1): only label-free losses apply."""
        return self.train.labeled

    def example(self, n: int = 1, split: str = "train") -> torch.Tensor:
        """The first ``n`` samples of ``split``, stacked (shapes, tracing, probes)."""
        ds = self.set(split)
        return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])

    def loader(self, split: str, batch_size: int | None = None, *, order: torch.Tensor | None = None,
               limit: int | None = None, rank: int = 0, world: int = 1, skip: int = 0) -> DataLoader:
        """Batches ``(x, y, index)`` of ``split``: in ``order`` (a permutation) or the split's own,
        the first ``limit`` samples only, this rank's share under DDP, the first ``skip`` batches left out."""
        ds = self.set(split)
        if order is None:
            order = torch.arange(len(ds))
        if limit is not None:
            order = order[:limit]
        return self._loader(ds, EpochBatches(order, batch_size or self.batch_size, rank, world, skip), False)

    def epoch_loader(self, batch_size: int | None = None, rank: int = 0, world: int = 1) -> tuple[DataLoader, EpochBatches]:
        """The train loader a training loop keeps for all its epochs: set ``batches.order`` (and
        ``skip``) before each pass. Its workers persist across epochs instead of starting anew."""
        batches = EpochBatches(torch.arange(self.size("train")), batch_size or self.batch_size, rank, world)
        return self._loader(self.train, batches, True), batches

    def _loader(self, ds: SampleSet, batches: EpochBatches, persistent: bool) -> DataLoader:
        workers = self.workers
        return DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                          pin_memory=self.pin_memory, persistent_workers=persistent and workers > 0,
                          prefetch_factor=4 if workers > 0 else None)

    def calibration_loader(self, batches: int) -> DataLoader:
        """The calibration samples: the first ``calibration_samples`` train samples (in the split's
        own order, no augmentation), else ``batches`` batches of them."""
        n = self.calibration_size or batches * self.batch_size
        return self.loader("train", limit=min(n, self.size("train")))

    def arrays(self, split: str, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` numpy batches of ``split`` in order: what a backend is evaluated on."""
        for x, y, _ in self.loader(split, limit=limit):
            yield x.numpy(), y.numpy()

    def check_every_sample(self) -> int:
        """Read and preprocess every sample of every split once (``compress --dry-run``), so an unreadable
        file fails now with its name rather than epochs into training. Returns how many were read."""
        from ..progress import progress_bar

        total = sum(len(self.set(s)) for s in ("train", "val", "test"))
        with progress_bar("dry run: reading every sample", total) as bar:
            for split in ("train", "val", "test"):
                data = self.set(split)
                for i in range(len(data)):
                    data[i]
                    bar.advance()
        return total

    def describe(self) -> dict[str, Any]:
        """For the manifest and stage records: sizes, classes, preprocessing, provenance."""
        return {"sizes": {s: self.size(s) for s in SPLITS}, "num_classes": self.num_classes,
                "class_names": self.class_names, "input_shape": list(self.input_shape),
                "preprocess": self.preprocess.to_json(), **self.provenance}


def auto_workers(decoded: bool) -> int:
    """Workers for ``workers: auto``: none for in-memory arrays (a worker only adds pickling), up to 4
    for files that must be decoded, never more than the CPUs this process may use."""
    if not decoded:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(0, min(4, cpus - 1)) if cpus > 1 else 0


def seeded_subset(n: int, keep: int | None, seed: int) -> np.ndarray | None:
    """Indices of a seeded random subset of ``keep`` out of ``n`` (sorted, so reading stays sequential),
    or None when nothing is cut."""
    if keep is None or keep >= n:
        return None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[:keep])


def check_labels(labels: np.ndarray, where: str, num_classes: int | None = None) -> np.ndarray:
    """Labels as int64, or a ``DataError`` about the data (not the model): integer, in range."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one integer per sample; got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where}: labels must be integers; found non-integer values (e.g. {y[y != np.round(y)][:1]})")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: labels must be integers; got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative; labels must be 0..C-1 (put unlabeled "
                        f"samples in x_unlabeled)")
    if num_classes is not None and len(y) and int(y.max()) >= num_classes:
        raise DataError(f"{where}: label {int(y.max())} is out of range for {num_classes} classes (0..{num_classes - 1})")
    return y
