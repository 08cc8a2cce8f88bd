"""The export stage and what only it uses: FP32 ONNX export settings (exporting), ONNX graph folds, the INT8
layouts each runtime is given (int8_layouts, int8_placement), and the check that a file computes what its
model computes (parity, int8_fidelity)."""

from . import stage  # noqa: F401  (registration)
