"""The report as a reader sees it: every page opened in headless Chromium (Debian's chromium and
chromium-driver, selenium from requirements-test.txt), every image decoded, every link resolving to a file
of the report, a screenshot saved. A hand-made report always; a built one when ``BLOODLIB_CHECK_REPORT``
names its folder (CI: ``make report PROFILE=smoke``, then ``test_built_report_reads_in_browser`` with
``BLOODLIB_CHECK_REPORT=report``)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from browser.check import check_in_browser, missing_tools, summary
from browser.study import published_study

ENV_REPORT = "BLOODLIB_CHECK_REPORT"


@pytest.fixture(autouse=True)
def chromium():
    """Skip where the browser is missing; but fail when a built report was named, since checking it is the point."""
    if missing := missing_tools():
        reason = "not found: " + "; ".join(missing)
        if os.environ.get(ENV_REPORT):
            pytest.fail(f"{ENV_REPORT} is set but the browser check cannot run: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return published_study(tmp_path_factory.mktemp("report"))


def test_every_image_decodes_and_every_link_resolves(published):
    root, run_dir = published
    result = check_in_browser(root)
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
    result = check_in_browser(copy, screenshot=tmp_path / "index.png")
    problems = "\n".join(result["problems"])
    assert not result["ok"]
    assert "pages/02_figures.html: image not decoded" in problems
    assert "pages/02_figures.html: link does not resolve to a file in the report: ../runs/none/run.log" in problems
    assert (tmp_path / "index.png").is_file()


def test_built_report_reads_in_browser():
    """The report that ``BLOODLIB_CHECK_REPORT`` names; the index screenshot goes to its published run."""
    report_dir = os.environ.get(ENV_REPORT)
    if not report_dir:
        pytest.skip(f"no built report named (set {ENV_REPORT}=report after `make report PROFILE=smoke`)")
    result = check_in_browser(report_dir)
    assert result["ok"], summary(result)
    assert len(result["pages"]) > 1, summary(result)  # the index and at least one notebook page
