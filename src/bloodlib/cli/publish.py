"""``python -m bloodlib publish`` (the second half of ``make publish``): the report in ``report/`` (the latest
complete run, promoted there by ``make report``) staged for commit."""
from __future__ import annotations

import argparse
from pathlib import Path

from bloodlib.pipeline.provenance import repo_root
from bloodlib.pipeline import summary
from bloodlib.pipeline.publish import published_run, stage
from bloodlib.utils import fileio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report-dir", type=Path, default=None, help="default: <repo>/report")


def main(args: argparse.Namespace) -> int:
    repo = repo_root()
    report_dir = args.report_dir or repo / "report"
    try:
        results = (report_dir / summary.RESULTS).read_text(encoding="utf-8")
        readme = repo / "README.md"  # its results block quotes the report's results.md
        fileio.write_text(readme, summary.splice_readme(readme.read_text(encoding="utf-8"), results))
        files = stage(report_dir, repo)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}")
        return 1
    size = sum(p.stat().st_size for p in files)
    print(f"staged {len(files)} files of {published_run(report_dir).name} ({size / 2**20:.1f} MB); "
          f"and README.md's results block rewritten from {summary.RESULTS}; review `git status` and `git diff`, then "
          f"commit")
    return 0
