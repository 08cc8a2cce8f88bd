"""Baselines: what a later run is compared with, and the regression verdicts ``gate --baseline`` gives.

A baseline is written only by ``edgekd baseline save`` (never by ``gate``): per variant x target the
size, accuracy, latency statistics, up to 1 000 raw timing samples and the machine's fingerprint.

Latency is judged on a ratio new / baseline with a 95% interval. When both runs timed each file several
times (``latency.repeats`` / ``--repeats`` >= 3), the change is that of the repeats' p50s with an interval
from their scatter (``rounds_shift_interval``: Hodges-Lehmann, Welch t below 4 a side): the scatter
between whole measurements holds the machine's drift, which is what makes a shared runner's second measurement differ from its first. With one
measurement a side, the ratio is that of the medians of the stored calls with a moving-block bootstrap
interval (blocks of consecutive calls, so that runs of slow calls widen it instead of being shuffled away
as an i.i.d. bootstrap would); the verdict then says that drift between measurements is not in it. A
regression needs both: the ratio above ``1 + min_effect`` (default 5%, what a user would call slower)
and the interval's lower end above 1 (beyond the measured noise). A baseline measured on another
machine is not compared in milliseconds: each variant's p50 relative to teacher-fp32's in the same run
is compared instead, and the verdict says so. Before either, a student whose teacher file is the same
bytes in both runs is judged by its time relative to that teacher round by round (_teacher_ratio_verdict).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReportError
from ..fileio import write_json
from .gate import BASELINE, Verdict, judged
from .build import read_document

SCHEMA = "edgekd.baseline/1"
RESAMPLES = 2000
BLOCKS = 20  # blocks per sample set in the moving-block bootstrap
MIN_REPEATS = 3  # repeats on both sides before the interval comes from the scatter between them


@dataclass(frozen=True)
class Tolerances:
    min_effect: float = 0.05          # latency: the smallest slowdown worth failing a build for
    accuracy_drop: float = 0.005      # absolute, per target
    size_growth: float = 0.01         # relative


def baseline_of(report: dict[str, Any]) -> dict[str, Any]:
    """The baseline document of a finished run's report."""
    sizes = {v["name"]: v["size_bytes"] for v in report["variants"]}
    rows = []
    for r in report["results"]:
        if r["status"] != "ok":
            continue
        rows.append({"variant": r["variant"], "target": r["target"], "size_bytes": sizes.get(r["variant"]),
                     "accuracy": r.get("accuracy"), "latency_ms": r.get("latency_ms"),
                     "latency_samples_ms": r.get("latency_samples_ms") or [],
                     "repeats_p50_ms": (r.get("repeats") or {}).get("p50_ms") or [],
                     "repeats_mean_ms": (r.get("repeats") or {}).get("mean_ms") or [],
                     "machine_id": (r.get("fingerprint") or {}).get("machine_id"),
                     # which file was timed: a teacher with the same bytes in both runs is the yardstick
                     "artifact_sha256": (r.get("fingerprint") or {}).get("artifact_sha256")})
    return {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run": report.get("run", {}), "rows": rows}


def save_baseline(report: dict[str, Any], path: Path) -> Path:
    return write_json(path, baseline_of(report))


def _row_model() -> Any:
    """The schema of a baseline row: what ``baseline_of`` writes, with every number finite and every
    size and time positive (NaN, zero or negative timings made any run "within noise")."""
    from typing import Annotated, Optional

    from pydantic import BaseModel, ConfigDict, Field

    Positive = Annotated[float, Field(gt=0.0)]

    class Latency(BaseModel):
        model_config = ConfigDict(extra="allow", allow_inf_nan=False)
        p50: Positive

    class Row(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
        variant: str
        target: str
        size_bytes: Optional[Annotated[int, Field(gt=0)]] = None
        accuracy: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None
        latency_ms: Latency
        latency_samples_ms: list[Positive]
        repeats_p50_ms: list[Positive] = []
        repeats_mean_ms: list[Positive] = []  # none in baselines saved before they were recorded
        machine_id: Optional[str] = None
        artifact_sha256: Optional[str] = None  # baselines saved before it was recorded have none

    return Row


def load_baseline(path: Path) -> dict[str, Any]:
    """A baseline file checked against its schema (exit 2 naming the first bad key)."""
    from pydantic import ValidationError

    data = read_document(path, "baseline file not found (write one with 'edgekd baseline save RUN_DIR')")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("rows"), list):
        raise ReportError(f"{path}: not an edgekd baseline (key 'schema' must be {SCHEMA!r}, 'rows' a list)")
    if not data["rows"]:
        raise ReportError(f"{path}: key 'rows' is empty; save a baseline from a run with measured rows")
    row_model = _row_model()
    for i, row in enumerate(data["rows"]):
        try:
            row_model.model_validate(row)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(p) for p in e["loc"])
            raise ReportError(f"{path}: rows[{i}].{where}: {e['msg']} (got {str(e.get('input'))[:40]}); write "
                              f"baselines with 'edgekd baseline save'") from None
    if not isinstance(data.get("run", {}), dict):
        raise ReportError(f"{path}: key 'run' must be a mapping")
    return data


