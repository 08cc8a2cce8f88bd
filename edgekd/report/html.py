"""``report.html``: the page a reviewer reads in a minute, self-contained (styles and plots inline, so CI
can upload it as one file and it opens anywhere).

Top to bottom: what ran (checkpoint and its hash, recipe, data, machine, date, edgekd version); the
verdict of the last ``gate`` or ``compress --budget`` on this run, or a line saying none ran; per target
the file to ship; then per target a full-width plot and its table, each row's status as a coloured chip
and every measurement warning as a mark on the cell it concerns (hover for the text); stages,
attribution, and the notes that concern the whole run.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from .attribution import attribution_html
from .plots import target_png
from .rows import unexplained_speedup

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;margin:0;background:#f6f7f9}
main{max-width:1060px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:14px 18px;margin:14px 0}
dl.run{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0 0}
dl.run dt{color:#5b6570}dl.run dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{padding:5px 8px;border-bottom:1px solid #e6e9ed;text-align:right;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.ok{background:#dcf5e3;color:#14612f}.noisy{background:#fff1d6;color:#8a5300}
.degraded{background:#fde2e1;color:#9b1c1c}.failed,.unavailable{background:#eceff3;color:#4a525a}
.mark{color:#b45309;cursor:help;font-weight:700;margin-left:3px}
#verdict.pass{border-left:6px solid #1f9d55}#verdict.fail{border-left:6px solid #d92d20}
#verdict.none{border-left:6px solid #9aa4ae}
img.plot{width:100%;height:auto;display:block;margin:6px 0 10px}
code{font-size:13px;background:#f0f2f5;padding:1px 4px;border-radius:4px}
ul{margin:6px 0;padding-left:22px}
"""


