"""The CLI package: importing it registers every command on ``app``."""

from .app import app, main
from . import baseline, bench, compress, gate, listing, report  # noqa: E402,F401  (registers the commands)

__all__ = ["app", "main"]
