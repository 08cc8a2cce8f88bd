"""Two finished runs side by side: per variant x target, size, accuracy and p50 latency of each, their
ratio, and what got worse in B. A reading aid for a pull request's run against main's; ``gate
--baseline`` is the noise-aware verdict on a saved baseline, with repeats and machine checks.

What counts as worse uses ``gate``'s tolerances: a row B failed that A measured; accuracy lower by more
than ``accuracy_drop``; size larger by more than ``size_growth``; p50 slower by more than ``min_effect``
on the same machine, with the 95% interval of the ratio of the calls' medians above 1 where both rows
kept their calls (a p50 alone when they did not)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from .baseline import Tolerances, median_ratio_interval

SCHEMA = "edgekd.compare/1"
MB = 1 << 20


def compare_rows(a: dict[str, Any], b: dict[str, Any], tol: Tolerances = Tolerances()) -> list[dict[str, Any]]:
    """One row per variant x target in either report (missing on one side: None there), with units in
    the keys (``size_mb_*``, ``p50_ms_*``) and ``regressions``: what is worse in B, in words."""
    sizes = [{v["name"]: v["size_bytes"] for v in r["variants"]} for r in (a, b)]
    rows = [{(r["variant"], r["target"]): r for r in rep["results"]} for rep in (a, b)]
    out = []
    for variant, target in dict.fromkeys([*rows[0], *rows[1]]):
        ra, rb = rows[0].get((variant, target)), rows[1].get((variant, target))
        sa, sb = sizes[0].get(variant), sizes[1].get(variant)
        la, lb = _p50(ra), _p50(rb)
        row = {"variant": variant, "target": target,
               "size_mb_a": sa / MB if sa else None, "size_mb_b": sb / MB if sb else None,
               "size_ratio": sb / sa if sa and sb else None,
               "accuracy_a": _accuracy(ra), "accuracy_b": _accuracy(rb), "p50_ms_a": la, "p50_ms_b": lb,
               "p50_ratio": lb / la if la and lb else None, "p50_ratio_interval": None,
               "status_a": _status(ra), "status_b": _status(rb),
               "same_machine": bool(ra and rb and (ra.get("fingerprint") or {}).get("machine_id")
                                    == (rb.get("fingerprint") or {}).get("machine_id"))}
        if row["p50_ratio"] is not None and row["same_machine"]:
            row["p50_ratio_interval"] = _ratio_interval(rb, ra)
        row["regressions"] = _regressions(row, ra, tol)
        out.append(row)
    return out


def _p50(r: dict[str, Any] | None) -> float | None:
    return (r.get("latency_ms") or {}).get("p50") if r and r["status"] == "ok" else None


def _accuracy(r: dict[str, Any] | None) -> float | None:
    return r.get("accuracy") if r and r["status"] == "ok" else None


def _status(r: dict[str, Any] | None) -> str:
    return (r.get("row_status") or r["status"]) if r else "absent"


def _ratio_interval(rb: dict[str, Any], ra: dict[str, Any]) -> list[float] | None:
    """The 95% interval of B's over A's median call, where both rows kept 20 calls or more."""
    now, then = (np.asarray(r.get("latency_samples_ms") or [], dtype=np.float64) for r in (rb, ra))
    if len(now) < 20 or len(then) < 20:
        return None
    _, lo, hi = median_ratio_interval(now, then)
    return [lo, hi]


def _regressions(row: dict[str, Any], ra: dict[str, Any] | None, tol: Tolerances) -> list[str]:
    """What is worse in B than in A, in words (empty: nothing)."""
    worse = []
    if ra is not None and ra["status"] == "ok" and row["status_b"] not in ("ok", "noisy", "degraded"):
        worse.append(f"B {row['status_b']}")
    if row["accuracy_a"] is not None and row["accuracy_b"] is not None \
            and row["accuracy_a"] - row["accuracy_b"] > tol.accuracy_drop + 1e-12:
        worse.append(f"accuracy {row['accuracy_b'] - row['accuracy_a']:+.4f} (allowed -{tol.accuracy_drop})")
    if row["size_ratio"] is not None and row["size_ratio"] - 1 > tol.size_growth:
        worse.append(f"size {row['size_ratio'] - 1:+.1%} (allowed +{tol.size_growth:.0%})")
    lo = (row["p50_ratio_interval"] or [row["p50_ratio"]])[0]
    if row["p50_ratio"] is not None and row["same_machine"] and row["p50_ratio"] > 1 + tol.min_effect and lo > 1.0:
        worse.append(f"p50 {row['p50_ratio']:.3f}x A (allowed {1 + tol.min_effect:.2f}x)")
    return worse


def comparison_document(rows: list[dict[str, Any]], run_a: str, run_b: str, tol: Tolerances) -> dict[str, Any]:
    """What ``compare --json`` writes: the rows, the tolerances they were judged by, and the verdict."""
    return {"schema": SCHEMA, "a": run_a, "b": run_b, "tolerances": asdict(tol), "rows": rows,
            "regressed": any(r["regressions"] for r in rows)}
