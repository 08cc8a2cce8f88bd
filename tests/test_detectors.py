"""Issue 27, detectors: torchvision's single-stage families with the detection task's output contract.
What each family's rows must reproduce is torchvision's own eval-mode detections (its decode, its
score), and its training losses must come out of the wrapped model unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.models.detectors import Detector, torchvision_detector

FAMILIES = ["ssdlite320_mobilenet_v3_large", "fcos_resnet50_fpn", "retinanet_resnet50_fpn_v2"]
SIZE, CLASSES = 128, 3


@pytest.fixture(scope="module", params=FAMILIES)
def detector(request) -> Detector:
    torch.manual_seed(0)
    return torchvision_detector(request.param, CLASSES, SIZE).eval()


def test_each_row_is_a_box_in_input_pixels_and_a_score_per_class(detector):
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = detector(x)
    assert out.shape == (2, detector.anchors.shape[0], 4 + CLASSES)
    assert float(out[..., :4].min()) >= 0.0 and float(out[..., :4].max()) <= SIZE
    assert float(out[..., 4:].min()) >= 0.0 and float(out[..., 4:].max()) <= 1.0


def test_torchvisions_own_detections_are_rows_of_the_output(detector):
    """torchvision's eval-mode detections (its decode, score, threshold and NMS) on the same input: each
    one is a row of ours with the same box and the same score for its class."""
    torch.manual_seed(1)
    x = torch.rand(1, 3, SIZE, SIZE)
    detector.model.score_thresh = 1e-4  # untrained heads start near their prior (0.01): keep what they give
    with torch.no_grad():
        rows = detector(x)[0]
        (theirs,) = detector.model(list(x))
    assert len(theirs["boxes"]) > 0
    shift = 1 if detector.family.background else 0
    for box, score, label in zip(theirs["boxes"][:20], theirs["scores"][:20], theirs["labels"][:20]):
        close = torch.isclose(rows[:, :4], box, atol=1e-3).all(dim=1)
        assert close.any(), f"box {box.tolist()} is not among the rows"
        assert torch.isclose(rows[close, 4 + int(label) - shift], score, atol=1e-5).any()


def test_torchvisions_training_losses_come_out_of_the_batch_rows_with_gradients(detector):
    from edgekd.data.boxes import ImageBoxes, pack

    rows = torch.from_numpy(pack([ImageBoxes.of([(10, 10, 60, 70), (70, 20, 120, 100)], [0, 2]),
                                  ImageBoxes.of([], [])], 2))  # an image without boxes is a valid sample
    losses = detector.losses(torch.rand(2, 3, SIZE, SIZE), rows)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()) and total.requires_grad
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in detector.parameters())
    assert not detector.model.training  # the call put it back in eval mode


def test_the_exported_file_gives_the_same_rows_on_onnx_runtime(detector, tmp_path):
    import onnxruntime as ort

    from edgekd.stages.exporting import export_fp32

    x = torch.rand(1, 3, SIZE, SIZE)
    path = tmp_path / "det.onnx"
    export_fp32(detector, x, path, 17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(ours, detector(x).numpy(), atol=2e-3, rtol=1e-3)


def test_a_two_stage_or_unknown_detector_is_refused_with_the_families_named():
    from edgekd.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a single-stage detector .* SSD, RetinaNet, FCOS"):
        torchvision_detector("fasterrcnn_mobilenet_v3_large_320_fpn", CLASSES, SIZE)


def test_compress_exports_a_torchvision_detector_and_scores_map_on_both_cpu_runtimes(tmp_path):
    """The thinnest end-to-end slice of issue 27: a torchvision detector checkpoint (its own state_dict)
    with a YOLO folder, exported and measured on ONNX Runtime and OpenVINO, each row scored by mAP on the
    file running there. (Untrained weights: the score is near 0, what is tested is that it is computed.)"""
    import json

    from tests.conftest import invoke, write_yaml
    from tests.test_detection_data import write_yolo

    from edgekd.models.detectors import torchvision_detection_model

    torch.manual_seed(0)
    checkpoint = tmp_path / "ssd.pt"
    torch.save(torchvision_detection_model("ssdlite320_mobilenet_v3_large", 3).state_dict(), checkpoint)
    recipe = write_yaml(tmp_path / "r.yaml", {
        "name": "det", "arch": "torchvision:ssdlite320_mobilenet_v3_large",  # yolo data: the task is detection
        "data": {"source": "yolo", "path": str(write_yolo(tmp_path / "data")), "batch_size": 4,
                 "preprocess": {"size": 96}},  # mean, std and letterbox from the architecture
        "teacher_check": False, "stages": [{"stage": "export"}], "targets": ["cpu-onnxruntime", "cpu-openvino"]})
    result = invoke("compress", checkpoint, "-r", recipe, "-o", tmp_path / "run", "--runs", "5", "--seconds", "0.05")
    assert result.exit_code == 0, result.output
    assert "task detection" in result.output and "letterbox True (architecture)" in result.output and "mean [0.5, 0.5, 0.5] (architecture)" in result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rows = {r["target"]: r for r in report["results"]}
    assert set(rows) == {"cpu-onnxruntime", "cpu-openvino"}
    for row in rows.values():
        assert row["status"] in ("ok", "noisy"), row.get("error")
        assert 0.0 <= row["accuracy"] <= 1.0 and set(row["detection"]) == {"map", "map50"}
