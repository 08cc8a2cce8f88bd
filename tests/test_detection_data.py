"""Issue 27, detection data: the YOLO and COCO layouts, boxes that travel with their pixels through every
geometry, and each bad-input case named by file and line (or annotation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.config.schema import DataSpec
from edgekd.data import build_splits
from edgekd.data.boxes import ImageBoxes, move_boxes, unpack
from edgekd.data.transforms import Preprocess
from edgekd.errors import DataError

NAMES = ["zero", "one", "two"]
# per split, per image: (width, height, [(class, x1, y1, x2, y2), ...]) in pixels
LAYOUT = {
    "train": [(80, 60, [(0, 5, 5, 30, 25)]), (60, 90, [(1, 10, 40, 50, 80), (2, 2, 2, 20, 12)]), (64, 64, []),
              (100, 50, [(2, 60, 10, 95, 45)])],
    "val": [(70, 70, [(0, 20, 20, 60, 50)]), (50, 80, [])],
    "test": [(90, 40, [(1, 0, 0, 45, 40), (0, 50, 5, 90, 35)])],
}


def draw(width: int, height: int, boxes: list[tuple]) -> np.ndarray:
    """A dark image with each box filled bright (the class in the red channel), so a box's pixels can be
    found again after resizing."""
    image = np.full((height, width, 3), 20, np.uint8)
    for cls, x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = (200 + 20 * cls, 230, 230)
    return image


def write_yolo(root: Path, layout=LAYOUT, names=NAMES) -> Path:
    from PIL import Image

    for split, images in layout.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for k, (w, h, boxes) in enumerate(images):
            Image.fromarray(draw(w, h, boxes)).save(root / "images" / split / f"im{k}.png")
            lines = [f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                     for c, x1, y1, x2, y2 in boxes]
            if boxes or k % 2:  # an image with no boxes: sometimes no label file, sometimes an empty one
                (root / "labels" / split / f"im{k}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    (root / "data.yaml").write_text(yaml.safe_dump({"names": names}))
    return root


def write_coco(root: Path, layout=LAYOUT, names=NAMES) -> Path:
    from PIL import Image

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": 10 + i, "name": n} for i, n in enumerate(names)]  # ids need not start at 0
    ann_id = 1
    for split, images in layout.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        doc = {"images": [], "annotations": [], "categories": categories}
        for k, (w, h, boxes) in enumerate(images):
            Image.fromarray(draw(w, h, boxes)).save(root / split / f"im{k}.png")
            doc["images"].append({"id": 100 + k, "file_name": f"im{k}.png", "width": w, "height": h})
            for c, x1, y1, x2, y2 in boxes:
                doc["annotations"].append({"id": ann_id, "image_id": 100 + k, "category_id": 10 + c,
                                           "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0, "area": 1.0})
                ann_id += 1
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def splits_of(source: str, path: Path, **preprocess):
    return build_splits(DataSpec.model_validate({"source": source, "path": str(path), "batch_size": 3,
                                                  "workers": 0, "preprocess": preprocess or None}))


def test_yolo_and_coco_layouts_give_the_same_boxes_and_images_without_boxes_are_samples(tmp_path):
    yolo = splits_of("yolo", write_yolo(tmp_path / "yolo"), size=64, letterbox=True)
    coco = splits_of("coco", write_coco(tmp_path / "coco"), size=64, letterbox=True)
    for splits in (yolo, coco):
        assert splits.num_classes == 3 and splits.class_names == NAMES
        assert [splits.size(s) for s in ("train", "val", "test")] == [4, 2, 1]  # every split given: kept
        x, y, idx = next(iter(splits.loader("train")))
        assert x.shape == (3, 3, 64, 64) and y.shape == (3, 2, 5) and y.dtype == torch.float32
        assert len(unpack(splits.labels("train")[2])) == 0  # the 64x64 image with no boxes
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(yolo.labels(split).numpy(), coco.labels(split).numpy(), atol=1e-3)
    # the 80x60 image letterboxed to 64: scale 0.8, 48 rows, 8 rows of padding above
    np.testing.assert_allclose(yolo.labels("train")[0, 0].numpy(), [0, 4, 12, 24, 28], atol=1e-3)
    assert yolo.provenance["notes"][-1].startswith("7 images, 7 boxes (at most 2 in one image), 2 image(s) with no")


def test_a_train_only_layout_is_carved_and_the_ids_follow_the_images(tmp_path):
    layout = {"train": [(40 + 4 * k, 40, [(k % 3, 2, 2, 12 + k, 20)]) for k in range(20)]}
    splits = build_splits(DataSpec.model_validate({"source": "yolo", "path": str(write_yolo(tmp_path, layout)),
                                                   "workers": 0, "split": [0.6, 0.2, 0.2]}))
    assert [splits.size(s) for s in ("train", "val", "test")] == [12, 4, 4]
    for split in ("train", "val", "test"):  # each sample's boxes are its own image's, wherever it was carved to
        data = splits.set(split)
        for i in range(len(data)):
            x, rows, _ = data[i]
            truth = unpack(rows)
            k = (x.shape[-1] - 40) // 4  # the image's own width says which it is
            assert truth.classes.tolist() == [k % 3] and truth.boxes[0, 2] == pytest.approx(12 + k, abs=1e-3)


def at_most_a_sliver(image: torch.Tensor) -> bool:
    """True when the bright pixels (> 0.5) of a 2-D image span at most 2 pixels in one direction: what
    a box under a pixel wide or high can leave after interpolation."""
    rows, cols = torch.nonzero(image > 0.5, as_tuple=True)
    return not len(rows) or int(rows.max() - rows.min()) < 2 or int(cols.max() - cols.min()) < 2


PREPROCESS = st.sampled_from([{"size": 48, "letterbox": True}, {"size": 48}, {"size": 40, "resize": 56}, {}])


@given(height=st.integers(24, 120), width=st.integers(24, 120), data=st.data(), preprocess=PREPROCESS)
@settings(max_examples=80, deadline=None)
def test_a_box_lands_where_its_pixels_do_through_every_geometry(height, width, data, preprocess):
    """The mechanism: one list of resize/crop/pad steps (Preprocess.geometry) moves the pixels (edgekd's
    own resize) and the boxes (torchvision's box functions). A filled box drawn into the image must be
    bright inside its moved box and dark well outside it, whatever the size, aspect and mode; a box a
    crop cuts away must be gone from both."""
    x1 = data.draw(st.integers(0, width - 8))
    y1 = data.draw(st.integers(0, height - 8))
    x2 = data.draw(st.integers(x1 + 6, width))
    y2 = data.draw(st.integers(y1 + 6, height))
    image = torch.zeros(1, height, width)
    image[:, y1:y2, x1:x2] = 1.0
    pre = Preprocess(preprocess.get("size"), preprocess.get("resize"), "bilinear", None, None, None, {},
                     letterbox=preprocess.get("letterbox"))
    out = pre(image)[0]
    moved = move_boxes(ImageBoxes.of([(x1, y1, x2, y2)], [0]), (height, width), pre.geometry(height, width))
    if preprocess.get("size"):
        assert out.shape == (preprocess["size"], preprocess["size"])
    if not len(moved):  # cropped away: at most a sliver under a pixel wide is left in the input
        assert at_most_a_sliver(out)
        return
    bx1, by1, bx2, by2 = moved.boxes[0]
    rows, cols = torch.meshgrid(torch.arange(out.shape[0]) + 0.5, torch.arange(out.shape[1]) + 0.5, indexing="ij")
    margin = 1.5  # bilinear interpolation blurs one source pixel into about one output pixel
    inside = (cols > bx1 + margin) & (cols < bx2 - margin) & (rows > by1 + margin) & (rows < by2 - margin)
    outside = (cols < bx1 - margin) | (cols > bx2 + margin) | (rows < by1 - margin) | (rows > by2 + margin)
    if inside.any():
        assert float(out[inside].min()) > 0.9
    if outside.any():
        assert float(out[outside].max()) < 0.1 + (0.45 if pre.letterbox else 0.0)  # the letterbox's gray


def test_letterbox_is_recorded_and_refuses_a_crop(tmp_path):
    splits = splits_of("yolo", write_yolo(tmp_path), size=64, letterbox=True)
    assert splits.preprocess.deployment_json()["letterbox"] is True
    assert splits.preprocess.deployment_json()["letterbox_fill"] == pytest.approx(114 / 255)
    with pytest.raises(DataError, match="letterbox needs data.preprocess.size .* and no resize"):
        splits_of("yolo", tmp_path, size=64, resize=80, letterbox=True)
    # classification records are unchanged: no letterbox key unless it is on
    assert "letterbox" not in splits_of("yolo", tmp_path, size=64).preprocess.to_json()


def yolo_with(tmp_path: Path, label_text: str, image_name: str = "im0") -> Path:
    root = write_yolo(tmp_path)
    (root / "labels" / "train" / f"{image_name}.txt").write_text(label_text)
    return root


@pytest.mark.parametrize("label_text, message", [
    ("0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.4 0.2\n", r"labels/train/im0\.txt:2: box \[.*\] .* lies outside the 80x60 image"),
    ("\n1 0.5 0.5 0.0 0.3\n", r"labels/train/im0\.txt:2: box .* has zero or negative area"),
    ("7 0.5 0.5 0.2 0.2\n", r"labels/train/im0\.txt:1: unknown class id '7'; valid ids are 0\.\.2"),
    ("0 0.5 0.5 0.2\n", r"labels/train/im0\.txt:1: 4 fields; a box line is 'class cx cy w h'"),
    ("0 0.1 0.1 0.5 0.1 0.5 0.5\n", r"im0\.txt:1: 7 fields \(a polygon: segmentation labels are not boxes\)"),
    ("0 0.5 zero 0.2 0.2\n", r"im0\.txt:1: .* cx cy w h must be numbers"),
    ("0 0.5 nan 0.2 0.2\n", r"im0\.txt:1: box .* not a finite number"),
])
def test_each_bad_yolo_label_is_named_by_file_and_line(tmp_path, label_text, message):
    with pytest.raises(DataError, match=message):
        splits_of("yolo", yolo_with(tmp_path, label_text))


def test_a_yolo_label_file_without_its_image_is_an_error(tmp_path):
    root = yolo_with(tmp_path, "0 0.5 0.5 0.2 0.2\n", image_name="lost")
    with pytest.raises(DataError, match=r"labels/train/lost\.txt: a label file without an image"):
        splits_of("yolo", root)


def test_a_bad_yolo_data_yaml_is_named(tmp_path):
    root = write_yolo(tmp_path)
    (root / "data.yaml").write_text("nc: 4\nnames: [a, b, c]\n")
    with pytest.raises(DataError, match=r"data\.yaml: key 'nc' is 4 but 'names' lists 3 classes"):
        splits_of("yolo", root)
    (root / "data.yaml").write_text("path: .\n")
    with pytest.raises(DataError, match=r"data\.yaml: key 'names' must list the class names"):
        splits_of("yolo", root)


def coco_with(tmp_path: Path, change) -> Path:
    root = write_coco(tmp_path)
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return root


def _ann(doc: dict, i: int) -> dict:
    return doc["annotations"][i]


@pytest.mark.parametrize("change, message", [
    (lambda d: _ann(d, 0).update(bbox=[70, 5, 20, 10]), r"instances_train\.json: annotations\[0\] \(id 1\): box "
                                                         r"\[70, 5, 90, 15\] .* outside the 80x60 image"),
    (lambda d: _ann(d, 1).update(bbox=[10, 40, 0, 40]), r"annotations\[1\] \(id 2\): box .* zero or negative area"),
    (lambda d: _ann(d, 0).update(category_id=99), r"annotations\[0\] \(id 1\): unknown category id 99; the file's "
                                                  r"categories are 10 \(zero\), 11 \(one\), 12 \(two\)"),
    (lambda d: _ann(d, 0).update(image_id=555), r"annotations\[0\] \(id 1\): image_id 555 is not among"),
    (lambda d: _ann(d, 0).update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 1\): 'bbox' must be \[x, y, width, height\]"),
    (lambda d: d["images"][0].update(file_name="gone.png"), r"images\[0\] \(id 100\): image file .*gone\.png not found"),
    (lambda d: d["categories"][2].update(name="deux"), r"instances_val\.json: key 'categories' differs from instances_train\.json"),
])
def test_each_bad_coco_annotation_is_named(tmp_path, change, message):
    with pytest.raises(DataError, match=message):
        splits_of("coco", coco_with(tmp_path, change))


def test_coco_crowd_regions_are_left_out_and_counted(tmp_path):
    root = coco_with(tmp_path, lambda d: _ann(d, 0).update(iscrowd=1))
    splits = splits_of("coco", root)
    assert len(unpack(splits.labels("train")[0])) == 0
    assert "train: 1 crowd annotation(s) left out (iscrowd: 1)" in splits.provenance["notes"]


def test_an_image_whose_annotated_size_is_wrong_is_named_before_anything_trains(tmp_path):
    root = coco_with(tmp_path, lambda d: d["images"][0].update(width=81))
    with pytest.raises(DataError, match=r"im0\.png: the image is 80x60 pixels, its annotation says 81x60"):
        splits_of("coco", root)  # the first train sample is read before anything trains


def test_the_cli_names_a_bad_label_line_and_exits_2(tmp_path):
    from tests.conftest import invoke

    root = yolo_with(tmp_path, "0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.4 0.2\n")
    result = invoke("compress", "--data", f"yolo:{root}", "--dry-run")
    assert result.exit_code == 2, result.output
    assert "im0.txt:2: box" in result.output and "Traceback" not in result.output


AUGMENT = st.fixed_dictionaries({"hflip": st.booleans(), "shift": st.integers(0, 8),
                                 "crop_scale": st.sampled_from([None, (0.3, 1.0), (0.6, 0.9)])})


@given(spec=AUGMENT, seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=60, deadline=None)
def test_augmentation_moves_each_box_with_its_pixels(spec, seed, data):
    """Zoom (random-resized crop), shift and flip of a detection batch are one list of steps for the
    pixels and the boxes: each image's bright box is bright inside its moved row and dark outside it,
    and a box the crop leaves (almost) nothing of is dropped from the rows."""
    from edgekd.config.schema import Augment
    from edgekd.data.boxes import augment_detection_batch

    h, w = 48, 64
    x = torch.zeros(2, 1, h, w)
    truth = []
    for i in range(2):
        x1, y1 = data.draw(st.integers(0, w - 12)), data.draw(st.integers(0, h - 12))
        x2, y2 = data.draw(st.integers(x1 + 10, w)), data.draw(st.integers(y1 + 10, h))
        x[i, :, y1:y2, x1:x2] = 1.0
        truth.append(ImageBoxes.of([(x1, y1, x2, y2)], [i]))
    from edgekd.data.boxes import pack

    out, rows = augment_detection_batch(x, torch.from_numpy(pack(truth, 2)), Augment(**spec),
                                        torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and rows.shape == (2, 2, 5)
    for i in range(2):
        moved = unpack(rows[i])
        image = out[i, 0]
        if not len(moved):
            assert at_most_a_sliver(image)  # the box (almost) left the crop
            continue
        assert moved.classes.tolist() == [i]
        bx1, by1, bx2, by2 = moved.boxes[0]
        r, c = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        margin = 1.5 if spec["crop_scale"] is None else 3.0  # a zoom blurs a pixel over more than one
        inside = (c > bx1 + margin) & (c < bx2 - margin) & (r > by1 + margin) & (r < by2 - margin)
        outside = (c < bx1 - margin) | (c > bx2 + margin) | (r < by1 - margin) | (r > by2 + margin)
        if inside.any():
            assert float(image[inside].min()) > 0.9
        if outside.any():
            assert float(image[outside].max()) < 0.1


@pytest.mark.parametrize("task, source, message", [
    ("classification", "yolo", "task 'classification' scores data labelled with classes; data.source 'yolo' has "
                               "boxes (boxes: yolo, coco): use task: detection or leave task out"),
    ("detection", "digits", "task 'detection' scores data labelled with boxes; data.source 'digits' has classes"),
])
def test_a_task_that_does_not_fit_the_labels_is_refused_before_anything_is_read(tmp_path, task, source, message):
    from tests.conftest import invoke, write_yaml

    data = {"source": source, "path": str(tmp_path)} if source == "yolo" else {"source": source}
    recipe = write_yaml(tmp_path / "r.yaml", {"name": "r", "task": task, "data": data,
                                              "stages": [{"stage": "export"}], "targets": []})
    result = invoke("compress", "-r", recipe, "--dry-run")
    assert result.exit_code == 2 and message in result.output, result.output
