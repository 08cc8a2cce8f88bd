"""What each stage did: the change in accuracy, latency and size each stage of a run caused.

Two views, because only the final variants are exported and measured:
- **torch**, every stage: the torch model's test accuracy after each stage (teacher, after prune, after
  distill, after quantize), read from the stages' own records, so pruning's cost and what distillation
  recovered show even when both made the same ``student-fp32``;
- **per target**, every measured step: teacher-fp32 -> student-fp32 (the stages that made it) ->
  student-int8 (quantize), with the accuracy change on that target, the p50 ratio and the size ratio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fileio import read_json


def torch_steps(run_dir: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The torch test accuracy after each stage that made a model, and its change from the step before."""
    teacher = next((a for a in manifest["artifacts"] if a["variant"] == "teacher-fp32"), None)
    start = ((teacher or {}).get("meta") or {}).get("metrics", {}).get("test_accuracy_torch")
    steps = [{"stage": "teacher", "variant": "teacher-fp32", "test_accuracy_torch": start, "change": None}]
    last_float = start  # quantize starts from the last float model too
    for entry in manifest.get("stages", []):
        record = Path(run_dir) / entry["folder"] / "stage.json"
        if not record.is_file():
            continue
        for art in read_json(record)["artifacts"]:
            if art.get("kind") == "onnx":  # a file written from a model already counted, not a new model
                continue
            metrics = (art.get("meta") or {}).get("metrics", {})
            acc = metrics.get("test_accuracy_torch")
            step = {"stage": entry["stage"], "variant": art["variant"], "test_accuracy_torch": acc,
                    "change": acc - last_float if acc is not None and last_float is not None else None}
            if metrics.get("pruned_val_accuracy") is not None:  # pruning's cost before its recovery
                step["val_accuracy_before_recovery"] = metrics["pruned_val_accuracy"]
            steps.append(step)
            if art.get("precision", "fp32") == "fp32":
                last_float = acc
    return steps


def target_steps(report: dict[str, Any], manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per target, each measured step between consecutive variants of the chain teacher-fp32 ->
    student-fp32 -> student-int8: which stages it covers and what changed."""
    made_by: dict[str, list[str]] = {}
    for entry in manifest.get("stages", []):
        for variant in entry.get("outputs", []):
            made_by.setdefault(variant, []).append(entry["stage"])
    sizes = {v["name"]: v["size_bytes"] for v in report["variants"]}
    chain = [v for v in ("teacher-fp32", "student-fp32", "student-int8") if v in sizes]
    out: dict[str, list[dict[str, Any]]] = {}
    for target in dict.fromkeys(r["target"] for r in report["results"]):
        rows = {r["variant"]: r for r in report["results"] if r["target"] == target and r["status"] == "ok"}
        steps = []
        for before, after in zip(chain, chain[1:]):
            a, b = rows.get(before), rows.get(after)
            # the stages that made ``after`` and not ``before``: what writes both (the export) changed neither
            stages = [s for s in made_by.get(after, []) if s not in made_by.get(before, [])]
            steps.append({
                "from": before, "to": after, "stages": stages,
                "accuracy_change": (b["accuracy"] - a["accuracy"]) if a and b and a["accuracy"] is not None
                and b["accuracy"] is not None else None,
                "p50_ratio": (b["latency_ms"]["p50"] / a["latency_ms"]["p50"]) if a and b else None,
                "size_ratio": sizes[after] / sizes[before] if sizes.get(before) else None})
        out[target] = steps
    return out


def attribution(run_dir: Path, report: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    return {"torch": torch_steps(run_dir, manifest), "targets": target_steps(report, manifest)}


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _tables(attr: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of each table: the torch view, then one per target."""
    tables = [("Torch model, test split (every stage)", ["stage", "variant", "test accuracy", "change"],
               [[s["stage"], s["variant"], _f(s["test_accuracy_torch"], ".4f"), _f(s["change"], "+.4f")]
                for s in attr["torch"]])]
    for target, steps in attr["targets"].items():
        tables.append((f"On {target} (measured variants)", ["step", "stages", "accuracy change", "p50 ratio",
                                                           "size ratio"],
                       [[f"{s['from']} -> {s['to']}", ", ".join(s["stages"]) or "-", _f(s["accuracy_change"], "+.4f"),
                         _f(s["p50_ratio"], ".3f") + "x", _f(s["size_ratio"], ".3f") + "x"] for s in steps]))
    return tables


def attribution_markdown(attr: dict[str, Any]) -> list[str]:
    lines = ["## What each stage did"]
    for caption, header, rows in _tables(attr):
        lines += ["", f"{caption}:", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def attribution_html(attr: dict[str, Any]) -> str:
    import html

    parts = ["<h2>What each stage did</h2>"]
    for caption, header, rows in _tables(attr):
        parts.append(f"<table><caption>{html.escape(caption)}</caption><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                     + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                     + "</table>")
    return "\n".join(parts)
