"""``build_splits``: a recipe's ``data:`` block -> the run's ``Splits``, the same way for every source.

A source gives the splits it has; the rest are made here, seeded, and recorded:
- train, val and test given: used as they are;
- train and test: validation is carved from train (fraction ``split[1] / (split[0] + split[1])``);
- train and val: the given val becomes the test split (so the user's held-out set stays held out)
  and validation is carved from train;
- train only: split by ``split`` fractions.
The test split the user gave is never mixed with training data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config.schema import DataSpec
from ..errors import DataError, first_line
from .base import SampleSet, Splits, SubSet, auto_workers, check_labels, seeded_subset
from .sources import SOURCES, SourceData
from .transforms import resolve_preprocess


class _Joined:
    """Two raw sets one after the other (train followed by unlabeled samples)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second
        self._labels = np.concatenate([first.labels, second.labels])

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def raw(self, i: int) -> Any:
        return self.first.raw(i) if i < len(self.first) else self.second.raw(i - len(self.first))

    @property
    def labels(self) -> np.ndarray:
        return self._labels


def _carve(raw: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """(rest, carved): a seeded ``fraction`` of ``raw`` taken out."""
    n = len(raw)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    k = max(1, int(round(fraction * n)))
    if k >= n:
        raise DataError(f"data: {n} train samples are too few to carve a validation split")
    return SubSet(raw, order[k:]), SubSet(raw, order[:k])


def arrange(src: SourceData, spec: DataSpec) -> tuple[dict[str, Any], dict[str, str]]:
    """The three raw splits from what the source gave (module docstring), and where each came from."""
    given = src.splits
    f_train, f_val, _ = spec.split
    if "val" in given and "test" in given:
        return dict(given), {"train": "given", "val": "given", "test": "given"}
    if "test" in given or "val" in given:
        test = given.get("test", given.get("val"))
        train, val = _carve(given["train"], f_val / (f_train + f_val), spec.seed)
        return ({"train": train, "val": val, "test": test},
                {"train": "given, less validation", "val": f"carved from train ({f_val / (f_train + f_val):.3f})",
                 "test": "given" if "test" in given else "the source's val split (no test split given)"})
    raw = given["train"]
    n = len(raw)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed)).numpy()
    n_train, n_val = int(round(f_train * n)), int(round(f_val * n))
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    if any(len(p) == 0 for p in parts):
        raise DataError(f"data: {n} samples are too few for split {spec.split}")
    how = f"split {spec.split} with seed {spec.seed}"
    return ({s: SubSet(raw, p) for s, p in zip(("train", "val", "test"), parts)},
            {"train": how, "val": how, "test": how})


def build_splits(spec: DataSpec, architecture: dict[str, Any] | None = None, *, pin_memory: bool = False) -> Splits:
    """The run's splits. ``architecture``: preprocessing the teacher's architecture declares
    (``transforms.architecture_defaults``); the recipe's own keys win over it."""
    src = SOURCES.get(spec.source)(spec)
    raw, provenance = arrange(src, spec)
    caps = {"train": spec.max_train_samples, "val": spec.max_eval_samples, "test": spec.max_eval_samples}
    for split, cap in caps.items():
        keep = seeded_subset(len(raw[split]), cap, spec.seed + 1)
        if keep is not None:
            raw[split] = SubSet(raw[split], keep)
            provenance[split] += f"; a seeded subset of {cap}"
    if src.boxes is None:  # a detection source checked its classes as it read each box
        for split in ("train", "val", "test"):
            check_labels(raw[split].labels, f"data ({spec.source}) {split} split", src.num_classes)
    num_classes = src.num_classes or 1 + max(int(raw[s].labels.max()) for s in ("train", "val", "test")
                                             if len(raw[s]))
    if src.unlabeled is not None:  # after the cap: unlabeled samples are all kept, for label-free losses
        raw["train"] = _Joined(raw["train"], src.unlabeled)
        provenance["train"] += f"; plus {len(src.unlabeled)} unlabeled samples (label -1)"
    generated = spec.source in ("digits", "synthetic")
    if generated and spec.preprocess not in (None, "none"):
        raise DataError(f"data.preprocess: source {spec.source!r} makes its own images at 'image_size'; "
                        f"preprocess applies to npz, imagefolder, hf and factory data")
    if spec.source == "text":  # tokenized already: the tokenizer is the preprocessing
        from .text import TokenPreprocess

        preprocess: Any = TokenPreprocess(str(spec.tokenizer), spec.max_length, spec.text_column)
    else:
        own = generated or spec.preprocess == "none"  # nothing from the architecture's tables
        preprocess = resolve_preprocess(spec.preprocess_spec(), {} if own else (architecture or {}), {})
    sets = {s: _sample_set(raw[s], preprocess, s, src) for s in ("train", "val", "test")}
    workers = auto_workers(src.decoded) if spec.workers == "auto" else int(spec.workers)
    splits = Splits(sets["train"], sets["val"], sets["test"], num_classes, preprocess, batch_size=spec.batch_size,
                    workers=workers, pin_memory=pin_memory, class_names=src.class_names,
                    calibration_size=spec.calibration_samples,
                    provenance={"source": spec.source, "path": spec.path, "splits": provenance, "notes": src.notes})
    _check_sample(splits, spec)
    return splits


def _sample_set(raw: Any, preprocess: Any, split: str, src: SourceData) -> SampleSet:
    """A split's dataset: images with class labels, or (a detection source) with their boxes as rows."""
    if src.boxes is None:
        return SampleSet(raw, preprocess, split)
    from .detection_set import DetectionSampleSet

    return DetectionSampleSet(raw, preprocess, split, src.boxes, max(1, src.boxes.most_boxes))


def _check_sample(splits: Splits, spec: DataSpec) -> None:
    """One sample through the preprocessing now, so a size or channel problem is a one-line error
    before anything trains."""
    try:
        x = splits.train[0][0]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's or a user dataset's own error
        raise DataError(f"data ({spec.source}): the first train sample cannot be read ("
                        f"{first_line(exc, with_type=True)})") from None
    if not torch.isfinite(x).all():
        raise DataError(f"data ({spec.source}): the first train sample holds NaN or Inf values")


def splits_from_arrays(train: tuple[Any, Any], val: tuple[Any, Any] | None = None,
                       test: tuple[Any, Any] | None = None, *, batch_size: int = 64,
                       num_classes: int | None = None) -> Splits:
    """Splits over arrays already in hand (the Python API, tests): ``(x, y)`` per split, float NCHW
    and integer labels; a missing val or test split reuses train. No preprocessing."""
    from .base import ArraySet
    from .transforms import Preprocess

    def raw(pair: tuple[Any, Any]) -> ArraySet:
        x, y = pair
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
        y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        return ArraySet(x, check_labels(y, "splits_from_arrays"))

    sets = {"train": raw(train), "val": raw(val or train), "test": raw(test or train)}
    classes = num_classes or 1 + max(int(s.labels.max()) for s in sets.values())
    identity = Preprocess(None, None, "bilinear", None, None, None, {})
    return Splits(*(SampleSet(sets[s], identity, s) for s in ("train", "val", "test")), classes, identity,
                  batch_size=batch_size)
