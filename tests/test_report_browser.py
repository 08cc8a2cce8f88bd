"""report.html as a browser shows it (issue 15.6): headless Chromium renders the standalone page, finds the
tables and the inlined plot, and logs no console error."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from . import spawn


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
    browser = chromium()
    page = tmp_path / "report.html"  # copied alone: it must not need tradeoff.png or anything beside it
    shutil.copyfile(tiny_run / "report.html", page)
    dom = run(browser, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") >= 3 and "What each stage did" in dom.stdout
    assert 'src="data:image/png;base64,' in dom.stdout
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    shot = tmp_path / "shot.png"
    run(browser, f"--screenshot={shot}", "--window-size=1000,900", page.as_uri())
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[:, :, :3]
    plot_band = pixels[60:400]  # the plot sits under the title
    coloured = (abs(plot_band[:, :, 0] - plot_band[:, :, 2]) > 0.2).sum()
    assert coloured > 100, "no coloured markers where the plot should be: the inlined image did not render"
