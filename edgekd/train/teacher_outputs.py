"""Teacher outputs for training: cached once when inputs do not change, computed online when they do.

Without augmentation a teacher sees the same train sample every epoch, so its logits and tapped
features are computed once for the whole split and looked up by sample index; that makes a KD epoch
cost about what a plain epoch costs. The cache lives in memory while it is small (under
``EDGEKD_TEACHER_CACHE_MB``, default 1024) and past that in memory-mapped fp16 files under the run
directory (``cache_dir``), so peak memory does not grow with the dataset; stages of one run (and a
``--resume``) share it through the memo the run context holds. With augmentation the teacher runs on
every batch. The choice is made here, automatically, and logged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Splits
from ..models.features import Tap, capture
from ..fileio import atomic_path
from .device import CPU, Device


def cache_limit_mb() -> float:
    from ..config.environment import TEACHER_CACHE_MB

    return TEACHER_CACHE_MB.read()


@torch.no_grad()
def _run(teachers: list[nn.Module], taps: list[Tap], x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    feats: dict[str, torch.Tensor] = {}
    with capture(teachers[0], taps, feats):
        logits = [t.eval()(x) for t in teachers]
    return logits, {k: v.detach() for k, v in feats.items()}


@dataclass(frozen=True)
class TeacherRun:
    """How one training gets its teachers' outputs: the ``key`` they are valid for (teacher and data),
    whether inputs are ``augmented`` (then the teacher runs on every batch), the run's ``memo`` (a QAT
    stage reuses distill's outputs) and disk cache folder, and the device they are computed on."""

    key: str
    augmented: bool = False
    memo: dict | None = None
    cache_dir: Path | None = None
    device: Device = CPU


