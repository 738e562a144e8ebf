"""The numbers the README and ``report/results.md`` print, recomputed from the committed reference run's saved
predictions (``report/runs/<run-id>/``): each model's headline, the paired tests, notebook 08's table. None is
typed by hand: results.md is what ``bloodlib.pipeline.summary`` makes of the run, its numbers are the saved
metrics', and every number of the README's results section is one of results.md's."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from bloodlib import evaluation
from bloodlib.evaluation.significance import format_p
from bloodlib.pipeline import summary
from bloodlib.pipeline.publish import published_run
from bloodlib.study import lolo, transfer
from conftest import REPO

REPORT = REPO / "report"
SHOWN = ("macro_f1", "balanced_accuracy", "accuracy")
# a number standing alone: 0.871, 3.8e-14, +0.263, 95 (in 95%), not the 18 of resnet18 or the 428331 of 428331f
NUMBER = re.compile(r"(?<![\w.])[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w])")


@pytest.fixture(scope="module")
def run() -> Path:
    if not (REPORT / "published.json").is_file():
        pytest.skip(f"{REPORT}: no published run (make publish, then commit)")
    run_dir = published_run(REPORT)
    assert (run_dir / "run_record.json").is_file(), f"{REPORT}/published.json names {run_dir}, which is not here"
    return run_dir


@pytest.fixture(scope="module")
def record(run) -> dict:
    return json.loads((run / "run_record.json").read_text())


@pytest.fixture(scope="module")
def bootstrap(record) -> dict:
    """The run's own bootstrap size and seed: the intervals it saved were drawn with them."""
    return {"n": record["settings"]["bootstrap"], "seed": record["settings"]["seed"]}


@pytest.fixture(scope="module")
def results_md(run) -> str:
    path = REPORT / summary.RESULTS
    assert path.is_file(), f"{path}: missing; write it with bloodlib.pipeline.summary.write_results"
    return path.read_text()


@pytest.fixture(scope="module")
def collected(run) -> summary.RunResults:
    return summary.collect(run)


def saved(folder: Path) -> dict:
    return json.loads((folder / evaluation.METRICS).read_text())


def markdown_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every Markdown table row of ``text`` whose first cell is ``first_cell``."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell} |")]


def results_section(readme: str) -> str:
    start = readme.index("\n## Results")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end > 0 else None]


# ------------------------------------------------------------------------------------------ headline
@pytest.mark.parametrize("kind", ["models", "transfer"])
def test_the_metrics_recomputed_from_the_predictions_are_the_saved_ones(run, bootstrap, kind):
    folders = sorted(p.parent for p in (run / kind).glob(f"*/{evaluation.METRICS}"))
    if kind == "models":
        assert len(folders) >= 2, f"{run / kind}: fewer than two models to compare"
    for folder in folders:
        ev, metrics = evaluation.load_evaluation(folder), saved(folder)
        first = ev.first_repeat()
        point = evaluation.metrics(ev.y_true[first], ev.y_prob[first], ev.classes)
        ci = evaluation.evaluation_ci(ev, **bootstrap)
        for metric in SHOWN:
            assert point[metric] == pytest.approx(metrics["headline"][metric], abs=1e-12), (folder, metric)
            assert ci.loc[metric, "low"] == pytest.approx(metrics["ci"][metric]["low"], abs=1e-12), (folder, metric)
            assert ci.loc[metric, "high"] == pytest.approx(metrics["ci"][metric]["high"], abs=1e-12), (folder, metric)
        fold_mean = evaluation.fold_metrics(ev)["macro_f1"].mean()
        assert fold_mean == pytest.approx(metrics["fold_summary"]["macro_f1"]["mean"], abs=1e-12), folder


def test_the_results_table_shows_each_models_saved_metrics(run, record, results_md):
    headline = summary.block(results_md, "results.md")
    for folder in sorted(p.parent for p in (run / "models").glob(f"*/{evaluation.METRICS}")):
        metrics = saved(folder)
        rows = markdown_rows(headline, metrics["model"])
        assert len(rows) == 1, f"results.md: no single headline row of {metrics['model']}"
        value, ci = metrics["headline"], metrics["ci"]
        assert rows[0][1:5] == [
            f"{metrics['fold_summary']['macro_f1']['mean']:.3f}",
            *[f"{value[m]:.3f} [{ci[m]['low']:.3f}, {ci[m]['high']:.3f}]" for m in ("macro_f1", "balanced_accuracy")],
            f"{value['accuracy']:.3f}"]
    assert f"`{record['run_id']}`" in headline and f"`{record['git']['short']}`" in headline
    assert f"{record['settings']['folds']}-fold cross-validation" in headline


