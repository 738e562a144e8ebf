"""``run --resume``: a run killed (SIGKILL) during training continues in its folder, keeps the notebooks and the
splits that had finished, continues the interrupted split from its last.pt and ends with the metrics of an
uninterrupted run; a resume with other parameters, code or data is refused and leaves the run as it was.

The study is a tiny git checkout of its own (so that its commit and uncommitted changes are the test's to
change): ``01_data`` fingerprints a folder of synthetic PNGs as notebook 01 does, ``02_train`` trains a
300-parameter CNN on it with :func:`bloodlib.experiment.run_model` over two cross-validation splits, as the
training notebooks do. Set ``HOLD_AT`` to a file and ``02_train`` stops dead at the first training step after
that file appears (writing its pid to ``HOLD_PID``): the test kills the run there, so where the kill lands
does not depend on timing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bloodlib.cli import run as run_command
from bloodlib.models import checkpoints
from bloodlib.pipeline import parameters, provenance, resume, runner
from browser.study import notebook

psutil = pytest.importorskip("psutil")

if shutil.which("git") is None:
    pytest.skip("git is needed to give the study a commit", allow_module_level=True)

DATA_PARAMS = """profile = None
data_dir = None
output_dir = None
dataset = "bccd"
seed = 42
"""

DATA = """
from bloodlib import config
from bloodlib.data import datasets
settings = config.resolve(profile=profile, data_dir=data_dir, output_dir=output_dir, dataset=dataset, seed=seed)
record = datasets.write_data_record(settings, datasets.locate(settings))
print(record["files"], "files, checksum", record["checksum"])
"""

TRAIN_PARAMS = """profile = None
data_dir = None
output_dir = None
resume = False
dataset = "bccd"
mode = "full"
image_size = None
seed = 42
epochs = None
patience = None
bootstrap = 50
"""

TRAIN = """
import os, pathlib, threading
from torch import nn
from bloodlib import config, models
from bloodlib.data import datasets
from bloodlib.study import experiment

