"""The quantize stage and what only it uses: Brevitas quantization (quantization, quant_capture,
brevitas_rules) and accuracy-driven mixed precision."""

from . import stage  # noqa: F401  (registration)
