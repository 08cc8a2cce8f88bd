"""Detection data: the YOLO text layout (``yolo:DIR``) and COCO JSON (``coco:DIR``), sources in the data
registry like the others. Images are decoded when a batch needs them; every label is read and checked
when the source is opened, so a bad box is a one-line error naming its file and line (or annotation)
before anything trains. Images with no boxes are valid samples.

Each image gets one id across the source's splits (its ``labels`` entry), and ``BoxTable`` holds every
image's boxes and size by that id: carving, subsetting and ordering move ids, and the detection sample
set looks the boxes up, so no split needs to know which folder its images came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config.schema import DataSpec
from ..errors import DataError
from ..fileio import LIMITS
from .boxes import ImageBoxes, checked_box, checked_class
from .sources import SOURCES, SourceData, decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")


@dataclass
class BoxTable:
    """Every image of a detection source, by id: its file, (height, width) and ground truth."""

    files: list[Path]
    sizes: list[tuple[int, int]]
    truth: list[ImageBoxes]

    def add(self, file: Path, size: tuple[int, int], truth: ImageBoxes) -> int:
        self.files.append(file)
        self.sizes.append(size)
        self.truth.append(truth)
        return len(self.files) - 1

    @property
    def most_boxes(self) -> int:
        return max((len(t) for t in self.truth), default=0)


class DetectionImages:
    """One split's images as a raw set: ``raw(i)`` decodes the image, ``labels`` are the images' ids in
    the ``BoxTable``."""

    def __init__(self, table: BoxTable, ids: list[int]) -> None:
        self.table, self.ids = table, np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def raw(self, i: int) -> Any:
        image_id = int(self.ids[i])
        image = decode_image(self.table.files[image_id])
        if (image.height, image.width) != self.table.sizes[image_id]:
            h, w = self.table.sizes[image_id]
            raise DataError(f"{self.table.files[image_id]}: the image is {image.width}x{image.height} pixels, its "
                            f"annotation says {w}x{h}; its boxes would land in the wrong place")
        return image if image.mode == "RGB" else image.convert("RGB")

    @property
    def labels(self) -> np.ndarray:
        return self.ids


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image file's header (nothing decoded), or a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {str(exc)[:120]})") from None


def _image_files(folder: Path) -> dict[str, Path]:
    """Image files under ``folder`` by their path relative to it without the suffix (what a YOLO label
    file is named after), walked without following directory links."""
    found: dict[str, Path] = {}
    for here, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                path = Path(here) / name
                found[str(path.relative_to(folder).with_suffix(""))] = path
    return found


# ---------------------------------------------------------------- YOLO layout
def yolo_names(path: Path) -> list[str]:
    """The class names of a YOLO ``data.yaml`` (``names``: a list, or a mapping 0..C-1 -> name)."""
    from ..config.schema import read_yaml

    data = read_yaml(path, DataError)
    names = data.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: key 'names' must map the ids 0..{len(names) - 1} to names; has ids "
                            f"{sorted(names)[:8]}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise DataError(f"{path}: key 'names' must list the class names (a list, or a mapping id -> name)")
    if data.get("nc") is not None and data["nc"] != len(names):
        raise DataError(f"{path}: key 'nc' is {data['nc']} but 'names' lists {len(names)} classes")
    return [str(n) for n in names]


def yolo_label_file(path: Path, size: tuple[int, int], names: list[str]) -> ImageBoxes:
    """One YOLO label file: a ``class cx cy w h`` line per box (normalised to 0..1), blank lines allowed."""
    if path.stat().st_size > LIMITS.label_file_bytes:
        raise DataError(f"{path}: {path.stat().st_size} bytes; a label file holds at most {LIMITS.label_file_bytes}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); a YOLO label file is text") from None
    height, width = size
    rows, classes = [], []
    known = f"data.yaml names {len(names)} classes"
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5:
            shape = " (a polygon: segmentation labels are not boxes)" if len(fields) > 5 and len(fields) % 2 else ""
            raise DataError(f"{where}: {len(fields)} fields{shape}; a box line is 'class cx cy w h' "
                            f"(centre and size normalised to 0..1)")
        cls = checked_class(fields[0], len(names), where, known)
        try:
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise DataError(f"{where}: {line.strip()!r}: cx cy w h must be numbers (normalised to 0..1)") from None
        box = checked_box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                          size, where)
        rows.append(box)
        classes.append(cls)
    return ImageBoxes.of(rows, classes)


@SOURCES.register("yolo")
def yolo(spec: DataSpec) -> SourceData:
    """Ultralytics' YOLO layout: ``data.yaml`` (``names``), ``images/{train,val,test}/`` and
    ``labels/{train,val,test}/`` with one ``NAME.txt`` per image ``NAME.jpg`` (none: no boxes). A label
    file without its image is an error (the image was lost, or the file is misplaced)."""
    root = Path(spec.path or "")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (data.path for source yolo: data.yaml, images/, labels/)")
    names = yolo_names(root / "data.yaml")
    present = [s for s in SPLITS if (root / "images" / s).is_dir()]
    if "train" not in present:
        raise DataError(f"{root}: no images/train/ folder (the YOLO layout: images/{{train,val,test}}/ and "
                        f"labels/{{train,val,test}}/)")
    table = BoxTable([], [], [])
    sets = {}
    for split in present:
        images = _image_files(root / "images" / split)
        labels_dir = root / "labels" / split
        label_files = {str(p.relative_to(labels_dir).with_suffix("")): p
                       for p in sorted(labels_dir.rglob("*.txt"))} if labels_dir.is_dir() else {}
        orphan = next((p for key, p in label_files.items() if key not in images), None)
        if orphan is not None:
            raise DataError(f"{orphan}: a label file without an image (expected images/{split}/"
                            f"{orphan.relative_to(labels_dir).with_suffix('.jpg')} or another image type)")
        if not images:
            raise DataError(f"{root / 'images' / split}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        ids = []
        for key, image in images.items():
            size = image_size(image)
            truth = (yolo_label_file(label_files[key], size, names) if key in label_files
                     else ImageBoxes.of([], []))
            ids.append(table.add(image, size, truth))
        sets[split] = DetectionImages(table, ids)
    return SourceData(sets, num_classes=len(names), class_names=names, decoded=True, boxes=table,
                      notes=_box_notes(table))


# ---------------------------------------------------------------- COCO JSON
def _coco_document(path: Path) -> dict[str, Any]:
    if path.stat().st_size > LIMITS.annotation_file_bytes:
        raise DataError(f"{path}: {path.stat().st_size} bytes; an annotation file holds at most "
                        f"{LIMITS.annotation_file_bytes}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a COCO JSON file ({str(exc)[:120]})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{path}: key {key!r} must be a list (COCO instances format)")
    return data


def coco_categories(path: Path, data: dict[str, Any]) -> dict[int, str]:
    """COCO category id -> name, in id order."""
    out: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DataError(f"{path}: categories[{i}] needs an integer 'id' and a 'name'")
        out[cat["id"]] = str(cat["name"])
    if not out:
        raise DataError(f"{path}: key 'categories' is empty; list the classes the boxes are of")
    return dict(sorted(out.items()))


def _coco_image_folder(root: Path, split: str) -> Path:
    """Where a split's ``file_name``s live: ``DIR/{split}/``, ``DIR/images/{split}/`` or ``DIR/images/``."""
    for folder in (root / split, root / "images" / split, root / "images"):
        if folder.is_dir():
            return folder
    raise DataError(f"{root}: no image folder for split {split!r} (looked for {split}/, images/{split}/, images/)")


