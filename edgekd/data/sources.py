"""The data sources, one registry (``edgekd list sources``): each turns a recipe's ``data:`` block
into raw sets per split (``RawSet``), read lazily. A source gives the splits it has; ``build_splits``
completes the rest the same way for every source.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config.schema import DataSpec
from ..errors import DataError, first_line
from ..fileio import LIMITS
from ..registry import Registry, import_named
from .base import ArraySet, RawSet


@dataclass
class SourceData:
    """What a source yields: raw sets for the splits it has (``train`` at least), and what it knows."""

    splits: dict[str, RawSet]
    num_classes: int | None = None
    class_names: list[str] | None = None
    decoded: bool = False                 # samples are files to decode: loader workers pay off
    unlabeled: RawSet | None = None       # joins train with label -1 (label-free losses only)
    boxes: Any = None                     # detection: the BoxTable every split's image ids index
    notes: list[str] = field(default_factory=list)


SourceFn = Callable[[DataSpec], SourceData]
SOURCES: Registry[SourceFn] = Registry("data source", DataError)


# ---------------------------------------------------------------- generated in memory
@SOURCES.register("digits")
def digits(spec: DataSpec) -> SourceData:
    """scikit-learn's 1797 8x8 digits (shipped inside the package), scaled to [0, 1], upsampled to
    ``image_size``, the gray channel repeated ``channels`` times."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    size = spec.generated_size
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, spec.channels, -1, -1).contiguous()
    return SourceData({"train": ArraySet(x.numpy(), d.target.astype(np.int64))}, num_classes=10,
                      class_names=[str(i) for i in range(10)])


@SOURCES.register("synthetic")
def synthetic(spec: DataSpec) -> SourceData:
    """Class-conditional blobs: each class brightens its own patch, so a tiny CNN can learn it."""
    g = torch.Generator().manual_seed(spec.seed)
    n, c, s = spec.samples, spec.channels, spec.generated_size
    y = torch.randint(0, spec.classes, (n,), generator=g)
    x = 0.3 * torch.rand(n, c, s, s, generator=g)
    cells = int(np.ceil(np.sqrt(spec.classes)))
    patch = s // cells
    for k in range(spec.classes):
        r, col = divmod(k, cells)
        x[y == k, :, r * patch:(r + 1) * patch, col * patch:(col + 1) * patch] += 0.7
    return SourceData({"train": ArraySet(x.numpy(), y.numpy())}, num_classes=spec.classes)


# ---------------------------------------------------------------- npz
NPZ_SPLITS = {"train": ("x_train", "y_train"), "val": ("x_val", "y_val"), "test": ("x_test", "y_test")}


class Uint8Images(ArraySet):
    """uint8 pixel arrays, scaled to [0, 1] per sample as they are read."""

    def raw(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.x[i], dtype=np.float32) / 255.0)


@SOURCES.register("npz")
def npz(spec: DataSpec) -> SourceData:
    """``x_train/y_train`` (+ ``x_val/y_val``, ``x_test/y_test``) used as the given splits, or ``x/y``
    split by fractions; optional ``x_unlabeled``. Arrays are (N, C, H, W) or (N, H, W), float (used as
    they are) or uint8 (scaled to [0, 1]). Stored uncompressed (``np.savez``), every array is
    memory-mapped; a compressed file (``np.savez_compressed``) is read into memory, and says so."""
    path = Path(spec.path or "")
    arrays, note = npz_arrays(path)
    given = {split: keys for split, keys in NPZ_SPLITS.items() if keys[0] in arrays}
    if "x" in arrays and given:
        raise DataError(f"{path}: has both 'x' and '{given[next(iter(given))][0]}'; give either x/y (split by "
                        f"fractions) or x_train/y_train (+ x_val/y_val, x_test/y_test)")
    if "x" in arrays:
        given = {"train": ("x", "y")}
    if "train" not in given:
        raise DataError(f"{path}: needs arrays x_train/y_train (+ x_val/y_val, x_test/y_test) or x/y; "
                        f"has {sorted(arrays)}")
    sets: dict[str, RawSet] = {}
    shape = None
    for split, (xk, yk) in given.items():
        if yk not in arrays:
            raise DataError(f"{path}: array '{xk}' has no labels '{yk}'")
        x, y = arrays[xk], arrays[yk]
        _check_images(path, xk, x, shape)
        shape = x.shape[1:]
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{path}: '{yk}' must be one label per sample of '{xk}' ({len(x)},); got {y.shape}")
        sets[split] = (Uint8Images if x.dtype == np.uint8 else ArraySet)(x, np.asarray(y))
    unlabeled = None
    if "x_unlabeled" in arrays:
        u = arrays["x_unlabeled"]
        if u.ndim != len(shape) + 1 or u.shape[1:] != shape:
            raise DataError(f"{path}: 'x_unlabeled' must be (M,{','.join(map(str, shape))}); got {u.shape}")
        unlabeled = (Uint8Images if u.dtype == np.uint8 else ArraySet)(u, np.full(len(u), -1, dtype=np.int64))
    return SourceData(sets, unlabeled=unlabeled, notes=[note] if note else [])


