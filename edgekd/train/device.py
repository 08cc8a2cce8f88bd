"""Where training runs: ``device: auto | cpu | cuda | cuda:N`` and what goes with a GPU.

``auto`` picks CUDA when torch sees one. On CUDA, training uses autocast (``amp: bf16`` by default,
``fp16`` with a gradient scaler, or ``none``) and channels-last memory; on the CPU neither (CPU
results then repeat bit for bit at a fixed thread count). Under torchrun each rank takes the GPU its
``LOCAL_RANK`` names.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import InputError


@dataclass(frozen=True)
class Device:
    """The resolved training device and its numeric settings."""

    torch_device: torch.device
    amp: str  # none | bf16 | fp16

    @property
    def cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cuda else torch.contiguous_format

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.amp == "none" or not self.cuda:
            yield
            return
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            yield

    def to_json(self) -> dict[str, str]:
        return {"device": str(self.torch_device), "amp": self.amp if self.cuda else "none"}


CPU = Device(torch.device("cpu"), "none")


def resolve_device(spec: str = "auto", amp: str = "bf16") -> Device:
    """``spec`` -> a ``Device``; asking for CUDA where torch sees none is the user's error (exit 2)."""
    spec = spec.lower()
    if spec == "cpu":
        return CPU
    if spec == "auto" and not torch.cuda.is_available():
        return CPU
    if spec.startswith("cuda") or spec == "auto":
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r}: torch sees no CUDA GPU here (torch {torch.__version__}); "
                             f"use device: cpu or auto")
        index = int(spec.split(":", 1)[1]) if ":" in spec else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            raise InputError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        torch.cuda.set_device(index)
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            amp = "fp16"
        return Device(torch.device("cuda", index), amp)
    raise InputError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N")
