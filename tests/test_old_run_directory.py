"""A run directory written before the code was rearranged into wings (issue 24, commit 252f395: a tiny
distill + PTQ + export run, ``tests/data/run-before-house``, its stage folders left out) is read by
today's ``report`` and ``gate``: file formats and the run-directory contract did not change with the
layout. The rebuilt report has the rows the old code wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .conftest import invoke, write_yaml

OLD_RUN = Path(__file__).parent / "data" / "run-before-house"


def rows(report: dict) -> dict:
    """Each result's verdict, accuracy, latency, INT8 layer count and parity, and each variant's size."""
    results = {(r["variant"], r["target"]): (r["status"], r["accuracy"], json.dumps(r["latency_ms"], sort_keys=True),
                                             json.dumps(r["int8_layers"], sort_keys=True),
                                             json.dumps(r["parity"], sort_keys=True)) for r in report["results"]}
    return {**results, **{v["name"]: v["size_bytes"] for v in report["variants"]}}


def test_report_and_gate_read_a_run_directory_written_before_the_wings(tmp_path):
    run = shutil.copytree(OLD_RUN, tmp_path / "run")  # report rewrites its report files: never the fixture
    written_then = json.loads((OLD_RUN / "report.json").read_text())

    rebuilt = invoke("report", run, "--format", "json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rows(json.loads(rebuilt.output)) == rows(written_then) and len(written_then["results"]) == 6

    size_mb = next(v["size_bytes"] for v in written_then["variants"] if v["name"] == "student-int8") / (1 << 20)
    ok = write_yaml(tmp_path / "ok.yaml", {"variant": "student-int8", "max_size_mb": size_mb * 2})
    assert invoke("gate", run, "--budget", ok).exit_code == 0
    bad = write_yaml(tmp_path / "bad.yaml", {"variant": "student-int8", "max_size_mb": size_mb / 2})
    failed = invoke("gate", run, "--budget", bad)
    assert failed.exit_code == 1 and "FAIL max_size_mb" in failed.output