def _check_images(path: Path, key: str, x: Any, shape: tuple | None) -> None:
    if x.dtype.hasobject:
        raise DataError(f"{path}: array '{key}' holds Python objects; save numeric arrays")
    if x.dtype.kind not in "fu" or (x.dtype.kind == "u" and x.dtype != np.uint8):
        raise DataError(f"{path}: array '{key}' must be float or uint8 images; got {x.dtype}")
    if x.ndim not in (3, 4):
        raise DataError(f"{path}: '{key}' must be (N,C,H,W) or (N,H,W); got shape {x.shape}")
    if shape is not None and x.shape[1:] != shape:
        raise DataError(f"{path}: '{key}' samples are {x.shape[1:]}, other splits' {shape}")


def npz_arrays(path: Path) -> tuple[dict[str, Any], str]:
    """Every array of an ``.npz``: memory-mapped where stored uncompressed, else loaded (with a note)."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found (data.path)")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (an .npz is a zip archive of .npy arrays; write it with np.savez)")
    out: dict[str, Any] = {}
    compressed = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            out[name] = _memmap_member(path, info) if info.compress_type == zipfile.ZIP_STORED else None
            if out[name] is None:
                compressed.append(name)
    if compressed:
        try:
            with np.load(path, allow_pickle=False) as loaded:
                for name in compressed:
                    out[name] = loaded[name]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: cannot read arrays ({str(exc)[:160]}); save numeric arrays (no objects)") from None
    note = (f"{path.name}: arrays {', '.join(compressed)} are compressed and were read into memory; save with "
            f"np.savez (uncompressed) to memory-map them" if compressed else "")
    return out, note


def _memmap_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """An uncompressed ``.npy`` member of a zip, memory-mapped where its bytes lie in the file."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DataError(f"{path}: damaged zip entry {info.filename}")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
        except ValueError as exc:
            raise DataError(f"{path}: {info.filename} is not a valid .npy array ({exc})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: array '{info.filename[:-4]}' holds Python objects; save numeric arrays")
    count = 1
    for dim in shape:
        count *= int(dim)
    data_start = offset - (info.header_offset + 30 + name_len + extra_len)
    if data_start + count * dtype.itemsize > info.file_size:  # the header's shape, checked against the bytes there
        raise DataError(f"{path}: array '{info.filename[:-4]}' claims shape {tuple(shape)} ({count * dtype.itemsize} "
                        f"bytes) but its member holds {info.file_size - data_start}; the file is damaged or truncated")
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


