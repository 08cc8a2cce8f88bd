"""Budgets -> verdicts -> exit code and JUnit XML (DESIGN.md: budget file, exit codes).

One verdict per budget line: ``max_size_mb``, ``min_accuracy``, ``max_accuracy_drop`` (each checked
on every target that measured the variant; the drop is against teacher-fp32 *on the same backend*)
and one per ``max_latency_ms.<target>.<stat>``. A budget naming a variant or target the report does
not have is bad input (exit 2); a target that failed or was unavailable violates its lines (exit 1).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import Budget
from ..errors import BudgetError
from ..fileio import atomic_path
from .build import MB, targets_of

BASELINE = "teacher-fp32"


@dataclass(frozen=True)
class Verdict:
    name: str          # the budget line, e.g. "max_latency_ms.cpu-openvino.p90"
    passed: bool
    message: str


def evaluate_budget(report: dict[str, Any], budget: Budget) -> list[Verdict]:
    """Every line of ``budget`` and of its further ``variants``; lines of those are named
    ``<variant>:<line>`` so one JUnit file tells them apart."""
    out = _evaluate_one(report, budget)
    for extra in budget.variants:
        out += [Verdict(f"{extra.variant}:{v.name}", v.passed, v.message) for v in evaluate_budget(report, extra)]
    return out


def _evaluate_one(report: dict[str, Any], budget: Budget) -> list[Verdict]:
    variants = {v["name"]: v for v in report["variants"]}
    if budget.variant not in variants:
        raise BudgetError(f"budget key 'variant': {budget.variant!r} is not in the report; valid: {', '.join(variants)}")
    rows = {r["target"]: r for r in report["results"] if r["variant"] == budget.variant}
    for key, limits in (("max_latency_ms", budget.max_latency_ms), ("max_latency_ratio", budget.max_latency_ratio)):
        unknown = [t for t in limits if t not in rows]
        if unknown:
            raise BudgetError(f"budget key '{key}.{unknown[0]}': no such target in the report; "
                              f"valid: {', '.join(targets_of(report))}")
    v = variants[budget.variant]
    out: list[Verdict] = []
    if budget.max_size_mb is not None:
        size = v["size_bytes"] / MB
        out.append(Verdict("max_size_mb", size <= budget.max_size_mb,
                           f"{budget.variant} is {size:.3f} MB (limit {budget.max_size_mb} MB)"))
    if budget.max_size_ratio is not None:
        if BASELINE not in variants:
            raise BudgetError(f"budget key 'max_size_ratio': the report has no {BASELINE} to compare with")
        ratio = v["size_bytes"] / variants[BASELINE]["size_bytes"]
        out.append(Verdict("max_size_ratio", ratio <= budget.max_size_ratio,
                           f"{budget.variant} is {ratio:.3f}x the size of {BASELINE} (limit {budget.max_size_ratio}x)"))
    if budget.min_accuracy is not None:
        out.append(_per_target("min_accuracy", rows, lambda r: (r["accuracy"], r["accuracy"] >= budget.min_accuracy),
                               lambda t, acc: f"{t}: accuracy {acc:.4f} (min {budget.min_accuracy})"))
    if budget.max_accuracy_drop is not None:
        base = {r["target"]: r for r in report["results"] if r["variant"] == BASELINE and r["status"] == "ok"}

        def drop(r: dict[str, Any]) -> tuple[float | None, bool]:
            if r["target"] not in base or base[r["target"]]["accuracy"] is None:
                return None, False
            d = base[r["target"]]["accuracy"] - r["accuracy"]
            return d, d <= budget.max_accuracy_drop + 1e-12

        out.append(_per_target("max_accuracy_drop", rows, drop,
                               lambda t, d: f"{t}: drop vs {BASELINE} " + ("not measured" if d is None else
                                                                           f"{d:+.4f} (max {budget.max_accuracy_drop})")))
    if budget.max_latency_ms:
        _same_machine([rows[t] for t in budget.max_latency_ms], budget)
    for target, stats in budget.max_latency_ms.items():
        r = rows[target]
        for stat, limit in stats.items():
            name = f"max_latency_ms.{target}.{stat}"
            if r["status"] != "ok":
                out.append(Verdict(name, False, f"{target}: {r['status']} ({r.get('error')})"))
                continue
            got = r["latency_ms"][stat]
            out.append(Verdict(name, got <= limit, f"{judged(target, r)}: {stat} {got:.3f} ms (limit {limit} ms)"))
    base_rows = {r["target"]: r for r in report["results"] if r["variant"] == BASELINE}
    for target, limit in budget.max_latency_ratio.items():
        name, r, b = f"max_latency_ratio.{target}", rows[target], base_rows.get(target)
        if r["status"] != "ok" or b is None or b["status"] != "ok":
            why = f"{budget.variant} {r['status']}" if r["status"] != "ok" else f"{BASELINE} not measured ok"
            out.append(Verdict(name, False, f"{target}: {why}"))
            continue
        ratio = r["latency_ms"]["p50"] / b["latency_ms"]["p50"]
        out.append(Verdict(name, ratio <= limit, f"{judged(target, r)}: p50 {r['latency_ms']['p50']:.3f} ms is "
                                                 f"{ratio:.3f}x {BASELINE}'s {b['latency_ms']['p50']:.3f} ms in the "
                                                 f"same run (limit {limit}x)"))
    return out


def _same_machine(rows: list[dict[str, Any]], budget: Budget) -> None:
    """Latency limits are only meaningful on one machine: refuse rows measured under different
    fingerprints, or on another machine than the budget's ``machine_id``."""
    machines = {r["fingerprint"]["machine_id"]: r["fingerprint"] for r in rows if r.get("fingerprint")}
    if len(machines) > 1:
        desc = "; ".join(f"{mid} ({fp['cpu']['model']}, {fp['host']})" for mid, fp in machines.items())
        raise BudgetError(f"budget key 'max_latency_ms': the latencies were measured on different machines ({desc}); "
                          f"re-measure every target on one machine")
    if budget.machine_id and machines and budget.machine_id not in machines:
        (mid, fp), = machines.items()
        raise BudgetError(f"budget key 'machine_id': the limits were set on machine {budget.machine_id}, the report "
                          f"was measured on {mid} ({fp['cpu']['model']}); re-measure there or update the budget")


