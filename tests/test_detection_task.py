"""Issue 27, the detection task: NMS outside the file, COCO mAP by faster-coco-eval, box parity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.data.boxes import ImageBoxes, pack
from edgekd.tasks import task_for
from edgekd.tasks.detection import BOX, NmsSettings, box_parity, postprocess

CLASSES = 3


def rows_for(truth: list[ImageBoxes], anchors: int = 12, score: float = 0.9) -> np.ndarray:
    """A detector's (N, A, 4 + C) output that finds exactly ``truth``: one row per box scoring ``score``
    for its class, the other rows empty."""
    out = np.zeros((len(truth), anchors, BOX + CLASSES), dtype=np.float32)
    out[:, :, :BOX] = [0, 0, 1, 1]
    for i, t in enumerate(truth):
        for k, (box, cls) in enumerate(zip(t.boxes, t.classes)):
            out[i, k, :BOX] = box
            out[i, k, BOX + cls] = score
    return out


BOXES = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(8, 60), st.integers(8, 60),
                           st.integers(0, CLASSES - 1)), min_size=0, max_size=5)


@given(images=st.lists(BOXES, min_size=1, max_size=4).filter(lambda ims: any(ims)), seed=st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_a_detector_that_finds_every_box_scores_map_1_whatever_the_row_order(images, seed):
    truth = [ImageBoxes.of([(x, y, x + w, y + h) for x, y, w, h, _ in im], [c for *_, c in im]) for im in images]
    # boxes of one class overlapping more than NMS allows would suppress each other: keep them apart here
    truth = [ImageBoxes(t.boxes + np.arange(len(t))[:, None] * 300, t.classes) for t in truth]
    outputs = rows_for(truth)
    outputs = outputs[:, np.random.default_rng(seed).permutation(outputs.shape[1])]  # anchors in any order
    scores = task_for("detection").score(outputs, pack(truth, 5), None)
    assert scores["accuracy"] == pytest.approx(1.0) and scores["detection"]["map50"] == pytest.approx(1.0)


def test_map_counts_a_missed_box_and_a_loose_box_as_coco_does():
    truth = [ImageBoxes.of([(10, 10, 50, 50), (100, 100, 140, 140)], [0, 0])]
    found_one = rows_for([ImageBoxes.of([(10, 10, 50, 50)], [0])])
    # recall reaches 0.5 at precision 1: 51 of COCO's 101 recall points
    assert task_for("detection").score(found_one, pack(truth, 2), None)["accuracy"] == pytest.approx(51 / 101, abs=1e-4)
    # a box of IoU 0.72 with its object: a hit at IoU thresholds 0.50-0.70 (5 of 10), mAP@.5 = 1
    loose = rows_for([ImageBoxes.of([(10, 10, 50, 50), (100, 100, 140, 140 / 0.72 - 100 / 0.72 + 100)], [0, 0])])
    iou = 40 * 40 / (40 * (140 / 0.72 - 100 / 0.72))
    assert iou == pytest.approx(0.72)
    scores = task_for("detection").score(loose, pack(truth, 2), None)["detection"]
    # thresholds 0.50-0.70 find both boxes (AP 1), 0.75-0.95 only the exact one (recall 0.5: AP 51/101)
    assert scores["map50"] == pytest.approx(1.0) and scores["map"] == pytest.approx((5 + 5 * 51 / 101) / 10, abs=1e-4)


def test_nms_suppresses_a_duplicate_of_the_same_class_only():
    out = np.zeros((1, 4, BOX + CLASSES), dtype=np.float32)
    out[0, 0] = [10, 10, 50, 50, 0.9, 0, 0]
    out[0, 1] = [11, 11, 51, 51, 0.8, 0, 0]   # the same object again: suppressed
    out[0, 2] = [11, 11, 51, 51, 0, 0.7, 0]   # another class at the same place: kept
    out[0, 3] = [0, 0, 5, 5, 0.0005, 0, 0]    # under the score threshold
    (found,) = postprocess(out, NmsSettings())
    assert found.classes.tolist() == [0, 1] and found.scores.tolist() == pytest.approx([0.9, 0.7])
    assert len(postprocess(out, NmsSettings(max_detections=1))[0].scores) == 1


def test_box_parity_is_one_for_identical_outputs_and_falls_with_moved_or_relabelled_boxes():
    truth = [ImageBoxes.of([(10, 10, 50, 50), (100, 100, 140, 140)], [0, 1]), ImageBoxes.of([(5, 5, 25, 45)], [2])]
    reference = rows_for(truth)
    task = task_for("detection")
    same = task.agreement(reference, reference.copy())
    assert same.value == 1.0 and same.detail["matched_iou"] == pytest.approx(1.0)
    moved = reference.copy()
    moved[0, 0, :BOX] += 30  # IoU with its reference box well under 0.5
    assert task.agreement(reference, moved).value == pytest.approx(2 * 2 / 6)
    relabelled = reference.copy()
    relabelled[1, 0, BOX:] = [0.9, 0, 0]
    assert task.agreement(reference, relabelled).value == pytest.approx(2 * 2 / 6)
    nothing = np.zeros_like(reference)
    assert box_parity(postprocess(nothing), postprocess(nothing))["f1"] is None


def test_a_model_whose_outputs_are_not_boxes_and_scores_is_named():
    task = task_for("detection")
    assert task.output_problem((1, 10), CLASSES) is not None  # a classifier's logits
    assert "4 + 3" in task.output_problem((1, 100, 8), CLASSES)
    assert task.output_problem((1, 100, 7), CLASSES) is None
    with pytest.raises(Exception, match="no boxes"):
        task.score(rows_for([ImageBoxes.of([], [])]), pack([ImageBoxes.of([], [])], 1), None)
