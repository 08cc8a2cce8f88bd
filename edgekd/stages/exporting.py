"""ONNX and torch.export files with the settings every edgekd file shares: the input and output names,
the TorchScript exporter, text models' three inputs (INT8 goes through ``export/int8_layouts.export_qdq``).
Shared by the export stage, prune's latency probes and preflight."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_fp32(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """TorchScript exporter (``dynamo=False``, INT8-NOTES trap 4), batch 1, named input and output; a
    text model with its three named inputs and dynamic batch and sequence axes (``text.export_signature``)."""
    from ..data.packed import export_signature

    args, names, axes = export_signature(example, INPUT_NAME, OUTPUT_NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, opset_version=opset,
                          input_names=names, output_names=[OUTPUT_NAME], dynamic_axes=axes)


def export_program(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """A ``torch.export`` program (``.pt2``) for the torch baseline backend: the model's own graph
    and weights, reloadable without its class; batch dim left to torch (``Dim.AUTO``) so batch-N
    throughput can run where the model allows it."""
    from torch.export import Dim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair = torch.cat([example, example])  # a batch-1 sample would make torch specialise the batch dim to 1
        program = torch.export.export(model.eval(), (pair,), dynamic_shapes=({0: Dim.AUTO},))
        torch.export.save(program, str(path))