def _per_target(name: str, rows: dict[str, dict[str, Any]], check: Any, describe: Any) -> Verdict:
    """One verdict for a line checked on every target: it passes only if every target passes."""
    messages, passed = [], True
    for target, r in rows.items():
        if r["status"] != "ok" or r["accuracy"] is None:
            messages.append(f"{target}: {r['status']} ({r.get('error')})")
            passed = False
            continue
        value, ok = check(r)
        messages.append(describe(judged(target, r), value) + ("" if ok else " VIOLATED"))
        passed &= ok
    return Verdict(name, passed and bool(rows), "; ".join(messages) or "no measurement of this variant")


def judged(target: str, row: dict[str, Any]) -> str:
    """The target a verdict line judged, with its row's status (``ok``, ``noisy``, ``degraded``): a line
    judged on a noisy timing says so (reports from before row statuses: the measurement status)."""
    return f"{target} [{row.get('row_status') or row['status']}]"


def record_verdicts(run_dir: Path, verdicts: list[Verdict], source: str) -> Path | None:
    """Write the verdicts into the run (``verdicts.json``) and re-render its report, so report.html shows
    them; returns the file, or None (with the reason printed) when the run directory is read-only: the
    verdict still stands, only the page does not show it."""
    from datetime import datetime, timezone

    from ..fileio import write_json
    from ..progress import console
    from .build import VERDICTS, write_report

    document = {"source": source, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "passed": all(v.passed for v in verdicts),
                "lines": [{"name": v.name, "passed": v.passed, "message": v.message} for v in verdicts]}
    try:
        write_json(run_dir / VERDICTS, document)
        write_report(run_dir)
    except PermissionError:
        console.print(f"note: {run_dir} is read-only: the verdict is not written into its report")
        return None
    return run_dir / VERDICTS


def exit_code(verdicts: list[Verdict]) -> int:
    return 0 if all(v.passed for v in verdicts) else 1


def write_junit(verdicts: list[Verdict], variant: str, path: Path) -> None:
    """JUnit XML: one testcase per budget line, a <failure> for each violated one."""
    failures = sum(not v.passed for v in verdicts)
    suites = ET.Element("testsuites", name="edgekd gate", tests=str(len(verdicts)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name=f"edgekd.gate.{variant}", tests=str(len(verdicts)),
                          failures=str(failures), errors="0", skipped="0")
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"edgekd.gate.{variant}", name=v.name)
        if v.passed:
            ET.SubElement(case, "system-out").text = v.message
        else:
            ET.SubElement(case, "failure", message=v.message, type="BudgetViolated").text = v.message
    ET.indent(suites)
    with atomic_path(path) as tmp:
        ET.ElementTree(suites).write(tmp, encoding="utf-8", xml_declaration=True)


def ci_annotations(verdicts: list[Verdict]) -> list[str]:
    """GitHub Actions ``::error::`` lines for violated budgets (printed only under Actions)."""
    if not os.environ.get("GITHUB_ACTIONS"):
        return []
    return [f"::error title={escape_property('edgekd budget ' + v.name)}::{escape_data(v.message)}"
            for v in verdicts if not v.passed]


def step_summary(verdicts: list[Verdict], source: str) -> str:
    """The verdicts as a Markdown table for ``$GITHUB_STEP_SUMMARY`` (the job's summary page)."""
    met = sum(v.passed for v in verdicts)
    lines = [f"### edgekd gate: {met}/{len(verdicts)} budget lines met ({source})", "",
             "| | budget line | result |", "|---|---|---|"]
    for v in verdicts:
        cell = v.message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {'✅' if v.passed else '❌'} | `{v.name}` | {cell} |")
    return "\n".join(lines) + "\n\n"


def append_step_summary(verdicts: list[Verdict], source: str) -> Path | None:
    """Under GitHub Actions, append the table to the file ``$GITHUB_STEP_SUMMARY`` names (appending is
    that file's contract: other steps write there too); returns it, or None elsewhere."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not os.environ.get("GITHUB_ACTIONS") or not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(step_summary(verdicts, source))
    return Path(target)


def escape_data(text: str) -> str:
    """A workflow command's message, escaped as GitHub's runner unescapes it: a newline in a target or
    variant name would otherwise end the command and start another (``::add-mask::``, ``::stop-commands::``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``title=``): the message escapes plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
