"""FP32 ONNX export with the settings every edgekd file shares (INT8 goes through ``export_qdq``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .quantization import INPUT_NAME, OUTPUT_NAME


def export_fp32(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """TorchScript exporter (``dynamo=False``, INT8-NOTES trap 4), batch 1, named input and output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