class Tiny(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
        self.normalization = {"mean": [0.5] * 3, "std": [0.25] * 3}

    def forward(self, x):
        hold = os.environ.get("HOLD_AT")
        if self.training and hold and pathlib.Path(hold).exists():
            pid = pathlib.Path(os.environ["HOLD_PID"])
            pid.with_suffix(".tmp").write_text(str(os.getpid()))
            pid.with_suffix(".tmp").rename(pid)  # whole, for the test that reads it
            threading.Event().wait()  # held until the test kills the run
        return self.net(x)

models.REGISTRY["tiny"] = models.ModelSpec(lambda num_classes, pretrained: Tiny(num_classes), 8, "")
settings = config.resolve(**config.notebook_parameters(globals()))
prepared = datasets.prepare(settings, progress=False)
run = experiment.run_model(prepared, "tiny", pretrained="scratch", resume=resume, progress=False)
print("kept epochs", run.evaluation.extra["kept_epochs"])
"""

CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
TIMING = {"seconds", "images_per_second", "train_seconds", "throughput", "train_images_per_second"}
GIT = ("git", "-c", "user.name=test", "-c", "user.email=test@example.org")


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_checkout(folder: Path) -> Path:
    """A git checkout holding the study: pyproject.toml (what makes it the runner's repository root) and
    the two notebooks, committed."""
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[project]\nname = "study"\n')
    (folder / ".gitignore").write_text("__pycache__/\n")  # report/ is not ignored: the runner leaves it out
    notebook(folder / "notebooks" / "01_data.ipynb", [("md", "# 01 · Data"), ("params", DATA_PARAMS), ("code", DATA)])
    notebook(folder / "notebooks" / "02_train.ipynb", [("md", "# 02 · Train"), ("params", TRAIN_PARAMS),
                                                       ("code", TRAIN)])
    git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "the study")
    return folder


def make_cells(folder: Path, per_class: int = 10) -> Path:
    """A folder-per-class dataset of 16x16 PNGs, one colour per class plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
        colour = rng.integers(40, 215, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 30, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{name.lower()}_{i:02d}.png")
    return folder


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    """Poll the file system (or a process) until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: modification time and content hash, to tell whether anything changed."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


class Study:
    """Paths and the parameters the study is run with."""

    def __init__(self, root: Path):
        self.repo = make_checkout(root / "checkout")
        self.cells = make_cells(root / "cells")
        self.report = self.repo / "report"
        self.killed = root / "killed"  # a copy of report/ as the kill left it
        self.overrides = {"dataset": f"folder:{self.cells}", "image_size": 16, "epochs": 4, "patience": 10}
        self.args = ["--profile", "smoke"] + [a for k, v in self.overrides.items() for a in ("-p", k, str(v))]

    def cli(self, *args: str, output: Path, env: dict | None = None) -> subprocess.Popen:
        """``python -m bloodlib run ARGS`` in the checkout, its output to the file ``output``."""
        with output.open("w") as stream:
            return subprocess.Popen([sys.executable, "-m", "bloodlib", "run", *args], cwd=self.repo,
                                    env={**os.environ, **(env or {})}, stdout=stream, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """The study run once until SIGKILL stops it in the first epoch after split 2's last.pt; a copy of the
    run folder as the kill left it is kept for the refusal tests."""
    root = tmp_path_factory.mktemp("resume")
    study = Study(root)
    run_dir, held = study.report / "runs" / "r1", root / "kernel.pid"
    output = root / "killed.log"
    killed = study.cli("--report-dir", str(study.report), "--run-id", "r1", *study.args, output=output,
                       env={"HOLD_AT": str(run_dir / "models" / "tiny" / "split-02" / "last.pt"),
                            "HOLD_PID": str(held)})
    wait_for(lambda: held.exists() or killed.poll() is not None, "split 2's first epoch")
    assert killed.poll() is None, output.read_text()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    # the kernel (its own session) sees its parent gone and ends itself, writing nothing more
    wait_for(lambda: process_gone(int(held.read_text())), "the kernel to end after its runner", timeout=60)
    shutil.copytree(study.report, study.killed)
    return study


def test_a_run_killed_in_training_resumes_where_it_stopped(study, tmp_path):
    run_dir = study.report / "runs" / "r1"
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["status"] == "running"
    assert [(n["name"], n["status"]) for n in record["notebooks"]] == [("01_data", "ok"), ("02_train", "running")]
    split = study.killed / "runs" / "r1" / "models" / "tiny"
    last = checkpoints.read_checkpoint(split / "split-02" / "last.pt")
    assert last["state_dict"] is not None and not last["train_state"]["stopped"]  # killed mid-split
    before = snapshot(study.killed / "runs" / "r1")

    log = tmp_path / "resumed.log"
    resumed = study.cli("--resume", "--report-dir", str(study.report), output=log)  # profile and -p: the run's
    assert resumed.wait(timeout=600) == 0, log.read_text()
    output = log.read_text()
    assert "kept from the interrupted run" in output

    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["status"] == "complete" and record["promoted"]
    assert record["notebooks"][1]["path"] == "notebooks/02_train.ipynb"  # portable: the checkout's own notebooks
    assert record["notebooks"][1]["parameters"]["output_dir"] == "report/runs/r1"
    assert record["overrides"]["dataset"] == f"folder:{study.cells}"  # as given: the resume replayed it
    assert [(r["was"], r["kept"]) for r in record["resumed"]] == [("running", ["01_data"])]
    assert record["notebooks"][0]["kept"] and "kept" not in record["notebooks"][1]
    assert record["notebooks"][1]["parameters"]["resume"] is True
    after = snapshot(run_dir)
    for kept in ("notebooks/01_data.ipynb", "data/data_record.json", "data/data_manifest.csv",
                 "models/tiny/split-01/best.pt"):  # not executed or trained again
        assert after[kept] == before[kept], kept
    # the history of a finished split, and the first epoch of the interrupted one, come from the checkpoints
    history = pd.read_csv(run_dir / "models" / "tiny" / "history.csv")
    for i, (_, rows) in enumerate(history.groupby("split", sort=False), 1):
        saved = checkpoints.read_checkpoint(split / f"split-{i:02d}" / "last.pt")["train_state"]["history"]
        assert len(saved) == (4 if i == 1 else 1)
        assert rows["seconds"].tolist()[:len(saved)] == [row["seconds"] for row in saved], f"split {i}"

    # the training uninterrupted, in another report folder: the same predictions and metrics
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(study.repo)
        reference = runner.run(["02_train"], profile="smoke", overrides=study.overrides,
                               report_dir=tmp_path / "report", run_id="ref", log=lambda line: None)
    predictions = [(folder / "models" / "tiny" / "predictions.csv").read_text() for folder in (run_dir, reference)]
    assert predictions[0] == predictions[1]
    metrics = [json.loads((folder / "models" / "tiny" / "metrics.json").read_text()) for folder in (run_dir, reference)]
    assert metrics[0]["n_test"] == 40 and metrics[0]["headline"]
    assert without_timing(metrics[0]) == without_timing(metrics[1])
    histories = [pd.read_csv(folder / "models" / "tiny" / "history.csv").drop(columns=["seconds", "images_per_second"])
                 for folder in (run_dir, reference)]
    pd.testing.assert_frame_equal(*histories)


def copy_checkout(study: Study, folder: Path) -> Path:
    """The study's checkout, its commit and files, without the report folder (not code, but not ignored)."""
    return Path(shutil.copytree(study.repo, folder, ignore=shutil.ignore_patterns("report")))


def resume_copy(study: Study, tmp_path: Path, cwd: Path | None = None, **kwargs) -> tuple[Path, Exception | None]:
    """Resume a copy of the killed run in-process from ``cwd`` (default: a copy of the study's checkout as it
    was committed); the error, if any."""
    report = tmp_path / "report"
    shutil.copytree(study.killed, report)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd or copy_checkout(study, tmp_path / "checkout"))
        try:
            runner.run(report_dir=report, resume=True, log=lambda line: None, **kwargs)
        except resume.ResumeRefused as err:
            return report, err
    return report, None


def test_resume_with_another_parameter_is_refused_naming_it(study, tmp_path):
    report, err = resume_copy(study, tmp_path, profile="smoke", overrides={**study.overrides, "epochs": 5})
    assert err is not None and "parameter epochs (02_train): 4 in the run, 5 now" in str(err)
    assert "nothing was run or changed" in str(err)
    assert snapshot(report) == snapshot(study.killed)
    _, err = resume_copy(study, tmp_path / "profile", profile="full")
    assert "profile: smoke in the run, full now" in str(err)


def test_resume_with_other_code_is_refused_naming_both_commits_or_the_changed_files(study, tmp_path):
    checkout = copy_checkout(study, tmp_path / "changed")
    run_commit = git(checkout, "rev-parse", "HEAD").strip()
    (checkout / "README.md").write_text("a change not committed\n")
    report, err = resume_copy(study, tmp_path / "dirty", cwd=checkout)
    assert err is not None and "uncommitted changes" in str(err) and "README.md" in str(err)
    assert snapshot(report) == snapshot(study.killed)
    git(checkout, "add", "README.md")
    git(checkout, "commit", "-qm", "a README")
    report, err = resume_copy(study, tmp_path / "commit", cwd=checkout)
    now = git(checkout, "rev-parse", "HEAD").strip()
    assert err is not None and f"made at commit {run_commit}, the checkout is at commit {now}" in str(err)
    assert snapshot(report) == snapshot(study.killed)


def test_resume_with_other_data_is_refused_naming_both_checksums(study, tmp_path):
    run_checksum = json.loads((study.killed / "runs" / "r1" / "data" / "data_record.json").read_text())["checksum"]
    extra = study.cells / CLASSES[0] / "one_more.png"
    shutil.copyfile(next((study.cells / CLASSES[0]).glob("*.png")), extra)
    try:
        report, err = resume_copy(study, tmp_path)
        now = provenance.data_checksum("smoke", study.overrides, tmp_path)[1]
    finally:
        extra.unlink()
    assert err is not None and f"data: checksum {run_checksum} in the run, {now} now" in str(err)
    assert now != run_checksum
    assert snapshot(report) == snapshot(study.killed)


def test_the_run_a_resume_picks_and_the_runs_it_refuses(study, tmp_path):
    runs = tmp_path / "runs"
    for run_id, started, status, promoted in [("a", "2026-01-01T10:00:00", "failed", None),
                                              ("b", "2026-01-02T10:00:00", "interrupted", None),
                                              ("c", "2026-01-03T10:00:00", "complete", "2026-01-03T11:00:00"),
                                              ("d", "2026-01-01T09:00:00", "complete", None)]:
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "run_record.json").write_text(json.dumps(
            {"run_id": run_id, "started": started, "status": status, "promoted": promoted}))
    (runs / "e").mkdir()  # a record made before "promoted": "published" said the same
    (runs / "e" / "run_record.json").write_text(json.dumps(
        {"run_id": "e", "started": "2026-01-04T10:00:00", "status": "complete", "published": "2026-01-04T11:00:00"}))
    assert resume.find_resumable(runs).name == "b"  # the last started of those not complete and promoted
    assert resume.find_resumable(runs, "a").name == "a"
    assert resume.find_resumable(runs, "d").name == "d"  # complete, but killed before its report was made
    for done in ("c", "e"):
        with pytest.raises(resume.ResumeRefused, match="complete and its report made; there is nothing to resume"):
            resume.find_resumable(runs, done)
    with pytest.raises(resume.ResumeRefused, match="no such run"):
        resume.find_resumable(runs, "f")
    with resume.hold_run(runs / "b"):  # as the process running it holds it
        with pytest.raises(resume.ResumeRefused, match="another process is running this run"):
            with resume.hold_run(runs / "b"):
                pass
    assert run_command.main(["--resume", "c", "--report-dir", str(tmp_path)]) == 1
    assert run_command.main(["--resume", "--run-id", "x", "--report-dir", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", ["04_resnet", "05_efficientnet", "06_alexnet"])
def test_training_notebooks_take_resume_from_the_runner(name):
    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{name}.ipynb"
    assert parameters.declared_parameters(path)["resume"] == "False"
    steps = parameters.plan([path], "smoke", {}, Path("/run"), resume=True)
    assert steps[0].parameters["resume"] is True
    assert "experiment.run_model(prepared, model_name, pretrained=pretrained, resume=resume)" in path.read_text()


def test_git_info_fingerprints_every_uncommitted_change_but_the_report(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("kept.py", "edited.py", "moved.py", "gone.py"):
        (repo / name).write_text(f"# {name}\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "code")
    clean = provenance.git_info(repo)
    assert clean["dirty"] is False and clean["changes"] == {}
    (repo / "edited.py").write_text("# edited\n")
    git(repo, "mv", "moved.py", "new name.py")
    (repo / "gone.py").unlink()
    (repo / "sub").mkdir()
    (repo / "sub" / "untracked.py").write_text("# new\n")
    (repo / "report" / "runs").mkdir(parents=True)
    (repo / "report" / "runs" / "out.txt").write_text("a run's output\n")
    info = provenance.git_info(repo, exclude=repo / "report")
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    assert info["dirty"] is True and info["commit"] == clean["commit"]
    assert info["changes"] == {"edited.py": sha("# edited\n"), "gone.py": None, "moved.py": None,
                               "new name.py": sha("# moved.py\n"), "sub/untracked.py": sha("# new\n")}
    assert "report/runs/out.txt" in provenance.git_info(repo)["changes"]
    assert resume.code_differences(clean, clean) == []
    assert "differ from the run's in edited.py, gone.py, moved.py, new name.py, sub/untracked.py" in \
        resume.code_differences(clean, info)[0]
