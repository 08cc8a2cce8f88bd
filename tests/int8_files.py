"""An INT8 file made the way the quantize and export stages make it, for tests that read what a runtime runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from edgekd.stages.export.int8_layouts import write_u8s8
from edgekd.artifacts.qdq_rules import layout_path
from edgekd.stages.quantize.quantization import calibrate, quantize_model, QuantSpec
from edgekd.stages.export.int8_layouts import export_qdq


def int8_files(model: torch.nn.Module, x: torch.Tensor, path: Path) -> tuple[torch.nn.Module, Path]:
    """PTQ of ``model`` (unsigned input, calibrated on ``x`` in batches of 4), exported to ``path`` (the
    s8s8 file OpenVINO gets) and its u8s8 twin for ONNX Runtime; returns the fake-quant model and ``path``."""
    qmodel = quantize_model(model.eval(), QuantSpec(unsigned_input=True), example=x[:1])
    calibrate(qmodel, x.split(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qdq(qmodel, x[:1], path, 17)
    write_u8s8(path, layout_path(path, "u8s8"))
    return qmodel, path
