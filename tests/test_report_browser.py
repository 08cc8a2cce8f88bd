"""report.html as a browser shows it (issue 15.6): headless Chromium renders the standalone page, finds the
tables and the inlined plot, and logs no console error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edgekd.report.html import ship_choice

from . import spawn
from .conftest import invoke, write_yaml


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("headless Chromium is not installed here ('make test' installs Debian's chromium where "
                    "apt-get may run)")
    return found


def run(browser: str, *args: str) -> subprocess.CompletedProcess:
    return spawn.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=120)


def test_report_html_renders_alone_in_headless_chromium(tiny_run, tmp_path):
    """The page a reviewer reads (issue 26): a header saying what ran, the verdict of the gate that judged
    the run, the file to ship per target, a full-width plot and a table per target with status chips and
    warning marks on their cells; alone (copied away from the run) and without console errors."""
    import json

    browser = chromium()
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "verdicts.json").unlink(missing_ok=True)  # other tests gate the shared run: start without one
    assert invoke("report", run_dir).exit_code == 0
    assert "No budget or baseline has been checked" in (run_dir / "report.html").read_text()
    budget = write_yaml(tmp_path / "b.yaml", {"variant": "student-int8", "max_size_mb": 0.0001})
    assert invoke("gate", run_dir, "--budget", budget).exit_code == 1
    assert invoke("report", run_dir).exit_code == 0  # the verdict is part of the run's record now
    page = tmp_path / "report.html"  # copied alone: it must not need tradeoff.png or anything beside it
    shutil.copyfile(run_dir / "report.html", page)
    dom = run(browser, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for fact in ("checkpoint", "recipe", "data", "machine", "date", "edgekd"):
        assert f"<dt>{fact}</dt>" in html, fact
    assert "sha256 " in html and json.loads((tiny_run / "manifest.json").read_text())["checkpoint"]["sha256"][:16] in html
    assert 'id="verdict" class="fail"' in html and "0/1 budget lines met" in html and "max_size_mb" in html
    targets = ["tiny-ort", "tiny-ov"]
    assert html.count('class="plot"') == len(targets)  # one full-width plot per target
    ship = html[html.index('id="ship"'):html.index("</section>", html.index('id="ship"'))]
    report = json.loads((run_dir / "report.json").read_text())
    rows = report["results"]
    for target in targets:
        chosen = ship_choice(report, target)  # the fastest usable row: its own runtime's file
        assert f'id="target-{target}"' in html and f"models/{Path(chosen['onnx']).name}" in ship, ship
    int8_ort = next(r for r in rows if r["variant"] == "student-int8" and r["target"] == "tiny-ort")
    assert int8_ort["onnx"].endswith(".u8s8.onnx")  # ONNX Runtime's INT8 file is its own layout
    chips = html.count('class="chip ')
    assert chips >= len(rows) + 1  # a status chip on every row, and the verdict's
    warned = sum(1 for r in rows for _ in ([1] if r.get("warnings") else []))
    assert html.count('class="mark" title=') >= min(warned, 1)  # warnings are marks on their cells
    assert 'src="data:image/png;base64,' in html and "What each stage did" in html
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    shot = tmp_path / "shot.png"
    run(browser, f"--screenshot={shot}", "--window-size=1100,1400", page.as_uri())
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[:, :, :3]
    coloured = (abs(pixels[:, :, 0] - pixels[:, :, 2]) > 0.2).sum()
    assert coloured > 500, "no coloured chips or markers: the page did not render"