# -------------------------------------------------------------------------------------- paired tests
def test_the_paired_tests_recomputed_are_notebook_07s_and_the_tables(run, results_md):
    evals = evaluation.load_all(run / "models")
    saved_tests = json.loads((run / "comparison" / "comparison.json").read_text())
    headline = summary.block(results_md, "results.md")
    for recomputed, kept in ((evaluation.pairwise_mcnemar(evals), saved_tests["mcnemar"]),
                             (evaluation.pairwise_fold_tests(evals), saved_tests["fold_tests"])):
        kept = {frozenset((r["model_a"], r["model_b"])): r for r in kept}
        assert len(recomputed) == len(kept) == len(evals) * (len(evals) - 1) // 2
        for row in recomputed.to_dict(orient="records"):
            other = kept[frozenset((row["model_a"], row["model_b"]))]
            for column in ("p_value", "p_holm"):
                assert row[column] == pytest.approx(other[column], rel=1e-9, abs=1e-300), (row, column)
            pair = (markdown_rows(headline, f"{row['model_a']} vs {row['model_b']}")
                    + markdown_rows(headline, f"{row['model_b']} vs {row['model_a']}"))
            assert len(pair) == 1, f"results.md: no single row of {row['model_a']} vs {row['model_b']}"
            shown = f"{format_p(row['p_value'])} ({format_p(row['p_holm'])})"
            assert shown in pair[0], (shown, pair[0])


# ------------------------------------------------------------------------------------------- notebook 08
def test_results_md_is_what_the_summary_makes_of_the_run(run, collected, results_md):
    href = Path(os.path.relpath(run, REPORT)).as_posix()
    assert summary.markdown(collected, run_href=href) == results_md, \
        "report/results.md is stale: rewrite it with bloodlib.pipeline.summary.write_results"


def saved_cells(run: Path) -> list[transfer.Cell]:
    if not (run / "transfer").is_dir():
        pytest.skip(f"{run}: notebook 08 did not compare two labs in this run")
    folder = run / "transfer" / transfer.CELLS
    assert folder.is_dir(), f"{folder}: notebook 08 ran but did not save its cells' predictions"
    return transfer.load_cells(folder)


def test_every_cell_of_notebook_08_is_recomputed_from_its_saved_predictions(run, collected, record, results_md):
    home = record["settings"]["dataset"]
    cells = saved_cells(run)
    models = sorted(p.parent.name for p in (run / "models").glob(f"*/{evaluation.METRICS}"))
    # the table summary.collect recomputed from the saved predictions: every home model at home, every saved cell
    shown = collected.cells.astype(str)
    assert len(shown) == len(models) + sum(c.method == "none" for c in cells)
    for row in shown.itertuples(index=False):  # results.md holds every cell, as recomputed here
        assert "| " + " | ".join(row) + " |" in results_md, row
    away = {c.tested_on for c in cells} - {home}
    assert away and all(any(c.model == m and c.tested_on in away for c in cells) for m in models), \
        "a home model was not scored on the other lab"
    for folder in sorted(p.parent for p in (run / "transfer").glob(f"*/{evaluation.METRICS}")):
        backbone = saved(folder)["metadata"]["extra"]["initial_weights"]
        own = [c for c in cells if (c.model, c.trained_on, c.tested_on) == (backbone["model"], backbone["dataset"],
                                                                            backbone["dataset"])]
        assert len(own) == 1 and len(own[0].evaluation.ids) == backbone["test_metrics"]["images"]
        scores = evaluation.metrics(own[0].evaluation.y_true, own[0].evaluation.y_prob, own[0].evaluation.classes)
        for metric in ("macro_f1", "accuracy"):  # the backbone's own record of its test part
            assert scores[metric] == pytest.approx(backbone["test_metrics"][metric], abs=1e-12), metric


def test_each_gap_narrowing_method_is_recomputed_on_the_same_images(run, bootstrap, results_md):
    cells = saved_cells(run)
    adapted = [c for c in cells if c.method != "none"]
    assert adapted, "notebook 08 saved no gap-narrowing method"
    for cell in adapted:
        base = next(c for c in cells if c.method == "none" and (c.model, c.trained_on, c.tested_on) ==
                    (cell.model, cell.trained_on, cell.tested_on))
        gap = transfer.display_gap(transfer.gap_table({"none": base, cell.method: cell}, **bootstrap))
        row = gap.reset_index().astype(str).iloc[1]
        assert f"| {row['method']} | {row['macro-F1']} | {row['macro-F1 95% CI']} | {row['accuracy']} |" in results_md


