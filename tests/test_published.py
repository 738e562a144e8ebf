"""The reference report committed in git: made by the full profile, from an ancestor of HEAD, on the shared
BCCD data; and `make publish`'s staging (what goes into git, what never does)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bloodlib.data import acquire
from bloodlib.pipeline import publish as published
from conftest import REPO, data_root


def git(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)


def committed_record() -> dict:
    tracked = git("ls-files", "report/runs").stdout.split()
    records = [p for p in tracked if p.endswith("/run_record.json") and p.count("/") == 3]
    if git("rev-parse", "HEAD").returncode or not records:
        pytest.skip("no reference report committed (make publish, then commit)")
    assert len(records) == 1, f"one published run is committed, found {records}"
    return json.loads((REPO / records[0]).read_text())


def test_the_committed_report_comes_from_an_ancestor_of_head_with_the_full_profile():
    record = committed_record()
    assert record["profile"] == "full" and record["status"] == "complete"
    commit = record["git"]["commit"]
    assert git("merge-base", "--is-ancestor", commit, "HEAD").returncode == 0, f"{commit} is not an ancestor of HEAD"
    index = (REPO / "report" / "index.html").read_text()
    assert record["git"]["commit"] in index and record["started"] in index  # the index says when and from what
    assert json.loads((REPO / "report" / "published.json").read_text())["run_id"] == record["run_id"]


def test_the_committed_report_used_the_shared_bccd_data():
    record = committed_record()
    root = data_root()
    if not (root / "dataset-master").is_dir():
        pytest.skip(f"the shared BCCD data is not at {root}")
    manifest = acquire.data_manifest(root, acquire.dataset_files("bccd", root))
    assert record["data"]["checksum"] == acquire.manifest_checksum(manifest)


def test_the_committed_report_is_small_and_holds_no_checkpoint():
    committed_record()
    tracked = [REPO / p for p in git("ls-files", "report").stdout.split()]
    assert sum(p.stat().st_size for p in tracked) <= published.MAX_BYTES
    assert not [p for p in tracked if p.suffix in (".pt", ".npy")]


def test_stage_adds_the_report_and_drops_earlier_runs(tmp_path):
    repo = tmp_path / "repo"
    report = repo / "report"
    for run in ("old", "new"):
        (report / "runs" / run / "models" / "m").mkdir(parents=True)
        (report / "runs" / run / "pages").mkdir()
        (report / "runs" / run / "pages" / "01_data.html").write_text("<html></html>")  # report/pages has it
        (report / "runs" / run / "index.html").write_text("<html></html>")
        (report / "runs" / run / "run_record.json").write_text("{}")
        (report / "runs" / run / "models" / "m" / "metrics.json").write_text("{}")
        (report / "runs" / run / "models" / "m" / "best.pt").write_bytes(b"weights")
    (report / "pages").mkdir()
    (report / "pages" / "01_data.html").write_text("<html></html>")
    (report / "index.html").write_text("<html></html>")
    (report / "README.md").write_text("generated")
    (repo / ".gitignore").write_text("report/*\n!report/README.md\n")
    git("init", "-q", cwd=repo)
    git("add", ".gitignore", "report/README.md", cwd=repo)
    git("add", "--force", "report/runs/old/run_record.json", cwd=repo)
    (report / "published.json").write_text(json.dumps({"run_id": "new", "run": "runs/new"}))

    published.stage(report, repo)
    staged = set(git("diff", "--cached", "--name-only", cwd=repo).stdout.split())
    assert staged == {".gitignore", "report/README.md", "report/index.html", "report/published.json",
                      "report/pages/01_data.html", "report/runs/new/run_record.json",
                      "report/runs/new/models/m/metrics.json"}  # the old run's record left, no checkpoint came

    published.MAX_BYTES, saved = 10, published.MAX_BYTES
    try:
        with pytest.raises(ValueError, match="over"):
            published.stage(report, repo)
    finally:
        published.MAX_BYTES = saved