def provenance_notes(report: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """What differs between the run that made the baseline and this one (recipe, checkpoint, edgekd):
    a regression verdict against another recipe's or model's numbers is legal, but the user is told."""
    now, then = report.get("run", {}) or {}, baseline.get("run", {}) or {}
    notes = []
    if then.get("recipe") != now.get("recipe"):
        notes.append(f"the baseline was made by recipe {then.get('recipe')!r}, this run by {now.get('recipe')!r}")
    sha = lambda run: (run.get("checkpoint") or {}).get("sha256") if isinstance(run.get("checkpoint"), dict) else None  # noqa: E731
    if sha(then) != sha(now):
        notes.append("the baseline was made from another checkpoint (its SHA-256 differs)")
    data = lambda run: (run.get("inputs") or {}).get("data") if isinstance(run.get("inputs"), dict) else None  # noqa: E731
    if data(then) != data(now):
        notes.append("the baseline was measured on other data (its data hash differs)")
    if then.get("edgekd") != now.get("edgekd"):
        notes.append(f"the baseline was made by edgekd {then.get('edgekd')}, this run by {now.get('edgekd')}")
    return notes


def median_ratio_interval(new: np.ndarray, old: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """median(new) / median(old) and its 95% moving-block bootstrap interval."""
    rng = np.random.default_rng(seed)

    def medians(x: np.ndarray) -> np.ndarray:
        block = max(1, len(x) // BLOCKS)
        starts = rng.integers(0, len(x) - block + 1, size=(RESAMPLES, max(1, len(x) // block)))
        picks = (starts[:, :, None] + np.arange(block)).reshape(RESAMPLES, -1)
        return np.median(x[picks], axis=1)

    ratios = medians(new) / medians(old)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(np.median(new) / np.median(old)), float(lo), float(hi)


def repeats_ratio_interval(new: list[float], old: list[float]) -> tuple[float, float, float]:
    """Geometric-mean ratio of the repeats' p50s, new / old, and its 95% Welch t interval (on logs).

    Each repeat is a whole measurement, so the scatter between repeats holds the machine's drift between
    measurements, which an interval from the calls of one measurement cannot see (gate_power.py measured
    the same file 0.63x-1.55x of itself minutes apart, every time with a tight within-measurement interval).
    """
    from scipy import stats

    a, b = np.log(np.asarray(new, dtype=np.float64)), np.log(np.asarray(old, dtype=np.float64))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = a.mean() - b.mean(), float(np.sqrt(va + vb))
    if se == 0.0:
        return float(np.exp(diff)), float(np.exp(diff)), float(np.exp(diff))
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return float(np.exp(diff)), float(np.exp(diff - half)), float(np.exp(diff + half))


HL_MIN_ROUNDS = 4  # a side, for the rank interval to reach 95% (3 against 3 reaches only 90%)


def rounds_shift_interval(new: list[float], old: list[float]) -> tuple[float, float, float, str]:
    """The change new / old of two runs' per-round ratios, robust to an outlier round: the
    Hodges-Lehmann estimate (the median of all n x m differences of their logarithms) with its
    distribution-free 95% interval (the differences' order statistics at the Mann-Whitney critical
    value); with fewer than ``HL_MIN_ROUNDS`` rounds a side, the Welch interval. Returns the change,
    the interval and the method's name.

    Why: one round that a stall or a co-tenant's burst hits moves a mean of logs and inflates a
    variance; with Welch on 8 rounds a side, one such round (30% off) let through half of the true
    slowdowns it otherwise caught, while the rank interval still caught 88-95% (benchmarks/gate_power.py).
    """
    a, b = np.log(np.asarray(new, dtype=np.float64)), np.log(np.asarray(old, dtype=np.float64))
    n, m = len(a), len(b)
    if min(n, m) < HL_MIN_ROUNDS:
        return (*repeats_ratio_interval(new, old), "Welch t")
    diffs = np.sort((a[:, None] - b[None, :]).ravel())
    k = max(0, int(np.floor(n * m / 2 - 1.959964 * np.sqrt(n * m * (n + m + 1) / 12))))
    return (float(np.exp(np.median(diffs))), float(np.exp(diffs[k])), float(np.exp(diffs[-k - 1])),
            "Hodges-Lehmann")


def compare_with_baseline(report: dict[str, Any], baseline: dict[str, Any],
                          tolerances: Tolerances = Tolerances()) -> list[Verdict]:
    """One verdict per variant x target the two share: size, accuracy and latency regressions."""
    old = {(r["variant"], r["target"]): r for r in baseline["rows"]}
    sizes = {v["name"]: v["size_bytes"] for v in report["variants"]}
    new = {(r["variant"], r["target"]): r for r in report["results"]}
    shared = [k for k in new if k in old]
    if not shared:
        raise ReportError("the baseline shares no variant x target with this run; valid pairs in the baseline: "
                          + ", ".join(f"{v}@{t}" for v, t in list(old)[:6]))
    uncovered = [f"{v}@{t}" for v, t in new if (v, t) not in old and new[(v, t)]["status"] == "ok"]
    if uncovered:  # judging only the rows both have would pass a run on its teacher alone
        raise ReportError(f"the baseline has no row for {', '.join(uncovered[:4])} of this run; save a baseline "
                          f"from a run with the same variants and targets")
    out: list[Verdict] = []
    for variant in dict.fromkeys(v for v, _ in shared):
        before = next(old[k]["size_bytes"] for k in shared if k[0] == variant)
        if before and sizes.get(variant):
            growth = sizes[variant] / before - 1
            out.append(Verdict(f"baseline.size.{variant}", growth <= tolerances.size_growth,
                               f"{variant}: {sizes[variant]} bytes vs {before} ({growth:+.1%}; "
                               f"allowed +{tolerances.size_growth:.0%})"))
    for variant, target in shared:
        r, b = new[(variant, target)], old[(variant, target)]
        name = f"baseline.{variant}@{target}"
        if r["status"] != "ok":
            out.append(Verdict(f"{name}.latency", False, f"{variant}@{target}: {r['status']} ({r.get('error')})"))
            continue
        if r.get("accuracy") is not None and b.get("accuracy") is not None:
            drop = b["accuracy"] - r["accuracy"]
            out.append(Verdict(f"{name}.accuracy", drop <= tolerances.accuracy_drop + 1e-12,
                               f"{judged(f'{variant}@{target}', r)}: accuracy {r['accuracy']:.4f} vs {b['accuracy']:.4f} "
                               f"({-drop:+.4f}; allowed -{tolerances.accuracy_drop})"))
        out.append(_latency_verdict(name, report, baseline, r, b, tolerances))
    return out


def _latency_verdict(name: str, report: dict[str, Any], baseline: dict[str, Any], r: dict[str, Any],
                     b: dict[str, Any], tol: Tolerances) -> Verdict:
    where = judged(f"{r['variant']}@{r['target']}", r)
    by_teacher = _teacher_ratio_verdict(name, where, report, baseline, r, b, tol)
    if by_teacher is not None:  # the same teacher file, timed in the same rounds, on both sides
        return by_teacher
    machine_now = (r.get("fingerprint") or {}).get("machine_id")
    if machine_now != b.get("machine_id"):
        # another machine: milliseconds do not compare; the speed relative to the teacher in each run does
        teacher_now = next((x for x in report["results"] if x["variant"] == BASELINE and x["target"] == r["target"]
                            and x["status"] == "ok"), None)
        teacher_then = next((x for x in baseline["rows"] if x["variant"] == BASELINE and x["target"] == r["target"]),
                            None)
        if teacher_now is None or teacher_then is None or r["variant"] == BASELINE:
            return Verdict(f"{name}.latency", True, f"{where}: not compared: the baseline was measured on machine "
                                                    f"{b.get('machine_id')}, this run on {machine_now}, and there is "
                                                    f"no {BASELINE} row in both to compare ratios with")
        now = r["latency_ms"]["p50"] / teacher_now["latency_ms"]["p50"]
        then = b["latency_ms"]["p50"] / teacher_then["latency_ms"]["p50"]
        change = now / then
        return Verdict(f"{name}.latency", change <= 1 + tol.min_effect,
                       f"{where}: judged by ratios (baseline from machine {b.get('machine_id')}, this run "
                       f"{machine_now}): {now:.3f}x {BASELINE} vs {then:.3f}x then, change {change:.3f} "
                       f"(allowed {1 + tol.min_effect:.2f})")
    repeats_now = (r.get("repeats") or {}).get("p50_ms") or []
    repeats_then = b.get("repeats_p50_ms") or []
    if len(repeats_now) >= MIN_REPEATS and len(repeats_then) >= MIN_REPEATS:
        ratio, lo, hi, method = rounds_shift_interval(repeats_now, repeats_then)
        basis = f"{len(repeats_now)} and {len(repeats_then)} repeats, {method}"
    else:
        ratio, lo, hi, basis = _samples_interval(r, b) or (0.0, 0.0, 0.0, "")
        if not basis:
            return Verdict(f"{name}.latency", False, f"{where}: too few timing samples to compare "
                                                     f"({len(r.get('latency_samples_ms') or [])} now, "
                                                     f"{len(b.get('latency_samples_ms') or [])} in the baseline)")
    slower = ratio > 1 + tol.min_effect and lo > 1.0
    verdict = "SLOWER" if slower else ("within noise" if lo <= 1.0 <= hi else "changed, below the minimum effect")
    return Verdict(f"{name}.latency", not slower,
                   f"{where}: p50 {r['latency_ms']['p50']:.4f} ms vs {b['latency_ms']['p50']:.4f} ms, ratio "
                   f"{ratio:.3f} (95% interval {lo:.3f}-{hi:.3f} from {basis}; fails above {1 + tol.min_effect:.2f} "
                   f"with the interval above 1): {verdict}")


def _teacher_ratio_verdict(name: str, where: str, report: dict[str, Any], baseline: dict[str, Any],
                           r: dict[str, Any], b: dict[str, Any], tol: Tolerances) -> Verdict | None:
    """The variant judged by its time relative to the teacher, when the teacher file is the same bytes in
    both runs and both timed their rows in ``MIN_REPEATS`` or more rounds: per round, the variant's time
    over the teacher's in that round (the rows of one round are timed together, so a machine that slowed
    down between runs slows both); the change between this run's round ratios and the baseline's is
    estimated by ``rounds_shift_interval`` (robust to an outlier round). On a loaded runner the unchanged teacher read
    22% faster in a second run (interval 0.74-0.82): its own p50 would have failed or passed a student
    on drift alone. None where the rule does not apply (the other rules judge then).

    A round's time is its mean call where both sides recorded one, else its p50. Beside a CPU-bound
    job on a 2-core runner a call's time falls in modes one scheduler slice (~4 ms) apart; a p50 sits on
    one of them and barely moves when the work grows, while the mean moves with the share of calls in
    each mode (what the CPU time the file needs costs in wall time). Judged side by side from the same
    rounds (benchmarks/gate_power.py --rounds 8 --load 1), a file 12.8% slower alone was caught by the
    rounds' means in 19 of 20 trials and by their p50s in 8; the mean of the fastest tenth of calls,
    the textbook estimator of uninterrupted time, caught 17: on a machine this busy few calls run
    uninterrupted. The means' heavier round-to-round noise is what ``rounds_shift_interval``'s rank
    interval absorbs.
    """
    if r["variant"] == BASELINE:
        return None
    teacher_now = next((x for x in report["results"] if x["variant"] == BASELINE and x["target"] == r["target"]
                        and x["status"] == "ok"), None)
    teacher_then = next((x for x in baseline["rows"] if x["variant"] == BASELINE and x["target"] == r["target"]),
                        None)
    if teacher_now is None or teacher_then is None:
        return None
    same_file = (teacher_now.get("fingerprint") or {}).get("artifact_sha256")
    if not same_file or same_file != teacher_then.get("artifact_sha256"):
        return None
    rounds = _paired_rounds(r, teacher_now, b, teacher_then)
    if rounds is None:
        return None
    stat, now, then = rounds
    change, lo, hi, method = rounds_shift_interval(now, then)
    slower = change > 1 + tol.min_effect and lo > 1.0
    verdict = "SLOWER" if slower else ("within noise" if lo <= 1.0 <= hi else "changed, below the minimum effect")
    return Verdict(f"{name}.latency", not slower,
                   f"{where}: judged against the unchanged {BASELINE} timed in the same rounds (each round's "
                   f"{stat} call): {float(np.exp(np.mean(np.log(now)))):.3f}x {BASELINE} vs "
                   f"{float(np.exp(np.mean(np.log(then)))):.3f}x in the baseline, change {change:.3f} (95% "
                   f"{method} interval {lo:.3f}-{hi:.3f} from {len(now)} and {len(then)} rounds; fails above "
                   f"{1 + tol.min_effect:.2f} with the interval above 1): {verdict}")


def _paired_rounds(r: dict[str, Any], teacher_now: dict[str, Any], b: dict[str, Any],
                   teacher_then: dict[str, Any]) -> tuple[str, list[float], list[float]] | None:
    """The statistic used ("mean" where all four rows recorded one per round, else "p50") and the
    per-round variant/teacher ratios of this run and of the baseline; None with fewer than
    ``MIN_REPEATS`` rounds a side or rounds that do not pair up."""
    for stat in ("mean", "p50"):
        rounds = [(r.get("repeats") or {}).get(f"{stat}_ms") or [],
                  (teacher_now.get("repeats") or {}).get(f"{stat}_ms") or [],
                  b.get(f"repeats_{stat}_ms") or [], teacher_then.get(f"repeats_{stat}_ms") or []]
        if min(len(x) for x in rounds) >= MIN_REPEATS and len(rounds[0]) == len(rounds[1]) \
                and len(rounds[2]) == len(rounds[3]):
            return (stat, [v / t for v, t in zip(rounds[0], rounds[1])],
                    [v / t for v, t in zip(rounds[2], rounds[3])])
    return None


def _samples_interval(r: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float, str] | None:
    """Ratio of medians of one measurement's calls each, with its block-bootstrap interval (None: too few)."""
    samples_now = np.asarray(r.get("latency_samples_ms") or [], dtype=np.float64)
    samples_then = np.asarray(b.get("latency_samples_ms") or [], dtype=np.float64)
    if len(samples_now) < 20 or len(samples_then) < 20:
        return None
    ratio, lo, hi = median_ratio_interval(samples_now, samples_then)
    return ratio, lo, hi, "the calls of one measurement each: drift between measurements is not in it, --repeats puts it in"