def render_html(report: dict[str, Any], metric: str, tables: dict[str, list[dict[str, str]]]) -> str:
    """The page. ``tables``: each target's table rows as the other renderings show them."""
    run = report["run"]
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width,initial-scale=1'>"
             f"<title>edgekd report: {esc(run['recipe'])}</title><style>{STYLE}</style></head><body><main>",
             header(report, metric), verdict(report.get("verdict")), ship_files(report)]
    for target, rows in tables.items():
        parts.append(target_section(report, target, metric, rows))
    if report.get("stages"):
        parts.append(stages_section(report["stages"]))
    if report.get("attribution"):
        parts.append(f"<section id='attribution'>{attribution_html(report['attribution'])}</section>")
    notes = run_notes(report)
    if notes:
        parts.append("<section id='notes'><h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def header(report: dict[str, Any], metric: str) -> str:
    run = report["run"]
    ckpt = run.get("checkpoint") or {}
    data = run.get("data") or {}
    fingerprint = next((r["fingerprint"] for r in report["results"] if r.get("fingerprint")), None)
    sizes = data.get("sizes") or {}
    facts = [
        ("checkpoint", f"{Path(str(ckpt.get('path') or 'embedded default')).name} ({ckpt.get('format', '?')}, "
                       f"sha256 {str(ckpt.get('sha256') or '?')[:16]}…, arch {ckpt.get('arch') or 'default'})"),
        ("recipe", run.get("recipe")),
        ("task", f"{(run.get('task') or {}).get('name', 'classification')}: {metric}"),
        ("data", f"{data.get('source', '?')}" + (f" {Path(str(data['path'])).name}" if data.get("path") else "")
                 + (f"; {', '.join(f'{k} {v}' for k, v in sizes.items())} samples" if sizes else "")
                 + (f"; {data.get('num_classes')} classes" if (data.get("num_classes") or 0) > 1 else "")),
    ]
    check = run.get("teacher_check")
    if check:
        facts.append(("teacher", f"{check['val_accuracy']:.4f} on validation ({check['samples']} samples; chance "
                                 f"{check['chance']:.4f})"))
    if fingerprint:
        cpu = fingerprint["cpu"]
        isa = ", ".join(k for k, v in (cpu.get("isa") or {}).items() if v) or "?"
        facts.append(("machine", f"{cpu.get('model')} ({cpu.get('logical_cpus')} CPUs; {isa}); "
                                 + ", ".join(f"{k} {v}" for k, v in fingerprint.get("runtimes", {}).items())))
    facts += [("date", run.get("created")), ("edgekd", run.get("edgekd"))]
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f"<header><h1>edgekd report: {esc(run['recipe'])}</h1><dl class='run'>{rows}</dl></header>"


def verdict(record: dict[str, Any] | None) -> str:
    if not record:
        return ("<section id='verdict' class='none'><h2>Verdict</h2><p>No budget or baseline has been checked "
                "against this run: <code>edgekd gate RUN --budget FILE</code> (or <code>--baseline FILE</code>) "
                "judges it and writes its verdict here.</p></section>")
    lines = record["lines"]
    met = sum(line["passed"] for line in lines)
    state = "pass" if met == len(lines) else "fail"
    rows = "".join(f"<tr><td class='l'><span class='chip {'ok' if v['passed'] else 'degraded'}'>"
                   f"{'PASS' if v['passed'] else 'FAIL'}</span></td><td class='l'><code>{esc(v['name'])}</code>"
                   f"</td><td class='l' style='white-space:normal'>{esc(v['message'])}</td></tr>" for v in lines)
    return (f"<section id='verdict' class='{state}'><h2>Verdict: {met}/{len(lines)} budget lines met</h2>"
            f"<p>{esc(record.get('source'))}, {esc(record.get('when'))}</p><table><tr><th class='l'></th>"
            f"<th class='l'>line</th><th class='l'>result</th></tr>{rows}</table></section>")


def ship_choice(report: dict[str, Any], target: str) -> dict[str, Any] | None:
    """The row to ship on ``target``: the fastest whose status is ok (a noisy row when nothing is ok)."""
    rows = [r for r in report["results"] if r["target"] == target and (r.get("latency_ms") or {}).get("p50")]
    for usable in (("ok",), ("ok", "noisy")):
        chosen = [r for r in rows if (r.get("row_status") or r["status"]) in usable]
        if chosen:
            return min(chosen, key=lambda r: r["latency_ms"]["p50"])
    return None


def ship_files(report: dict[str, Any]) -> str:
    """Per target, the file its runtime runs for the chosen variant (an INT8 variant's file differs by
    runtime: ``.u8s8.onnx`` for ONNX Runtime on CPU, the QDQ file for OpenVINO and TensorRT)."""
    rows = []
    for target in dict.fromkeys(r["target"] for r in report["results"]):
        r = ship_choice(report, target)
        if r is None:
            rows.append(f"<tr><td class='l'>{esc(target)}</td><td class='l' colspan='3'>nothing usable was "
                        f"measured here</td></tr>")
            continue
        file = f"models/{Path(str(r.get('onnx') or '')).name}"
        why = "fastest row with status ok" if (r.get("row_status") or "ok") == "ok" else "fastest usable row (noisy)"
        if r["variant"] == "teacher-fp32":
            why += "; no compressed variant is usable here (see the statuses below)"
        rows.append(f"<tr><td class='l'>{esc(target)}</td><td class='l'><code>{esc(file)}</code></td>"
                    f"<td class='l'>{esc(r['variant'])}</td><td class='l' style='white-space:normal'>{esc(why)}, p50 "
                    f"{r['latency_ms']['p50']:.3f} ms, accuracy {r['accuracy']:.4f}</td></tr>")
    return ("<section id='ship'><h2>File to ship</h2><table><tr><th class='l'>target</th><th class='l'>file</th>"
            "<th class='l'>variant</th><th class='l'>why</th></tr>" + "".join(rows) + "</table></section>")


# the table column a row's warnings mark: timing warnings on the p50, the rest on the status
TIMING_WORDS = ("latency", "drift", "spread", "coefficient", "timing", "faster", "slower")


def target_section(report: dict[str, Any], target: str, metric: str, rows: list[dict[str, str]]) -> str:
    results = [r for r in report["results"] if r["target"] == target]
    first = results[0]
    png = base64.b64encode(target_png(report, target, metric)).decode("ascii")
    head = "".join(f"<th class='{'l' if h in ('variant', 'precision', 'status') else ''}'>{esc(h)}</th>"
                   for h in rows[0])
    body = []
    for row, r in zip(rows, results):
        timing = [w for w in r.get("warnings", []) if any(word in w.lower() for word in TIMING_WORDS)]
        other = [w for w in r.get("warnings", []) if w not in timing]
        cells = []
        for h, v in row.items():
            if h == "status":
                status = r.get("row_status") or r["status"]
                cell = f"<span class='chip {esc(status)}'>{esc(v)}</span>" + mark(other)
            elif h == "speed-up" and v.endswith("?"):
                cell = esc(v[:-1]) + mark([unexplained_speedup(report, r, float(v[:-2])) or ""])
            else:
                cell = esc(v) + (mark(timing) if h == "p50 ms" else "")
            cells.append(f"<td class='{'l' if h in ('variant', 'precision', 'status') else ''}'>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<section class='target' id='target-{esc(target)}'><h2>{esc(target)} ({esc(first['backend'])}, "
            f"{esc(first['device'])})</h2><img class='plot' alt='{esc(metric)} against p50 latency on "
            f"{esc(target)}' src='data:image/png;base64,{png}'><table><tr>{head}</tr>{''.join(body)}</table>"
            f"<p>Accuracy: {esc(metric)} of the file running on this target over the test split. Latency: batch 1, "
            f"ms; spread: 1.4826 x MAD / median. Speed-up: teacher-fp32 p50 / row p50 here. "
            f"<span class='mark'>⚠</span> marks a warning on that cell (hover to read it).</p></section>")


def mark(warnings: list[str]) -> str:
    if not warnings:
        return ""
    return f"<span class='mark' title='{esc(' | '.join(warnings))}'>⚠</span>"


def stage_time(stage: dict[str, Any]) -> str:
    from ..progress import wall_time

    if stage.get("reused"):
        return "reused (--resume)"
    return wall_time(stage["seconds"]) if isinstance(stage.get("seconds"), (int, float)) else "-"


def stages_section(stages: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td class='l'>{esc(s['stage'])}</td><td class='l'>{esc(', '.join(s['outputs'] or []))}</td>"
                   f"<td>{esc(stage_time(s))}</td></tr>" for s in stages)
    return ("<section id='stages'><h2>Stages</h2><table><tr><th class='l'>stage</th><th class='l'>made</th>"
            f"<th>wall time</th></tr>{rows}</table></section>")


def run_notes(report: dict[str, Any]) -> list[str]:
    """The notes about the run as a whole (the rows' own warnings are marks on their cells)."""
    machines = {r["fingerprint"]["machine_id"] for r in report["results"] if r.get("fingerprint")}
    notes = ["these results come from different machines; their latencies are not comparable"] if len(machines) > 1 \
        else []
    notes += [f"{v['name']}: layer {layer} kept in float ({why})" for v in report["variants"]
              for layer, why in (v.get("kept_float") or {}).items()]
    return notes
