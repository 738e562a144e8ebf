"""The report as a reader sees it: every page opened in headless Chromium (Debian's chromium and
chromium-driver), every image decoded, every link resolving to a file of the report, a screenshot saved."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bloodlib import report
from browser.study import published_study

pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements.txt)")
for tool in (report.CHROMIUM, report.CHROMEDRIVER):
    if not Path(tool).is_file():
        pytest.skip(f"{tool} not found (apt-get install chromium chromium-driver)", allow_module_level=True)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return published_study(tmp_path_factory.mktemp("report"))


def test_every_image_decodes_and_every_link_resolves(published):
    root, run_dir = published
    result = report.check_in_browser(root)
    assert result["ok"], result["problems"]
    pages = {p["page"]: p for p in result["pages"]}
    assert set(pages) == {"index.html", "pages/01_data.html", "pages/02_figures.html"}
    assert pages["index.html"]["images"] == 1 and pages["pages/01_data.html"]["images"] == 1
    assert pages["index.html"]["links"] >= 5
    screenshot = Path(result["screenshot"])
    assert screenshot == run_dir / "index.png"  # in the published run's folder
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000


def test_broken_image_and_link_are_reported(published, tmp_path):
    root, _ = published
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    page = copy / "pages" / "02_figures.html"
    page.write_text(page.read_text().replace(
        "</main>", '<img src="data:image/png;base64,AAAA"><a href="../runs/none/run.log">log</a></main>'))
    result = report.check_in_browser(copy, screenshot=tmp_path / "index.png")
    problems = "\n".join(result["problems"])
    assert not result["ok"]
    assert "pages/02_figures.html: image not decoded" in problems
    assert "pages/02_figures.html: link does not resolve to a file in the report: ../runs/none/run.log" in problems
    assert (tmp_path / "index.png").is_file()
