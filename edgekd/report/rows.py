"""What a report row means for a user: its status (ok, noisy, degraded, failed, unavailable) and whether
its speed-up is more than the model's cut in work can explain. Read by the report, the tables, the page
and gate."""

from __future__ import annotations

from typing import Any


# a row whose accuracy is more than this below the teacher's on the same target is degraded (recipe key
# ``degraded_below_teacher``; runs that did not record it: this)
DEGRADED_BELOW_TEACHER = 0.05
ROW_STATUSES = ("ok", "noisy", "degraded", "failed", "unavailable")


def row_status(row: dict[str, Any], teacher_accuracy: float | None, degraded_below: float) -> str:
    """What a result row means for a user, worst first: ``failed``/``unavailable`` (not usable, not
    measured), ``degraded`` (measured, but its accuracy is more than ``degraded_below`` under the teacher's
    on the same target: usable only if that loss is acceptable), ``noisy`` (its latency broke the
    drift/spread rule: re-measure before trusting the number), ``ok`` (usable as measured)."""
    if row.get("status") != "ok":
        return row.get("status") or "failed"
    accuracy = row.get("accuracy")
    if teacher_accuracy is not None and accuracy is not None and teacher_accuracy - accuracy > degraded_below + 1e-12:
        return "degraded"
    # runs before the flag was recorded: the latency warnings all end in this phrase
    noisy = row.get("noisy", any("re-measure before trusting it" in w for w in row.get("warnings") or []))
    return "noisy" if noisy else "ok"


# INT8 arithmetic is at most about 4x FP32's on the CPUs and GPUs targeted; memory effects add a little
INT8_ARITHMETIC_GAIN = 4.0
SPEEDUP_MARGIN = 1.5


def unexplained_speedup(report: dict[str, Any], row: dict[str, Any], speedup: float) -> str | None:
    """Why a speed-up over the teacher is more than the cut in work can explain (the MACs ratio, times
    ``INT8_ARITHMETIC_GAIN`` for an INT8 row, with ``SPEEDUP_MARGIN``), or None: 19x and 70x for a 3.7x cut
    in MACs were shown unmarked. Such a row was timed while the machine changed speed, or the teacher's
    time is inflated: the table marks the cell ``?``."""
    macs = {v["name"]: v.get("macs") for v in report["variants"]}
    teacher, own = macs.get("teacher-fp32"), macs.get(row["variant"])
    if not teacher or not own:
        return None
    explained = teacher / own * (INT8_ARITHMETIC_GAIN if row.get("precision") == "int8" else 1.0) * SPEEDUP_MARGIN
    if speedup <= explained:
        return None
    return (f"speed-up {speedup:.1f}x is more than the cut in work explains (at most {explained:.1f}x: MACs "
            f"{teacher / own:.1f}x fewer{', INT8' if row.get('precision') == 'int8' else ''}); re-measure")
