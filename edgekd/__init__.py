"""edgekd: make a trained PyTorch model fit an edge device, and prove it with measurements.

Public API (the CLI only wraps these): ``compress``, ``bench``, ``load_recipe``, ``load_target``,
``load_budget``, ``build_report``, ``evaluate_budget``.
"""

from .version import __version__  # noqa: F401
from .config.schema import load_budget
from .backends import load_target  # noqa: E402
from .errors import EdgekdError  # noqa: E402


def __getattr__(name: str):
    """Import the heavier entry points on first use, so ``import edgekd`` stays cheap."""
    if name == "load_recipe":  # with every stage's recipe keys registered
        from .run.recipe import load_recipe

        return load_recipe
    if name == "compress":
        from .run.pipeline import compress

        return compress
    if name == "bench":
        from .measure.measurement import bench

        return bench
    if name in ("build_report", "load_report"):
        from .report import build as report

        return getattr(report, name)
    if name == "evaluate_budget":
        from .report.gate import evaluate_budget

        return evaluate_budget
    raise AttributeError(name)


__all__ = ["EdgekdError", "bench", "build_report", "compress", "evaluate_budget", "load_budget", "load_recipe",
           "load_report", "load_target"]
