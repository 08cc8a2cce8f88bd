"""The trade-off plot: accuracy against p50 latency, one full-width panel per target.

What a reviewer reads off it, and what each choice is for:
- the Pareto front as a *step* (the best accuracy within a latency budget jumps at each model; a
  straight line between two models would claim variants that do not exist);
- axes that start at zero latency and span at least ten accuracy points around every row and the
  teacher, so one sample's difference does not fill the panel;
- horizontal error bars from the measured spread (the repeats' p50 range when the run repeated, else
  1.4826 x MAD of the calls), and the row's status in the marker (hollow: noisy; red: degraded);
- marker area by file size, with a legend that says so; labels that stay inside the axes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..fileio import atomic_path

MB = 1 << 20
MIN_ACCURACY_SPAN = 0.10
STATUS_STYLE = {"ok": {"color": "#1f77b4", "filled": True}, "noisy": {"color": "#ff7f0e", "filled": False},
                "degraded": {"color": "#d62728", "filled": True}}


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other row beats on both p50 latency and accuracy (measured rows with both), fastest first."""
    ok = sorted((r for r in rows if r["status"] == "ok" and r.get("accuracy") is not None
                 and (r.get("latency_ms") or {}).get("p50") is not None),
                key=lambda r: (r["latency_ms"]["p50"], -r["accuracy"]))
    front: list[dict[str, Any]] = []
    for r in ok:
        if not front or r["accuracy"] > front[-1]["accuracy"]:
            front.append(r)
    return front


def latency_error(row: dict[str, Any]) -> tuple[float, float]:
    """(below, above) the p50 that the measurement's own spread allows."""
    p50 = row["latency_ms"]["p50"]
    repeats = (row.get("repeats") or {}).get("p50_ms") or []
    if len(repeats) > 1:
        return max(0.0, p50 - min(repeats)), max(0.0, max(repeats) - p50)
    mad = row["latency_ms"].get("mad")
    spread = 1.4826 * mad if mad is not None else p50 * (row["latency_ms"].get("spread") or 0.0)
    return spread, spread


def plotted_rows(report: dict[str, Any], target: str) -> list[dict[str, Any]]:
    return [r for r in report["results"] if r["target"] == target and r["status"] == "ok"
            and r.get("accuracy") is not None and (r.get("latency_ms") or {}).get("p50") is not None]


def accuracy_limits(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """A y range holding every row (the teacher among them) with a margin, at least ``MIN_ACCURACY_SPAN``
    wide, inside [0, 1] (the task's scores are in [0, 1])."""
    values = [r["accuracy"] for r in rows] or [0.5]
    low, high = min(values), max(values)
    pad = max(MIN_ACCURACY_SPAN - (high - low), 0.0) / 2 + 0.02
    low, high = max(0.0, low - pad), min(1.0, high + pad)
    if high - low < MIN_ACCURACY_SPAN:  # pressed against 0 or 1: widen the other way
        low, high = (0.0, MIN_ACCURACY_SPAN) if low == 0.0 else (1.0 - MIN_ACCURACY_SPAN, 1.0)
    return low, high


def draw_target(ax: Any, report: dict[str, Any], target: str, metric: str) -> None:
    """One target's panel on ``ax``."""
    sizes = {v["name"]: v["size_bytes"] / MB for v in report["variants"]}
    largest = max(sizes.values() or [1.0])
    rows = plotted_rows(report, target)
    x_high = max([r["latency_ms"]["p50"] + latency_error(r)[1] for r in rows] or [1.0]) * 1.25
    front = pareto_front(rows)
    if front:
        xs = [r["latency_ms"]["p50"] for r in front] + [x_high]
        ys = [r["accuracy"] for r in front] + [front[-1]["accuracy"]]
        ax.step(xs, ys, where="post", color="0.35", lw=1.2, ls="--", label="Pareto front (best within a latency)")
    y_low, y_high = accuracy_limits(rows)
    for i, r in enumerate(sorted(rows, key=lambda r: r["latency_ms"]["p50"])):
        x, y = r["latency_ms"]["p50"], r["accuracy"]
        style = STATUS_STYLE.get(r.get("row_status") or "ok", STATUS_STYLE["ok"])
        below, above = latency_error(r)
        ax.errorbar([x], [y], xerr=[[below], [above]], fmt="none", ecolor=style["color"], elinewidth=1, capsize=3)
        area = 60 + 540 * sizes.get(r["variant"], 0.0) / largest
        ax.scatter([x], [y], s=area, edgecolors=style["color"], linewidths=1.5,
                   facecolors=style["color"] if style["filled"] else "none", alpha=0.75, zorder=3)
        right = x > 0.6 * x_high
        height = (y - y_low) / (y_high - y_low)
        # neighbours in latency take turns: above, then below (or higher above where there is no room)
        offset = 6 if i % 2 == 0 else (-14 if height > 0.15 else 22)
        offset = -14 if height > 0.85 else offset
        ax.annotate(f"{r['variant']} ({r.get('row_status') or 'ok'})", (x, y), fontsize=10,
                    xytext=(-8 if right else 8, offset), textcoords="offset points",
                    ha="right" if right else "left", annotation_clip=True)
    for mb in sorted({round(largest, 2), round(min(sizes.values() or [largest]), 2)}):
        ax.scatter([], [], s=60 + 540 * mb / largest, facecolors="none", edgecolors="0.4", label=f"file {mb:g} MB")
    ax.set_xlim(0, x_high)
    ax.set_ylim(y_low, y_high)
    ax.set_title(target, fontsize=13, loc="left")
    ax.set_xlabel("p50 latency, batch 1 (ms); bars: measured spread", fontsize=11)
    ax.set_ylabel(f"{metric} on this target", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right", framealpha=0.9)


def target_png(report: dict[str, Any], target: str, metric: str) -> bytes:
    """One target's panel as PNG bytes, 1000 x 450 px (the HTML shows it at full width)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    draw_target(ax, report, target, metric)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_tradeoff_png(report: dict[str, Any], targets: list[str], metric: str, path: Path) -> None:
    """``tradeoff.png``: every target's panel, one below the other at full width."""
    plt = _pyplot()
    targets = targets or ["(none)"]
    fig, axes = plt.subplots(len(targets), 1, figsize=(10, 4.5 * len(targets)), squeeze=False)
    for ax, target in zip(axes[:, 0], targets):
        draw_target(ax, report, target, metric)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