@dataclass
class TeacherOutputs:
    """Logits of each teacher (the run's teacher first) and the main teacher's tapped features."""

    teachers: list[nn.Module]
    taps: list[Tap]
    key: str                     # hash of the teacher checkpoint, data and seed: what the cache is valid for
    online: bool
    reason: str
    device: Device = CPU
    storage: str = "none"        # none (online) | memory | disk
    _logits: list[Any] = field(default_factory=list)        # tensors, or fp16 memmaps
    _features: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(cls, teachers: list[nn.Module], taps: list[Tap], splits: Splits, *, augmented: bool, key: str,
                memo: dict[tuple, "TeacherOutputs"] | None = None, cache_dir: Path | None = None,
                device: Device = CPU) -> "TeacherOutputs":
        for t in teachers:
            t.to(device.torch_device)
        if augmented:
            return cls(teachers, taps, key, True, "inputs are augmented, so the teacher runs on every batch", device)
        n = splits.size("train")
        memo_key = (key, tuple(t.key for t in taps), tuple(id(t) for t in teachers), n)
        if memo is not None and memo_key in memo:  # the memo holds the teachers, so their ids cannot be reused
            return memo[memo_key]
        logits, feats = _run(teachers, taps, splits.example(1).to(device.torch_device))
        per_sample = sum(t.numel() for t in logits) + sum(f.numel() for f in feats.values())
        mb = per_sample * n * 4 / 2 ** 20
        on_disk = mb > cache_limit_mb()
        if on_disk and cache_dir is None:
            return cls(teachers, taps, key, True, f"cached outputs would take {mb:.0f} MB (> EDGEKD_TEACHER_CACHE_MB="
                       f"{cache_limit_mb():.0f}) and no run folder holds a disk cache, so the teacher runs on every batch",
                       device)
        where = f"memory-mapped fp16 files under {cache_dir} ({mb / 2:.0f} MB)" if on_disk else f"memory ({mb:.2f} MB)"
        out = cls(teachers, taps, key, False, f"inputs are not augmented, so teacher outputs are computed once into "
                  f"{where} and reused every epoch", device, "disk" if on_disk else "memory")
        shapes = {**{f"logits{k}": tuple(t.shape[1:]) for k, t in enumerate(logits)},
                  **{f"feature:{k}": tuple(v.shape[1:]) for k, v in feats.items()}}
        if on_disk:
            out._fill_disk(splits, shapes, cache_dir / f"teacher-{_digest(memo_key[:2], n, shapes)}")
        else:
            out._fill_memory(splits, shapes)
        if memo is not None:
            memo.clear()
            memo[memo_key] = out
        return out

    def _fill(self, splits: Splits, stores: dict[str, Any], to_store: Any) -> None:
        """Run the teachers once over the train split, writing each output's rows (by sample index)
        into ``stores`` (keyed like the shapes: ``logits<k>``, ``feature:<tap>``) through ``to_store``."""
        for x, _, idx in splits.loader("train", 256):
            with self.device.autocast():
                logits, feats = _run(self.teachers, self.taps, x.to(self.device.torch_device))
            outputs = {**{f"logits{k}": t for k, t in enumerate(logits)},
                       **{f"feature:{name}": v for name, v in feats.items()}}
            for name, value in outputs.items():
                stores[name][to_store(idx)] = to_store(value.float().cpu())

    def _keep(self, stores: dict[str, Any]) -> None:
        self._logits = [stores[f"logits{k}"] for k in range(len(self.teachers))]
        self._features = {k[8:]: v for k, v in stores.items() if k.startswith("feature:")}

    def _fill_memory(self, splits: Splits, shapes: dict[str, tuple]) -> None:
        n = splits.size("train")
        stores = {k: torch.empty(n, *s) for k, s in shapes.items()}
        self._fill(splits, stores, lambda t: t)
        self._keep(stores)

    def _fill_disk(self, splits: Splits, shapes: dict[str, tuple], folder: Path) -> None:
        """fp16 memmaps, one per output; a folder whose ``done.json`` matches is reused as it is (--resume)."""
        n = splits.size("train")
        done = folder / "done.json"
        names = {k: folder / f"{k.replace(':', '_').replace('/', '_')}.f16" for k in shapes}
        ready = done.is_file() and json.loads(done.read_text()).get("shapes") == {k: list(s) for k, s in shapes.items()}
        folder.mkdir(parents=True, exist_ok=True)
        maps = {k: np.memmap(names[k], dtype=np.float16, mode="r" if ready else "w+", shape=(n, *s))
                for k, s in shapes.items()}
        if not ready:
            self._fill(splits, maps, lambda t: t.numpy())  # float32 rows, stored as fp16 by the memmap
            for m in maps.values():
                m.flush()
            with atomic_path(done) as tmp:
                tmp.write_text(json.dumps({"shapes": {k: list(s) for k, s in shapes.items()}, "samples": n}))
            maps = {k: np.memmap(names[k], dtype=np.float16, mode="r", shape=(n, *s)) for k, s in shapes.items()}
        self._keep(maps)

    def _rows(self, store: Any, index: torch.Tensor) -> torch.Tensor:
        rows = store[index] if isinstance(store, torch.Tensor) else \
            torch.from_numpy(np.asarray(store[index.numpy()], dtype=np.float32))
        return rows.to(self.device.torch_device, non_blocking=True)

    def __call__(self, index: torch.Tensor, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Outputs for train samples ``index`` whose (possibly augmented) inputs are ``x``."""
        if self.online:
            return _run(self.teachers, self.taps, x)
        return [self._rows(t, index) for t in self._logits], {k: self._rows(v, index) for k, v in self._features.items()}

    def all_features(self, tap: Tap, splits: Splits) -> torch.Tensor:
        """One tapped feature of the main teacher over the whole (unaugmented) train split."""
        if not self.online and tap.key in self._features:
            store = self._features[tap.key]
            return store if isinstance(store, torch.Tensor) else torch.from_numpy(np.asarray(store, dtype=np.float32))
        parts = []
        for x, _, _ in splits.loader("train", 256):
            parts.append(_run(self.teachers[:1], [tap], x.to(self.device.torch_device))[1][tap.key].float().cpu())
        return torch.cat(parts)

    def to_cpu(self) -> None:
        """Teachers back on the CPU once training ends (export and measurement run there)."""
        for t in self.teachers:
            t.to("cpu")


def _digest(key: tuple, n: int, shapes: dict[str, tuple]) -> str:
    return hashlib.sha256(json.dumps([str(key), n, sorted(shapes.items())]).encode()).hexdigest()[:16]
