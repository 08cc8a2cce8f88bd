"""How closely one set of logits follows a reference: top-1 agreement, SQNR, largest difference.

Used twice on purpose: at export (the ONNX file, interpreted exactly, against its torch model) and at
measurement (each backend's own kernels against the same torch model), so a user can tell a bad
export from a runtime that executes the file differently.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np



def sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``output`` against ``reference``, in dB (inf if equal)."""
    noise = float(np.mean((reference - output) ** 2))
    signal = float(np.mean(reference ** 2))
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10.0 * math.log10(signal / noise)


def parity(reference: np.ndarray, output: np.ndarray) -> dict[str, Any]:
    """The comparison as JSON-safe numbers: ``sqnr_db`` is null when the outputs are identical, -999 when
    the reference is all zeros and the output is not."""
    sqnr = sqnr_db(reference, output)
    return {"samples": int(len(reference)), "top1_agreement": float(np.mean(output.argmax(1) == reference.argmax(1))),
            "sqnr_db": None if sqnr == math.inf else (-999.0 if sqnr == -math.inf else sqnr), "max_abs_diff": float(np.max(np.abs(output - reference)))}
