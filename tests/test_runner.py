"""The runner on a tiny synthetic study (three notebooks, seconds each): parameters reach every notebook,
unknown names are refused before anything runs, a failing cell is named and leaves the report as it was, and
what the run leaves to be committed names no absolute path of this machine."""
from __future__ import annotations

import json
import re
import shutil

import nbformat
import pytest

from bloodlib import config
from bloodlib.cli import run as run_command
from bloodlib.pipeline import parameters, publish, report as rep, runner
from bloodlib.pipeline.promote import promote
from bloodlib.utils import paths
from browser.check import check_report
from browser.study import make_run, make_study, received


@pytest.mark.parametrize("text, value", [
    ("96", 96), ("-3", -3), ("0.5", 0.5), ("1e-3", 0.001), ("None", None), ("none", None), ("null", None),
    ("true", True), ("True", True), ("false", False), ("resnet18", "resnet18"), ("[1, 2]", [1, 2]),
    ("../shared/data/bccd", "../shared/data/bccd"), ("2024-01-01", "2024-01-01"), ("", ""), ("a: [", "a: ["),
])
def test_parse_value_types_like_papermill_and_yaml(text, value):
    assert parameters.parse_value(text) == value
    assert type(parameters.parse_value(text)) is type(value)


def test_read_config_flat_and_per_notebook(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("image_size: 96\nepochs: 40\n04_resnet:\n  epochs: 5\n")
    assert parameters.read_config(path) == {"image_size": 96, "epochs": 40, "04_resnet": {"epochs": 5}}
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="study.yaml: expected a mapping"):
        parameters.read_config(path)
    path.write_text("a: [\n")
    with pytest.raises(ValueError, match="study.yaml: not valid YAML"):
        parameters.read_config(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parameters.read_config(tmp_path / "missing.yaml")


def test_plan_routes_names_to_the_notebooks_that_declare_them(tmp_path):
    nbs = make_study(tmp_path)
    steps = parameters.plan(nbs, "smoke", {"epochs": 3, "03_models": {"model_name": "x"}, "02.seed": 7}, tmp_path / "r")
    params = {s.notebook.stem: s.parameters for s in steps}
    assert "epochs" not in params["01_data"] and params["02_figures"]["epochs"] == 3
    assert params["03_models"]["model_name"] == "x" and "model_name" not in params["02_figures"]
    assert params["02_figures"]["seed"] == 7 and "seed" not in params["01_data"]
    assert all(p["profile"] == "smoke" and p["output_dir"] == str(tmp_path / "r") for p in params.values())


def test_unknown_parameter_refused_before_anything_runs(tmp_path, capsys):
    nbs = make_study(tmp_path)
    report = tmp_path / "report"
    code = run_command.main([*map(str, nbs), "--report-dir", str(report), "-p", "epoch", "3",
                        "-p", "09_nothing.seed", "1", "-p", "output_dir", "/elsewhere"])
    err = capsys.readouterr().err
    assert code == 1
    assert "epoch: no notebook declares it" in err and "did you mean 'epochs'?" in err
    assert "09_nothing.seed: no notebook '09_nothing'" in err
    assert "output_dir: set by the runner" in err
    assert not report.exists()  # not even a run folder


def test_unknown_notebook_and_profile_are_clear_errors(tmp_path, capsys):
    make_study(tmp_path)
    with pytest.raises(FileNotFoundError, match="04_resnet: no such notebook"):
        parameters.find_notebooks(["04_resnet"], tmp_path / "notebooks")
    assert [p.stem for p in parameters.find_notebooks(["02_figures", "01_data.ipynb"], tmp_path / "notebooks")] == \
        ["02_figures", "01_data"]
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        runner.run(parameters.find_notebooks(None, tmp_path / "notebooks"), profile="fast", report_dir=tmp_path / "r")


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """One complete run of the synthetic study, with a YAML file and -p overrides, under MPLBACKEND=Agg
    (as CI exports it): the figures must still land in the notebooks."""
    folder = tmp_path_factory.mktemp("study")
    nbs = make_study(folder)
    config = folder / "params.yaml"
    config.write_text("image_size: 40\nseed: 3\n03_models:\n  model_name: from_yaml\n")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLBACKEND", "Agg")
        run_dir = runner.run(nbs, profile="smoke", overrides={"image_size": 32, "epochs": 3}, config_file=config,
                             report_dir=folder / "report", log=lines.append)
    return run_dir, lines


def test_parameters_reach_every_notebook(study_run):
    run_dir, _ = study_run
    first, second, third = (received(run_dir, n) for n in ("01_data", "02_figures", "03_models"))
    for got in (first, second, third):
        assert got["profile"] == "smoke" and got["output_dir"] == str(run_dir)
        assert got["image_size"] == 32  # -p wins over the YAML file
        assert got["seed"] == 3  # from the YAML file
    assert "epochs" not in first and second["epochs"] == 3 and third["epochs"] == 3
    assert third["model_name"] == "from_yaml"


def test_progress_line_per_notebook(study_run):
    run_dir, lines = study_run
    progress = [l for l in lines if l.startswith("[")]
    assert [l.split()[1] for l in progress] == ["01_data", "02_figures", "03_models"]
    assert all(re.fullmatch(r"\[\d/3\] \w+ \.\.\. ok \d+\.\d s", l) for l in progress)
    log = (run_dir / "run.log").read_text()
    assert all(l in log for l in progress)


def test_run_folder_holds_notebooks_pages_results_and_logs(study_run):
    run_dir, _ = study_run
    for name in ("01_data", "02_figures", "03_models"):
        assert (run_dir / "notebooks" / f"{name}.ipynb").is_file()
        assert (run_dir / "pages" / f"{name}.html").is_file()
        assert (run_dir / "logs" / f"{name}.log").is_file()
    assert (run_dir / "models" / "from_yaml" / "metrics.json").is_file()
    figures = nbformat.read(run_dir / "notebooks" / "02_figures.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in figures.cells for o in c.get("outputs", []))
    assert "a warning nobody needs" in (run_dir / "logs" / "02_figures.log").read_text()


def test_run_record(study_run):
    run_dir, _ = study_run
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["status"] == "complete" and record["profile"] == "smoke" and record["run_id"] == run_dir.name
    assert set(record["git"]) == {"commit", "short", "dirty", "changes"}  # changes: what a resume compares
    assert {"python", "torch", "timm", "numpy", "pandas", "scikit-learn", "papermill", "nbconvert"} <= set(record["versions"])
    assert record["device"]["device"] in ("cpu", "cuda", "mps")
    assert record["data"]["checksum"] == "c0ffee" * 10 + "beef"
    assert record["models"]["from_yaml"]["pretrained"] == "scratch"
    assert record["settings"]["image_size"] == 32 and record["settings"]["train"]["epochs"] == 3
    third = record["notebooks"][2]["settings"]  # what the training notebook resolved to, its recipe included
    assert third["model"] == "from_yaml" and third["train"]["epochs"] == 3 and third["seed"] == 3
    assert third["train"]["lr"] == config.TrainConfig.lr
    assert [n["name"] for n in record["notebooks"]] == ["01_data", "02_figures", "03_models"]
    assert record["promoted"] >= record["finished"] >= record["started"]
    assert all(n["status"] == "ok" and n["seconds"] > 0 for n in record["notebooks"])


def test_what_the_run_leaves_names_no_absolute_path(study_run):
    """The files a publish would commit, and the run's own pages and index: portable paths only; the kernel
    still got its output_dir absolute (test_parameters_reach_every_notebook)."""
    run_dir, lines = study_run
    report = run_dir.parent.parent
    files = [*publish.committed_files(report), run_dir / "index.html", *(run_dir / "pages").glob("*.html")]
    # received/: the synthetic notebooks' own copy of the parameters they got, absolute as the kernel got them
    texts = {p: p.read_text() for p in files if p.suffix in publish.TEXT and "received" not in p.parts}
    assert {"run_record.json", "run.log", "01_data.log", "index.html", "02_figures.html"} <= {p.name for p in texts}
    found = {p.relative_to(report).as_posix(): paths.absolute_paths(text) for p, text in texts.items()}
    assert not {name: hits for name, hits in found.items() if hits}
    assert not [line for line in lines if paths.absolute_paths(line)]  # the terminal's lines too
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["notebooks"][0]["parameters"]["output_dir"] == paths.portable(run_dir, config.project_root())
    assert record["settings"]["output_dir"] == record["notebooks"][0]["parameters"]["output_dir"]
    assert not paths.absolute_paths(json.dumps(record))


def test_promoted_report_is_the_run(study_run):
    run_dir, _ = study_run
    report = run_dir.parent.parent
    assert json.loads((report / "published.json").read_text())["run"] == f"runs/{run_dir.name}"
    assert sorted(p.name for p in (report / "pages").iterdir()) == ["01_data.html", "02_figures.html", "03_models.html"]
    index = (report / "index.html").read_text()
    assert f'href="runs/{run_dir.name}/run_record.json"' in index and 'href="pages/02_figures.html"' in index
    assert not [p for p in report.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_failing_cell_named_partial_kept_report_untouched(study_run, tmp_path, capsys):
    run_dir, _ = study_run
    report = tmp_path / "report"
    shutil.copytree(run_dir.parent.parent, report)
    before = {p: p.read_bytes() for p in report.rglob("*") if p.is_file() and "runs" not in p.parts}
    nbs = sorted((run_dir.parent.parent.parent / "notebooks").glob("*.ipynb"))
    code = run_command.main([*map(str, nbs), "--profile", "smoke", "--report-dir", str(report), "-p", "image_size", "8",
                        "--run-id", "bad"])
    err = capsys.readouterr().err
    assert code == 1
    assert "notebook 01_data.ipynb, cell 3: ValueError: image_size must be at least 16 pixels, got 8" in err
    partial = nbformat.read(report / "runs" / "bad" / "notebooks" / "01_data.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in partial.cells for o in c.get("outputs", []))
    assert not (report / "runs" / "bad" / "notebooks" / "02_figures.ipynb").exists()  # the run stopped
    record = json.loads((report / "runs" / "bad" / "run_record.json").read_text())
    assert record["status"] == "failed" and "cell 3" in record["failure"]["error"]
    after = {p: p.read_bytes() for p in report.rglob("*") if p.is_file() and "runs" not in p.parts}
    assert after == before  # byte for byte
    assert (report / "runs" / run_dir.name).is_dir()


def test_promote_replaces_the_previous_report_and_keeps_runs(tmp_path):
    report = tmp_path / "report"
    old = make_run(report / "runs" / "20260101-000000-aaaaaaa")
    rep.render_run(old)
    promote(old, report)
    (report / "pages" / "stale.html").write_text("from an older run")
    new = make_run(report / "runs" / "20260102-000000-bbbbbbb", models=False)
    rep.render_run(new)
    promote(new, report)
    assert not (report / "pages" / "stale.html").exists()
    assert json.loads((report / "published.json").read_text())["run_id"] == new.name
    assert old.is_dir() and new.is_dir()
    assert sorted(p.name for p in report.iterdir()) == ["index.html", "pages", "published.json", "runs"]
    assert check_report(report)["ok"]
