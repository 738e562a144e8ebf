"""The reference report committed in git: made by the full profile, from an ancestor of HEAD, on the shared
BCCD data, naming no absolute path of the machine that made it; `make publish`'s staging (what goes into git,
what never does); and the portable paths that the files of a run are written with."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bloodlib.data import fingerprint
from bloodlib.pipeline import publish as published
from bloodlib.utils import paths
from browser.check import references, resolve_link
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
    manifest = fingerprint.data_manifest(root, fingerprint.dataset_files("bccd", root))
    assert record["data"]["checksum"] == fingerprint.manifest_checksum(manifest)


def test_the_committed_report_is_small_and_holds_no_checkpoint():
    committed_record()
    tracked = [REPO / p for p in git("ls-files", "report").stdout.split()]
    assert sum(p.stat().st_size for p in tracked) <= published.MAX_BYTES
    assert not [p for p in tracked if p.suffix in (".pt", ".npy")]


def test_every_link_of_the_committed_report_reaches_a_committed_file():
    """A fresh clone holds only what publishing committed (no executed notebook, no checkpoint): every
    relative link of the committed index and pages must reach one of those files."""
    committed_record()
    tracked = {(REPO / p).resolve() for p in git("ls-files", "report").stdout.split()}
    dead = [f"{page.relative_to(REPO)}: {url}"
            for page in sorted(p for p in tracked if p.suffix == ".html" and "runs" not in p.parts)
            for tag, _, url in references(page)
            if (link := resolve_link(page, url))[0] == "file" and link[1] not in tracked]
    assert not dead, f"{len(dead)} link(s) to files not committed: {dead[:5]}"


# Placeholders of the notebooks' own text ("csv:/path/list.csv"), not paths of a machine.
PLACEHOLDERS = ("/path/",)


def test_the_committed_report_names_no_absolute_path():
    """Every committed text file of the report (index, pages, the published run's records, tables and logs)
    names paths relative to the checkout or by where they came from, never as the machine that made it did."""
    committed_record()
    tracked = [REPO / p for p in git("ls-files", "report").stdout.split()]
    found = {}
    for path in tracked:
        if path.suffix in published.TEXT:
            hits = [hit for hit in paths.absolute_paths(path.read_text(encoding="utf-8", errors="replace"))
                    if not hit.startswith(PLACEHOLDERS)]
            if hits:
                found[path.relative_to(REPO).as_posix()] = sorted(set(hits))[0]
    assert not found, f"{len(found)} committed file(s) hold absolute paths (republish: make publish): {found}"


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


def test_stage_refuses_a_file_holding_the_checkouts_path(tmp_path):
    repo = tmp_path / "repo"
    report = repo / "report"
    (report / "runs" / "new").mkdir(parents=True)
    (report / "pages").mkdir()
    (report / "pages" / "01_data.html").write_text("<td>report/runs/new</td>")
    (report / "index.html").write_text("<html></html>")
    (report / "runs" / "new" / "run.log").write_text(f"run new -> {repo}/report/runs/new\n")
    (report / "published.json").write_text(json.dumps({"run_id": "new", "run": "runs/new"}))
    git("init", "-q", cwd=repo)
    with pytest.raises(ValueError, match=r"hold the checkout's absolute path .*nothing was staged(.|\n)*run\.log"):
        published.stage(report, repo)
    assert not git("diff", "--cached", "--name-only", cwd=repo).stdout.split()
    (report / "runs" / "new" / "run.log").write_text("run new -> report/runs/new\n")
    published.stage(report, repo)
    assert "report/runs/new/run.log" in git("diff", "--cached", "--name-only", cwd=repo).stdout.split()


@pytest.mark.parametrize("path, shown", [
    ("{root}/report/runs/r1", "report/runs/r1"),
    ("{root}", "."),
    ("{root}/../shared/data/bccd", "../shared/data/bccd"),  # beside the checkout, as make exports it
    ("{parent}/shared/data/bccd", "../shared/data/bccd"),  # the same folder, resolved
    ("{cache}/backbones/k/best.pt", "$BLOODLIB_CACHE/backbones/k/best.pt"),
    ("{home}/.cache/torch/hub/w.pth", "~/.cache/torch/hub/w.pth"),
    ("/opt/elsewhere/cells", "…/cells"),
    ("../shared/data/bccd", "../shared/data/bccd"),  # relative: as given
])
def test_portable_names_a_path_by_where_it_is(path, shown, tmp_path, monkeypatch):
    root = tmp_path / "work" / "checkout"
    cache = tmp_path / "elsewhere" / "cache"
    for folder in (root, cache, root.parent / "shared" / "data" / "bccd"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("BLOODLIB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = path.format(root=root, parent=root.parent, cache=cache, home=tmp_path / "home")
    assert paths.portable(path, root) == shown


def test_portable_text_rewrites_the_paths_in_a_text_and_nothing_else():
    root = Path("/srv/me/checkout")
    text = ("papermill INFO: Input Notebook:  /srv/me/checkout/notebooks/01_a.ipynb\n"
            "/srv/me/checkout/src/bloodlib/x.py:12: UserWarning: see https://example.org/a/b/c\n"
            "data_dir=PosixPath('/srv/me/checkout/../shared/data/bccd') <td>/srv/me/shared</td> "
            "img/s and/or </td> <img src=\"data:image/png;base64,/9j/4AAQ+/ab/cd==\">")
    assert paths.portable_text(text, root) == (
        "papermill INFO: Input Notebook:  notebooks/01_a.ipynb\n"
        "src/bloodlib/x.py:12: UserWarning: see https://example.org/a/b/c\n"
        "data_dir=PosixPath('../shared/data/bccd') <td>../shared</td> "
        "img/s and/or </td> <img src=\"data:image/png;base64,/9j/4AAQ+/ab/cd==\">")
    assert paths.absolute_paths(text) == ["/srv/me/checkout/notebooks/01_a.ipynb", "/srv/me/checkout/src/bloodlib/x.py",
                                          "/srv/me/checkout/../shared/data/bccd", "/srv/me/shared"]
    assert paths.absolute_paths(paths.portable_text(text, root)) == []
    assert paths.absolute_paths("C:\\Users\\me\\bccd") == ["C:\\Users\\me\\bccd"]
    assert paths.mentions("run -> /srv/me/checkout/report", root) and not paths.mentions("/srv/me/checkout2", root)


def test_the_committed_report_shows_the_seed_spread_and_the_tuning_when_they_exist():
    """Once the seed-spread table is committed, the reference report made after it shows it in notebook 07, and
    that page says how each model was tuned (a report made before notebook 07 had these sections is older than
    the table and skips)."""
    spread = REPO / "benchmarks" / "results" / "seed_spread.csv"
    record = committed_record()
    if not spread.is_file():
        pytest.skip(f"{spread}: no seed-spread table yet (benchmarks/spread.py --table ...)")
    added = git("log", "--diff-filter=A", "--format=%H", "--", str(spread.relative_to(REPO))).stdout.split()
    if added and git("merge-base", "--is-ancestor", added[-1], record["git"]["commit"]).returncode != 0:
        pytest.skip("the committed report was made before the seed-spread table was committed")
    page = (REPO / "report" / "pages" / "07_comparison.html").read_text()
    assert "How much a rerun moves the answer" in page and "fold-mean macro-F1 per seed" in page
    assert "How each model was tuned" in page and "recipe chosen on validation" in page
