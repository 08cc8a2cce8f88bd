"""report.json / report.md / report.html / tradeoff.png, built from a run directory's files only.

So ``edgekd report`` and ``edgekd gate`` run on a CPU-only CI box against a run made elsewhere.
``variants[].accuracy`` is the exported artifact's accuracy on the first target that measured it
(``accuracy_target`` names it); every target's own figure is in ``results``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .attribution import attribution, attribution_markdown
from .html import render_html, stage_time
from .rows import DEGRADED_BELOW_TEACHER, row_status, unexplained_speedup
from .plots import write_tradeoff_png
from ..errors import ReportError
from ..fileio import read_json, write_json, write_text

SCHEMA = "edgekd.report/1"
VERDICTS = "verdicts.json"  # written by gate and compress --budget (``record_verdicts``)
MB = 1 << 20


def build_report(run_dir: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report of a finished run whose models and measurements are the bytes it recorded. ``manifest``:
    the one compress has just written with those hashes (not hashed a second time)."""
    from ..artifacts.rundir import verified_manifest

    manifest = manifest if manifest is not None else verified_manifest(run_dir, rebuilding_report=True)
    try:
        results = [read_json(p) for p in sorted((run_dir / "measurements").glob("*.json"))]
    except ValueError as exc:
        raise ReportError(f"{run_dir}: unreadable JSON ({exc})") from None
    variants = []
    for name, art in manifest["models"].items():
        meta = art["meta"]
        measured = [r for r in results if r["variant"] == name and r["status"] == "ok" and r["accuracy"] is not None]
        variants.append({
            "name": name, "onnx": art["path"], "precision": art["precision"], "size_bytes": meta["size_bytes"],
            "params": meta["params"], "macs": meta["macs"],
            "accuracy": measured[0]["accuracy"] if measured else None,
            "accuracy_target": measured[0]["target"] if measured else None,
            "accuracy_torch": meta.get("accuracy_torch"), "parity": meta.get("parity"),
            "kept_float": meta.get("kept_float", {}),
        })
    order = {name: i for i, name in enumerate(manifest["models"])}
    results.sort(key=lambda r: (r["target"], order.get(r["variant"], len(order))))
    judging = manifest.get("judging") or {}
    teacher = {r["target"]: r["accuracy"] for r in results if r["variant"] == "teacher-fp32" and r["status"] == "ok"}
    for r in results:
        r.pop("host", None)
        r["row_status"] = row_status(r, teacher.get(r["target"]),
                                     judging.get("degraded_below_teacher", DEGRADED_BELOW_TEACHER))
    report = {"schema": SCHEMA, "run": {"recipe": manifest["recipe"], "created": manifest["created"],
                                        "data": manifest.get("data"), "teacher_check": manifest.get("teacher_check"),
                                        "edgekd": manifest["edgekd"], "checkpoint": manifest["checkpoint"],
                                        "versions": manifest["versions"], "status": manifest["status"],
                                        "inputs": manifest.get("inputs"),  # data and teachers' hashes
                                        # what "accuracy" holds (runs before tasks were recorded: top-1)
                                        "task": manifest.get("task") or {"name": "classification",
                                                                         "metric": "top-1 accuracy"}},
              "variants": variants, "results": results,
              # each stage's wall time this run (None: reused by --resume, or a run from before it was kept)
              "stages": [{k: s.get(k) for k in ("stage", "outputs", "reused", "seconds")}
                         for s in manifest.get("stages", [])]}
    report["attribution"] = attribution(run_dir, report, manifest)
    if (run_dir / VERDICTS).is_file():  # what the last gate (or compress --budget) said of this run
        report["verdict"] = read_json(run_dir / VERDICTS)
    return report


# what gate and the renderings read from each row of report.json
ROW_KEYS = {"variants": ("name", "precision", "size_bytes", "accuracy"),
            "results": ("variant", "target", "precision", "status", "latency_ms", "accuracy")}


def _number(v: Any, low: float = 0.0, high: float = math.inf, *, strict_low: bool = False) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and (v > low if strict_low else v >= low) and v <= high)


def _latency(v: Any) -> bool:
    return v is None or isinstance(v, dict) and all(_number(x, strict_low=True) for x in v.values() if x is not None)


