"""Two finished runs side by side: per variant x target, size, accuracy and p50 latency of each, and
their ratio. A reading aid for a pull request's run against main's (``gate --baseline`` judges)."""

from __future__ import annotations

from typing import Any


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant x target in either report (missing on one side: None there)."""
    sizes = [{v["name"]: v["size_bytes"] for v in r["variants"]} for r in (a, b)]
    rows = [{(r["variant"], r["target"]): r for r in rep["results"]} for rep in (a, b)]
    keys = list(dict.fromkeys([*rows[0], *rows[1]]))
    out = []
    for variant, target in keys:
        ra, rb = rows[0].get((variant, target)), rows[1].get((variant, target))

        def p50(r: dict[str, Any] | None) -> float | None:
            return (r.get("latency_ms") or {}).get("p50") if r and r["status"] == "ok" else None

        def acc(r: dict[str, Any] | None) -> float | None:
            return r.get("accuracy") if r and r["status"] == "ok" else None

        la, lb = p50(ra), p50(rb)
        sa, sb = sizes[0].get(variant), sizes[1].get(variant)
        out.append({"variant": variant, "target": target, "size_a": sa, "size_b": sb,
                    "accuracy_a": acc(ra), "accuracy_b": acc(rb), "p50_ms_a": la, "p50_ms_b": lb,
                    "p50_ratio": lb / la if la and lb else None, "size_ratio": sb / sa if sa and sb else None,
                    "status_a": ra["status"] if ra else "absent", "status_b": rb["status"] if rb else "absent",
                    "same_machine": bool(ra and rb and (ra.get("fingerprint") or {}).get("machine_id")
                                         == (rb.get("fingerprint") or {}).get("machine_id"))})
    return out
