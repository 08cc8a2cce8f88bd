"""The quantize stage and the helper only it uses: accuracy-driven mixed precision."""

from . import stage  # noqa: F401  (registration)
from .stage import resolve_hardswish, resolve_input_quant

__all__ = ["resolve_hardswish", "resolve_input_quant"]
