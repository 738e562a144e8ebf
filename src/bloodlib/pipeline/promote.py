"""Promote a run: the latest complete run becomes ``report/index.html`` and ``report/pages/``.

Every run renders its own pages and index in its folder (``report/runs/<run-id>/``); :func:`promote` swaps a
complete run's into the report folder, which then shows that run (``published.json`` names it). Committing
that report to git is another step, publishing (:mod:`bloodlib.pipeline.publish`, ``make publish``).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from bloodlib.pipeline import report, summary
from bloodlib.pipeline.publish import MARKER
from bloodlib.utils import fileio

SHOWN = ("pages", "index.html", MARKER, summary.RESULTS)  # what the report folder holds of its run, besides runs/ and README.md


def promote(run_dir: Path, report_dir: Path) -> Path:
    """Swap the run's pages and index into ``report_dir``: built under a temporary name first, the old
    copy moved aside and removed only once the new one is in place (restored if the swap fails)."""
    run_dir, report_dir = Path(run_dir).resolve(), Path(report_dir).resolve()
    if not run_dir.is_relative_to(report_dir):
        raise ValueError(f"{run_dir}: not inside {report_dir}; the index links to the run folder, so it must be there")
    run_id, run_href = run_dir.name, run_dir.relative_to(report_dir).as_posix()
    staging, old = report_dir / f".promote-{run_id}", report_dir / f".old-{run_id}"
    for folder in (staging, old):
        shutil.rmtree(folder, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(run_dir / "pages", staging / "pages")
    # the executed notebooks stay in the run folder, uncommitted: this index (committed) names their folder
    report.write_index(run_dir, staging / "index.html", run_href=run_href, link_notebooks=False)
    fileio.write_json(staging / MARKER, {"run_id": run_id, "run": run_href,
                                         "promoted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if (run_dir / "models").is_dir():  # the numbers the README quotes; a run that trained nothing has none
        summary.write_results(run_dir, staging / summary.RESULTS, run_href=run_href)
    old.mkdir()
    moved = []
    try:
        for name in SHOWN:
            if (report_dir / name).exists():
                os.rename(report_dir / name, old / name)
            moved.append(name)
            if (staging / name).exists():
                os.rename(staging / name, report_dir / name)
    except OSError:
        for name in reversed(moved):  # put the previous report back as it was
            if (old / name).exists():
                if (report_dir / name).is_dir():
                    shutil.rmtree(report_dir / name)
                os.replace(old / name, report_dir / name)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return report_dir / "index.html"