def test_fine_tuned_against_scratch_is_recomputed_from_both_runs(run, results_md):
    tuned = sorted(p.parent for p in (run / "transfer").glob(f"*/{evaluation.METRICS}"))
    if not tuned:
        pytest.skip(f"{run}: nothing fine-tuned (notebook 08 did not run)")
    for folder in tuned:
        pair = {"from scratch": evaluation.load_evaluation(run / "models" / folder.name),
                "fine-tuned": evaluation.load_evaluation(folder)}
        means = {name: evaluation.fold_metrics(ev)["macro_f1"].mean() for name, ev in pair.items()}
        assert means["fine-tuned"] == pytest.approx(saved(folder)["fold_summary"]["macro_f1"]["mean"], abs=1e-12)
        fold_test = evaluation.pairwise_fold_tests(pair).iloc[0]
        mcnemar = evaluation.pairwise_mcnemar(pair).iloc[0]
        assert f"| mean | {means['from scratch']:.3f} | {means['fine-tuned']:.3f} |" in results_md
        assert f"p = {format_p(fold_test['p_value'])} over {fold_test['folds']} folds" in results_md
        assert f"pooled predictions: p = {format_p(mcnemar['p_value'])}" in results_md


def test_every_leave_one_lab_out_round_is_recomputed_from_its_saved_predictions(run, results_md):
    folders = sorted(p.parent for p in (run / lolo.FOLDER).glob(f"*/{lolo.RECORD}"))
    if not folders:
        pytest.skip(f"{run}: notebook 09 did not run")
    assert "## Any lab (notebook 09)" in results_md
    for folder in folders:
        record = json.loads((folder / lolo.RECORD).read_text())
        rounds = [c for c in lolo.load_cells(folder) if c.images == lolo.HELD_OUT]
        # one round per lab and method, on every cell of the held-out lab the classes it shares
        assert sorted((c.tested_on, c.method) for c in rounds) == sorted(
            (lab, method) for lab in record["labs"] for method in record["methods"])
        for cell in rounds:
            ev = cell.evaluation
            assert sorted(ev.classes) == sorted(record["classes"])
            f1 = evaluation.metrics(ev.y_true, ev.y_prob, ev.classes)["macro_f1"]
            assert f"| {cell.tested_on} | {cell.method} | {cell.trained_on} | {len(ev.ids)} | {len(ev.classes)} | " \
                   f"{f1:.3f} [" in results_md, (cell.tested_on, cell.method)


# ----------------------------------------------------------------------------------------------- README
def test_the_readmes_results_are_results_md(results_md):
    readme = (REPO / "README.md").read_text()
    assert summary.block(readme, "README.md") == summary.block(results_md, "results.md"), \
        "README.md's results block differs from report/results.md's: summary.splice_readme brings it over"
    assert summary.splice_readme(readme, results_md) == readme


def test_every_number_of_the_readmes_results_section_is_one_of_results_md(results_md):
    known = set(NUMBER.findall(results_md))
    quoted = {"README.md's results section": results_section((REPO / "README.md").read_text())}
    for path in sorted((REPO / "docs").glob("*.md")):  # and the docs' paragraphs on the reference report
        for i, paragraph in enumerate(path.read_text().split("\n\n")):
            if paragraph.startswith("In the reference report"):
                quoted[f"{path.relative_to(REPO)}, paragraph {i + 1}"] = paragraph
    assert len(quoted) > 1, "docs/: no paragraph starting 'In the reference report'"
    for where, text in quoted.items():
        typed = [number for number in NUMBER.findall(text) if number not in known]
        assert not typed, f"{where} has numbers that report/results.md does not: {typed}"


def test_a_run_without_notebook_08_gets_its_headline_alone(run, tmp_path):
    copy = tmp_path / "report" / "runs" / run.name
    shutil.copytree(run / "models", copy / "models", ignore=shutil.ignore_patterns("*.pt", "history.csv"))
    shutil.copy(run / "run_record.json", copy)
    written = summary.write_results(copy, tmp_path / "report" / summary.RESULTS).read_text()
    assert summary.block(written) == summary.block((REPORT / summary.RESULTS).read_text())
    assert "Across labs" not in written and f"`runs/{run.name}`" in written