ROW_TYPES: dict[str, dict[str, tuple[Any, str]]] = {
    "variants": {"name": (lambda v: isinstance(v, str), "a string"),
                 "size_bytes": (lambda v: _number(v, strict_low=True) and float(v).is_integer(), "a positive integer"),
                 "accuracy": (lambda v: v is None or _number(v, 0.0, 1.0), "null or a number in [0, 1]")},
    "results": {"variant": (lambda v: isinstance(v, str), "a string"),
                "target": (lambda v: isinstance(v, str), "a string"),
                "status": (lambda v: v in ("ok", "failed", "unavailable"), "ok, failed or unavailable"),
                "latency_ms": (_latency, "null or a mapping of positive finite milliseconds"),
                "accuracy": (lambda v: v is None or _number(v, 0.0, 1.0), "null or a number in [0, 1]")},
}


def read_document(path: Path, missing: str) -> Any:
    """A JSON file edgekd wrote (report, baseline), or a ReportError (exit 2) saying what is wrong."""
    if not path.is_file():
        raise ReportError(f"{path}: {missing}")
    try:
        return read_json(path)
    except ValueError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None


def load_report(path: Path) -> dict[str, Any]:
    """A finished run's report.json (given the run directory or the file inside it), after the run's
    manifest vouches for every file it made (``rundir.verified_manifest``), checked against the schema."""
    from ..artifacts.rundir import verified_manifest

    if not path.exists():
        raise ReportError(f"{path}: not found (give a run directory made by 'edgekd compress')")
    verified_manifest(path if path.is_dir() else path.parent)
    path = path / "report.json" if path.is_dir() else path
    report = read_document(path, "report.json not found (run 'edgekd compress' or 'edgekd report RUN_DIR')")
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise ReportError(f"{path}: key 'schema' must be {SCHEMA!r}")
    for key in ("variants", "results"):
        if not isinstance(report.get(key), list):
            raise ReportError(f"{path}: key '{key}' must be a list")
    for key, required in ROW_KEYS.items():  # a hand-edited or truncated file is bad input (2), not a bug (3)
        for i, row in enumerate(report[key]):
            missing = [k for k in required if not isinstance(row, dict) or k not in row]
            if missing:
                raise ReportError(f"{path}: {key}[{i}] lacks key '{missing[0]}' (each row needs "
                                  f"{', '.join(required)}); rebuild it with 'edgekd report RUN_DIR'")
    for key, checks in ROW_TYPES.items():  # wrong-typed values are bad input too, never a crash in gate's arithmetic
        for i, row in enumerate(report[key]):
            for field, (ok, what) in checks.items():
                if not ok(row.get(field)):
                    raise ReportError(f"{path}: {key}[{i}].{field} is {row.get(field)!r}; it must be {what}")
    status = report["run"].get("status") if isinstance(report.get("run"), dict) else None
    if status != "complete":
        raise ReportError(f"{path}: the run is not finished (status {status!r}); its rows may be missing, "
                          f"so report and gate refuse it: rerun 'edgekd compress --resume'")
    return report


def targets_of(report: dict[str, Any]) -> list[str]:
    return sorted(dict.fromkeys(r["target"] for r in report["results"]))


def _fmt_size(n: int) -> str:
    return f"{n / MB:.2f} MB" if n >= MB else f"{n / 1024:.0f} KB"


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _fmt_int8_layers(layers: dict[str, int], precision: str) -> str:
    """``n/m``; an INT8 file whose runtime executes most conv/matmul layers in float is flagged."""
    if not layers.get("total"):
        return "-"
    text = f"{layers['int8']}/{layers['total']}"
    mostly_float = precision == "int8" and 2 * layers["int8"] < layers["total"]
    return f"{text} MOSTLY FLOAT" if mostly_float else text


def _fmt_parity(p: dict[str, Any] | None) -> str:
    """``top-1 agreement / SQNR`` of the backend's outputs against the torch (fake-quant) model."""
    if not p:
        return "-"
    sqnr = "identical" if p["sqnr_db"] is None else f"{p['sqnr_db']:.1f} dB"
    return f"{p['top1_agreement']:.1%} / {sqnr}"