def coco_split(root: Path, split: str, categories: dict[int, str], table: BoxTable) -> tuple[list[int], int]:
    """One split's images into ``table``; returns their ids and how many crowd annotations were left out."""
    path = root / "annotations" / f"instances_{split}.json"
    data = _coco_document(path)
    if coco_categories(path, data) != categories:
        raise DataError(f"{path}: key 'categories' differs from instances_train.json's; every split must use the "
                        f"same category ids and names")
    index = {cat_id: i for i, cat_id in enumerate(categories)}
    folder = _coco_image_folder(root, split)
    images: dict[Any, tuple[Path, tuple[int, int]]] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "width", "height"} <= set(im):
            raise DataError(f"{path}: images[{i}] needs 'id', 'file_name', 'width' and 'height'")
        file = folder / str(im["file_name"])
        if not file.is_file():
            raise DataError(f"{path}: images[{i}] (id {im['id']}): image file {file} not found")
        images[im["id"]] = (file, (int(im["height"]), int(im["width"])))
    rows: dict[Any, list[tuple[float, ...]]] = {k: [] for k in images}
    classes: dict[Any, list[int]] = {k: [] for k in images}
    crowd = 0
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else '?'})"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            raise DataError(f"{where}: image_id {ann.get('image_id') if isinstance(ann, dict) else '?'!r} is not "
                            f"among the file's images")
        if ann.get("iscrowd"):
            crowd += 1  # a crowd region is no object to detect (COCO's own evaluation ignores it)
            continue
        if ann.get("category_id") not in index:
            raise DataError(f"{where}: unknown category id {ann.get('category_id')!r}; the file's categories are "
                            f"{', '.join(f'{k} ({v})' for k, v in list(categories.items())[:10])}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise DataError(f"{where}: 'bbox' must be [x, y, width, height] in pixels; got {str(bbox)[:60]}")
        x, y, w, h = (float(v) for v in bbox)
        rows[ann["image_id"]].append(checked_box(x, y, x + w, y + h, images[ann["image_id"]][1], where))
        classes[ann["image_id"]].append(index[ann["category_id"]])
    ids = [table.add(file, size, ImageBoxes.of(rows[k], classes[k])) for k, (file, size) in images.items()]
    if not ids:
        raise DataError(f"{path}: key 'images' is empty")
    return ids, crowd


@SOURCES.register("coco")
def coco(spec: DataSpec) -> SourceData:
    """COCO instances JSON: ``DIR/annotations/instances_{train,val,test}.json`` and the images their
    ``file_name``s name under ``DIR/{split}/`` (or ``DIR/images/{split}/``, ``DIR/images/``). Category ids
    become classes 0..C-1 in id order; crowd regions are left out (and counted in the run's notes)."""
    root = Path(spec.path or "")
    train = root / "annotations" / "instances_train.json"
    if not train.is_file():
        raise DataError(f"{root}: no annotations/instances_train.json (the COCO layout: annotations/"
                        f"instances_{{train,val,test}}.json and the images they name)")
    categories = coco_categories(train, _coco_document(train))
    table = BoxTable([], [], [])
    sets, notes = {}, []
    for split in SPLITS:
        if split == "train" or (root / "annotations" / f"instances_{split}.json").is_file():
            ids, crowd = coco_split(root, split, categories, table)
            sets[split] = DetectionImages(table, ids)
            if crowd:
                notes.append(f"{split}: {crowd} crowd annotation(s) left out (iscrowd: 1)")
    return SourceData(sets, num_classes=len(categories), class_names=list(categories.values()), decoded=True,
                      boxes=table, notes=notes + _box_notes(table))


def _box_notes(table: BoxTable) -> list[str]:
    empty = sum(1 for t in table.truth if not len(t))
    boxes = sum(len(t) for t in table.truth)
    return [f"{len(table.files)} images, {boxes} boxes (at most {table.most_boxes} in one image)"
            + (f", {empty} image(s) with no boxes" if empty else "")]
