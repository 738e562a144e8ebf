"""Publishing: the reference report, committed to git (``make publish``).

``make publish`` runs the full study (``make report``, whose complete run is promoted into ``report/``) and then
``python -m bloodlib publish``, which stages for commit the index, the pages and, of the run they were made from,
its results (run record, run log, data manifest and cleaning tables, metrics, predictions, histories,
comparison), but no checkpoint, cache, lock or executed notebook (the pages show what the notebooks hold; they
stay in the local run folder). Files of earlier published runs leave the index of git. A file that still holds
the checkout's absolute path is refused: what is committed is read on other machines. Nothing is committed:
the person publishing reviews ``git status`` and commits.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bloodlib.utils import paths

MARKER = "published.json"  # in the report folder: which run its index and pages show, the run publishing commits
MAX_BYTES = 25 * 2**20  # what the committed report may weigh: a full run with notebook 09 is 23 MB (10 MB of pages,
# 10 MB of leave-one-lab-out predictions: 33 scorings of up to 9,071 cells)
# Of the run folder: checkpoints, decoded caches, locks, temporary and hidden files; the executed notebooks,
# which repeat the pages' figures (6 MB of a full run); and the run's own copy of the pages and index, which
# report/pages and report/index.html already hold. They stay in the local run folder.
LEFT_OUT = ("*.pt", "*.npy", "*.lock", ".*", "notebooks/*.ipynb", "pages/*.html", "index.html")
TEXT = (".html", ".json", ".csv", ".log", ".md", ".txt")  # the committed files a path could be written in


def published_run(report_dir: Path) -> Path:
    """The run folder the report's index and pages were made from (:data:`MARKER`, written when the run
    was promoted into the report folder)."""
    record = Path(report_dir) / MARKER
    if not record.is_file():
        raise FileNotFoundError(f"{record}: no complete run was promoted here (run `make report` first)")
    return Path(report_dir) / json.loads(record.read_text(encoding="utf-8"))["run"]


def committed_files(report_dir: Path) -> list[Path]:
    """The files of the report that belong in git, in a stable order."""
    report_dir = Path(report_dir)
    run_dir = published_run(report_dir)
    files = [report_dir / "index.html", report_dir / MARKER, report_dir / "results.md",
             *sorted((report_dir / "pages").rglob("*"))]
    files += sorted(p for p in run_dir.rglob("*")
                    if not any(p.relative_to(run_dir).match(pattern) for pattern in LEFT_OUT)
                    and not any(part.startswith(".") for part in p.relative_to(run_dir).parts))
    return [p for p in files if p.is_file()]


def holding_checkout_path(files: list[Path], repo: Path) -> list[Path]:
    """The text files among ``files`` that hold ``repo``'s absolute path (a report made before paths were
    written portable, or a path a notebook printed that nothing made portable)."""
    return [p for p in files if p.suffix in TEXT and paths.mentions(p.read_text(encoding="utf-8", errors="replace"),
                                                                     repo)]


def stage(report_dir: Path, repo: Path) -> list[Path]:
    """``git add`` the committed files of the report (they are ignored otherwise), ``git rm --cached`` those of
    earlier runs; refuses a report over :data:`MAX_BYTES` or with a file holding the checkout's absolute path."""
    files = committed_files(report_dir)
    size = sum(p.stat().st_size for p in files)
    if size > MAX_BYTES:
        raise ValueError(f"{report_dir}: the report to commit weighs {size / 2**20:.1f} MB, over "
                         f"{MAX_BYTES / 2**20:.0f} MB; nothing was staged")
    if bad := holding_checkout_path(files, repo):
        raise ValueError(f"{len(bad)} file(s) of the report hold the checkout's absolute path {repo}, which means "
                         f"nothing on another machine; nothing was staged (make the report again):\n  "
                         + "\n  ".join(str(p) for p in bad))

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"git {' '.join(args[:2])}: {done.stderr.strip()}")
        return done.stdout

    relative = [p.resolve().relative_to(Path(repo).resolve()).as_posix() for p in files]
    tracked = set(git("ls-files", "--", Path(report_dir).resolve().relative_to(Path(repo).resolve()).as_posix())
                  .split())
    stale = sorted(tracked - set(relative) - {f"{Path(report_dir).name}/README.md"})
    if stale:
        git("rm", "--cached", "--quiet", "--", *stale)
    git("add", "--force", "--", *relative)
    return files