def table_rows(report: dict[str, Any], target: str) -> list[dict[str, str]]:
    """One row per variant for ``target``: the numbers every rendering shows."""
    sizes = {v["name"]: v["size_bytes"] for v in report["variants"]}
    rows = [r for r in report["results"] if r["target"] == target]
    base = next((r for r in rows if r["variant"] == "teacher-fp32" and r["status"] == "ok"), None)
    out = []
    for r in rows:
        lat = r.get("latency_ms") or {}
        # a failed row keeps its numbers for the record, but no speed-up: it is not a usable variant
        speedup = base["latency_ms"]["p50"] / lat["p50"] if base and lat.get("p50") and r["status"] == "ok" else None
        layers = r.get("int8_layers") or {}
        out.append({
            "variant": r["variant"], "precision": r["precision"], "size": _fmt_size(sizes.get(r["variant"], 0)),
            "accuracy": _fmt(r["accuracy"], ".4f"), "p50 ms": _fmt(lat.get("p50"), ".3f"),
            "p90 ms": _fmt(lat.get("p90"), ".3f"), "spread": _fmt(lat.get("spread"), ".1%"),
            "speed-up": (f"{speedup:.2f}x" + ("?" if unexplained_speedup(report, r, speedup) else "")) if speedup
                        else "-",
            "INT8 layers": _fmt_int8_layers(layers, r["precision"]),
            "parity": _fmt_parity(r.get("parity")),
            "status": status_cell(r),
        })
    return out


def status_cell(row: dict[str, Any]) -> str:
    """The row's status as a table shows it: failed rows say why."""
    status = row.get("row_status") or row["status"]
    return status if row["status"] == "ok" else f"{status}: {row.get('error') or ''}"


def measurement_notes(report: dict[str, Any]) -> list[str]:
    """Where the numbers were measured, and every warning a measurement raised (noisy latency...)."""
    machines = {r["fingerprint"]["machine_id"]: r["fingerprint"] for r in report["results"] if r.get("fingerprint")}
    notes = [f"measured on {fp['cpu']['model']} ({fp['cpu']['logical_cpus']} CPUs; machine {mid}; "
             + ", ".join(f"{k} {v}" for k, v in fp["runtimes"].items()) + ")" for mid, fp in machines.items()]
    if len(machines) > 1:
        notes.append("WARNING: these results come from different machines; their latencies are not comparable")
    notes += [f"{v['name']}: layer {layer} kept in float ({why})" for v in report["variants"]
              for layer, why in (v.get("kept_float") or {}).items()]
    notes += [f"{r['variant']} on {r['target']}: {w}" for r in report["results"] for w in r.get("warnings", [])]
    return notes


def metric_of(report: dict[str, Any]) -> str:
    """What the report's "accuracy" holds, in words (the run's task metric; top-1 for older runs)."""
    return (report["run"].get("task") or {}).get("metric", "top-1 accuracy")


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# edgekd report: {report['run']['recipe']}", ""]
    for target in targets_of(report):
        rows = table_rows(report, target)
        first = next(r for r in report["results"] if r["target"] == target)
        lines += [f"## {target} ({first['backend']}, {first['device']})", ""]
        header = list(rows[0])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" if h in ("variant", "precision", "status") else "---:" for h in header) + "|")
        lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
        lines.append("")
    lines.append(f"Accuracy: {metric_of(report)} of the exported ONNX file running on that target over the test split. "
                 "Latency: batch 1, milliseconds; spread: 1.4826 x MAD / median of the timed calls. "
                 "Speed-up: teacher-fp32 p50 / variant p50 on the same target (? : more than the cut in MACs "
                 "explains, x4 for INT8, with a 1.5 margin: re-measure). "
                 "Parity: top-1 agreement / SQNR of this backend's outputs against the torch model "
                 "(the fake-quantized one for INT8).")
    if report.get("stages"):
        lines += ["", "## Stages", "", "| stage | made | wall time |", "|---|---|---:|"]
        lines += [f"| {s['stage']} | {', '.join(s['outputs'] or [])} | {stage_time(s)} |" for s in report["stages"]]
    if report.get("attribution"):
        lines += [""] + attribution_markdown(report["attribution"])
    notes = measurement_notes(report)
    if notes:
        lines += ["", "## Measurement notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    report = build_report(run_dir, manifest)
    write_json(run_dir / "report.json", report)
    write_text(run_dir / "report.md", render_markdown(report))
    targets = targets_of(report)
    write_tradeoff_png(report, targets, metric_of(report), run_dir / "tradeoff.png")
    write_text(run_dir / "report.html",
               render_html(report, metric_of(report), {t: table_rows(report, t) for t in targets}))
    from ..artifacts.rundir import record_report

    record_report(run_dir)
    return report