# ---------------------------------------------------------------- image folders
class ImageFiles:
    """Image files with labels (an ImageFolder's ``samples``), decoded one at a time."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.paths = [p for p, _ in samples]
        self._labels = np.asarray([c for _, c in samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def raw(self, i: int) -> Any:
        return decode_image(Path(self.paths[i]))

    @property
    def labels(self) -> np.ndarray:
        return self._labels


def decode_image(path: Path) -> Any:
    """One image file decoded, or a DataError (exit 2) naming it: not an image, truncated, empty, or
    over ``limits.image_pixels`` (Pillow's decompression-bomb *warning* is an error here)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read this image ({exc.strerror})") from None
    if size == 0 or size > LIMITS.image_file_bytes:
        raise DataError(f"{path}: {size} bytes; an image file holds 1 to {LIMITS.image_file_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > LIMITS.image_pixels:
                    raise DataError(f"{path}: {im.width}x{im.height} pixels; an image has at most "
                                    f"{LIMITS.image_pixels} (a decompression bomb, or far larger than a model input)")
                im.load()
                return im if im.mode in ("L", "RGB") else im.convert("RGB")
    except DataError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or damaged: Pillow's own words
        raise DataError(f"{path}: a damaged or truncated image ({str(exc)[:120]})") from None


def scan_class_folders(folder: Path, classes: list[str] | None) -> tuple[list[str], list[tuple[str, int]]]:
    """An ImageFolder's classes and (file, class) samples, walked without following directory links:
    torchvision's scan follows them, so a link loop never ended (3.4 GB) and a link to the class's own
    folder silently multiplied its samples. A linked *file* is a sample like any other."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    found = sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False))
    if classes is None:
        classes = found
    else:
        extra = [c for c in found if c not in classes]
        if extra:
            raise DataError(f"{folder}: class folder(s) {', '.join(extra[:5])} are not in train/")
    samples = []
    for index, name in enumerate(classes):
        root = folder / name
        if not root.is_dir():
            continue
        for here, dirs, files in os.walk(root, followlinks=False):
            dirs.sort()
            samples += [(os.path.join(here, f), index) for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
    return classes, samples


@SOURCES.register("imagefolder")
def imagefolder(spec: DataSpec) -> SourceData:
    """torchvision's ImageFolder layout: ``path/train``, ``path/val`` and optional ``path/test``, each
    with one sub-folder per class (the classes of ``train``), or ``path`` itself holding the class
    folders (split by fractions). Class names are recorded in the run."""
    try:
        import torchvision  # noqa: F401 - its list of image extensions
    except ImportError:
        raise DataError("data source imagefolder needs torchvision: pip install 'edgekd[vision]'") from None
    root = Path(spec.path or "")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (data.path for source imagefolder)")
    layout = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in layout:
        if layout:
            raise DataError(f"{root}: has {', '.join(layout)} but no train/ folder")
        layout = {"train": root}

    classes, train = scan_class_folders(layout["train"], None)
    empty = [c for i, c in enumerate(classes) if not any(label == i for _, label in train)]
    if not classes or empty:
        raise DataError(f"{layout['train']}: no image files in class folder(s) {', '.join(empty[:5]) or '(none found)'}")
    sets: dict[str, RawSet] = {"train": ImageFiles(train)}
    for split in ("val", "test"):
        if split in layout:
            sets[split] = ImageFiles(scan_class_folders(layout[split], classes)[1])
    return SourceData(sets, num_classes=len(classes), class_names=list(classes), decoded=True)


# ---------------------------------------------------------------- Hugging Face datasets
VAL_NAMES = ("validation", "val", "valid", "dev")


class HFSet:
    """One split of a Hugging Face dataset: rows read (and images decoded) on demand."""

    def __init__(self, ds: Any, image_column: str, label_column: str) -> None:
        self.ds, self.image_column = ds, image_column
        self._labels = np.asarray(ds[label_column])

    def __len__(self) -> int:
        return len(self.ds)

    def raw(self, i: int) -> Any:
        value = self.ds[i][self.image_column]
        if hasattr(value, "mode"):  # a PIL image (an Image feature)
            return value
        arr = np.asarray(value)
        if arr.dtype == np.uint8:
            return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(2, 0, 1) if arr.ndim == 3 and arr.shape[-1] in (1, 3) \
                else torch.from_numpy(arr.astype(np.float32) / 255.0)
        return torch.from_numpy(arr.astype(np.float32))

    @property
    def labels(self) -> np.ndarray:
        return self._labels


@SOURCES.register("hf")
def hf(spec: DataSpec) -> SourceData:
    """A Hugging Face ``datasets`` dataset: a folder written by ``save_to_disk``, a local folder of
    parquet or arrow files, or a dataset name already in the local cache. Offline only: the hub is
    never contacted. ``image_column``, ``label_column`` and ``split_names`` say where things are."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise DataError("data source hf needs the datasets package: pip install 'edgekd[data]'") from None
    where = Path(spec.path or "")
    try:
        if where.is_dir() and ((where / "dataset_dict.json").is_file() or (where / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(where))
        elif where.is_dir():
            kind = "parquet" if any(where.rglob("*.parquet")) else "arrow"
            loaded = datasets.load_dataset(kind, data_dir=str(where))
        else:
            loaded = datasets.load_dataset(spec.path)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types (missing cache, bad files)
        text = first_line(exc)
        raise DataError(f"data.path {spec.path!r}: cannot open as a local Hugging Face dataset (offline; "
                        f"save_to_disk folder, parquet/arrow folder or cached name): {text}") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    names = dict(spec.split_names)
    names.setdefault("train", "train")
    if "val" not in names:
        names["val"] = next((n for n in VAL_NAMES if n in loaded), "")
    names.setdefault("test", "test")
    if names["train"] not in loaded:
        raise DataError(f"data.path {spec.path!r}: no split {names['train']!r}; it has {', '.join(loaded)} "
                        f"(set data.split_names)")
    train = loaded[names["train"]]
    for col in (spec.image_column, spec.label_column):
        if col not in train.column_names:
            raise DataError(f"data.path {spec.path!r}: no column {col!r}; columns: {', '.join(train.column_names)} "
                            f"(set data.image_column / data.label_column)")
    feature = train.features.get(spec.label_column)
    class_names = list(feature.names) if hasattr(feature, "names") else None
    sets = {split: HFSet(loaded[name], spec.image_column, spec.label_column)
            for split, name in names.items() if name and name in loaded}
    return SourceData(sets, num_classes=len(class_names) if class_names else None, class_names=class_names,
                      decoded=True)


# ---------------------------------------------------------------- anything else
class TorchSet:
    """A user's torch ``Dataset`` whose items are ``(image, label)``."""

    def __init__(self, ds: Any, where: str) -> None:
        self.ds = ds
        targets = getattr(ds, "targets", None)
        labels = targets if targets is not None else [ds[i][1] for i in range(len(ds))]
        self._labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
        self.where = where

    def __len__(self) -> int:
        return len(self.ds)

    def raw(self, i: int) -> Any:
        return self.ds[i][0]

    @property
    def labels(self) -> np.ndarray:
        return self._labels


@SOURCES.register("factory")
def factory(spec: DataSpec) -> SourceData:
    """``path: package.module:function``: called with no arguments, it returns ``{"train": ds, "val":
    ds, "test": ds}`` (val/test optional) or a ``(train, val, test)`` tuple of torch datasets whose
    items are ``(image, label)``; a ``classes`` attribute on train names the classes."""
    fn = import_named(spec.path or "", "data.path", DataError, "package.module:function for source factory")
    try:
        made = fn()
    except TypeError as exc:
        raise DataError(f"data.path {spec.path!r}: {spec.path}() failed ({exc}); it must take no arguments") from None
    if isinstance(made, (tuple, list)):
        made = dict(zip(("train", "val", "test"), made))
    if not isinstance(made, dict) or made.get("train") is None:
        raise DataError(f"data.path {spec.path!r}: must return {{'train': ds, 'val': ds, 'test': ds}} or a tuple")
    sets = {k: TorchSet(v, f"{spec.path}[{k}]") for k, v in made.items() if v is not None and k in NPZ_SPLITS}
    classes = getattr(made["train"], "classes", None)
    return SourceData(sets, num_classes=len(classes) if classes else None,
                      class_names=[str(c) for c in classes] if classes else None, decoded=True)


# ---------------------------------------------------------------- text
@SOURCES.register("text")
def text(spec: DataSpec) -> SourceData:
    """Text for Hugging Face encoders (``edgekd.data.text``): a .csv/.jsonl file or a save_to_disk folder,
    tokenized with ``data.tokenizer`` (default: the ``hf:`` checkpoint's folder) to ``max_length``."""
    from .text import StreamedTexts, TokenSet, label_ids, line_offsets, read_rows, tokenize

    if not spec.tokenizer:
        raise DataError("data.tokenizer: text data needs a tokenizer folder (the hf: checkpoint's own is used "
                        "when the teacher is one)")
    if spec.stream:
        path = Path(spec.path or "")
        corpus = StreamedTexts(path, line_offsets(path, spec.text_column, spec.label_column), spec.text_column,
                               spec.tokenizer, spec.max_length)
        tokenize([corpus.text(i) for i in range(min(256, len(corpus)))], spec.tokenizer, spec.max_length)  # fits?
        return SourceData({"train": corpus}, num_classes=1, notes=[
            f"streamed: {len(corpus)} texts read and tokenized when a batch needs them; no labels (every label is 0)"])
    parts = read_rows(Path(spec.path or ""), spec.text_column, spec.label_column)
    labeled = all(labels is not None for _, labels in parts.values())
    names: list[str] | None = None
    sets: dict[str, RawSet] = {}
    for split in ("train", "val", "test"):  # train first: its labels name the classes
        if split not in parts:
            continue
        texts, labels = parts[split]
        if labeled:
            y, names = label_ids(labels, names)
        else:
            y = np.zeros(len(texts), dtype=np.int64)
        sets[split] = TokenSet(tokenize(texts, spec.tokenizer, spec.max_length), y)
    notes = [] if labeled else ["no label column: every label is 0 (the embedding task and label-free losses)"]
    return SourceData(sets, num_classes=(len(names) if names else None) if labeled else 1, class_names=names,
                      notes=notes)
