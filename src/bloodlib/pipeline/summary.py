"""``report/results.md``: a run's numbers as Markdown tables, computed by the library's own functions from what
the run saved, so that the README and the tests quote one generated file instead of numbers typed by hand.

From the saved predictions and metrics (``models/<name>/``, ``transfer/<name>/``, ``lolo/<name>/``): every
model's headline and the paired tests between them (notebook 07's :func:`bloodlib.study.comparison.compare`), and
notebook 08's cells at home and its from-scratch-against-fine-tuned comparison (:mod:`bloodlib.study.transfer`),
all with the run's own bootstrap size and seed; notebook 08's cross-lab cells and gap-narrowing methods from the
predictions it saved (``transfer/cells/``, :func:`bloodlib.study.transfer.save_cells`); notebook 09's
leave-one-lab-out rounds and each lab's own test part from its saved cells (``lolo/<name>/cells/``).

The part between :data:`START` and :data:`END` is the README's results table (:func:`splice_readme`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pandas as pd

from bloodlib import config, evaluation
from bloodlib.evaluation.significance import format_p
from bloodlib.pipeline import records
from bloodlib.study import comparison, lolo, transfer
from bloodlib.utils import fileio

RESULTS = "results.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclasses.dataclass
class RunResults:
    """What ``results.md`` shows of one run."""
    run_dir: Path
    record: dict  # run_record.json
    compared: comparison.Comparison  # notebook 07: the models side by side, the paired tests
    ci_method: str
    cells: pd.DataFrame  # notebook 08's train x test table, as transfer.display_table shows it
    gaps: dict[str, pd.DataFrame]  # architecture -> gap-narrowing table (transfer.display_gap)
    finetuned: dict[str, dict]  # architecture -> transfer.finetuned_against_scratch, + "weights": how it started
    across_labs: bool  # notebook 08 compared two labs in this run
    any_lab: dict[str, pd.DataFrame]  # notebook 09: architecture -> lolo.scores of its LOLO rounds and test parts


def run_settings(record: dict, run_dir: Path) -> dict:
    """The run's resolved settings as its record holds them, what a record leaves out (one written by hand, or
    before a setting existed) filled from its profile's defaults."""
    defaults = config.resolve(record.get("profile"), output_dir=run_dir).as_dict()
    return {**defaults, **(record.get("settings") or {})}


def collect(run_dir: str | os.PathLike) -> RunResults:
    """Recompute a run's results from its folder."""
    run_dir = Path(run_dir)
    record = records.read_run_record(run_dir)
    settings = record["settings"] = run_settings(record, run_dir)
    n, seed = settings["bootstrap"], settings["seed"]
    compared = comparison.compare(run_dir / "models", n=n, seed=seed)
    home = settings["dataset"]
    evals = compared.evaluations
    cells = [transfer.Cell(name, home, home, "cross-validation" if ev.fold is not None else "test part", ev)
             for name, ev in evals.items()]
    saved = run_dir / "transfer" / transfer.CELLS
    away = transfer.load_cells(saved) if saved.is_dir() else []
    cells += [cell for cell in away if cell.method == "none"]
    unadapted = {(c.model, c.trained_on, c.tested_on): c for c in away if c.method == "none"}
    gaps: dict[str, dict[str, transfer.Cell]] = {}  # model -> method -> cell, "none" first (transfer.gap_table)
    for cell in away:
        if cell.method != "none":
            methods = gaps.setdefault(cell.model, {"none": unadapted[(cell.model, cell.trained_on, cell.tested_on)]})
            methods[cell.method] = cell
    order = {name: i for i, name in enumerate(compared.table.index)}  # the ranking, as in the headline
    cells.sort(key=lambda cell: order.get(cell.model, len(order)))
    tuned = {folder.name: evaluation.load_evaluation(folder) for folder in sorted((run_dir / "transfer").glob("*"))
             if (folder / evaluation.METRICS).is_file()}
    finetuned = {name: {**transfer.finetuned_against_scratch(evals[name], ev),
                        "weights": comparison.initial_weights(ev)}
                 for name, ev in tuned.items()}
    ci_method = saved_ci_method(run_dir / "models" / next(iter(evals)))
    return RunResults(run_dir, record, compared, ci_method,
                      transfer.display_table(transfer.table(cells, n=n, seed=seed)),
                      {model: transfer.display_gap(transfer.gap_table(methods, n=n, seed=seed))
                       for model, methods in gaps.items()},
                      finetuned, bool(away), any_lab_scores(run_dir, n=n, seed=seed))


def any_lab_scores(run_dir: Path, *, n: int, seed: int) -> dict[str, pd.DataFrame]:
    """Notebook 09's saved cells, per architecture, scored as its page scores them: the LOLO rounds (every cell
    of the held-out lab) and each model's own lab's test part; empty when notebook 09 did not run."""
    shown = (lolo.HELD_OUT, lolo.AT_HOME)
    return {folder.name: lolo.scores([c for c in lolo.load_cells(folder) if c.images in shown], n=n, seed=seed)
            for folder in sorted(p.parent for p in (run_dir / lolo.FOLDER).glob(f"*/{lolo.RECORD}"))}


def saved_ci_method(folder: Path) -> str:
    """How the saved intervals were drawn (metrics.json's ``ci_method``)."""
    return json.loads((folder / evaluation.METRICS).read_text(encoding="utf-8")).get("ci_method", "bootstrap")


# ------------------------------------------------------------------------------------------ Markdown
def three(value: float) -> str:
    """Three decimals, as every page of the report shows a score; a dash where there is none (NaN)."""
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def with_ci(value: float, low: float, high: float) -> str:
    return f"{three(value)} [{three(low)}, {three(high)}]"


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def headline_table(results: RunResults) -> pd.DataFrame:
    table = results.compared.table
    return pd.DataFrame({
        "model": table.index,
        "fold-mean macro-F1": [three(v) for v in table["fold_macro_f1"]],
        **{f"{label} [95% CI]": [with_ci(*r) for r in table[[metric, f"{metric}_low", f"{metric}_high"]].to_numpy()]
           for metric, label in (("macro_f1", "pooled macro-F1"), ("balanced_accuracy", "balanced accuracy"))},
        "accuracy": [three(v) for v in table["accuracy"]],
        "weights": [comparison.initial_weights(results.compared.evaluations[model]) for model in table.index]})


def pair_table(results: RunResults) -> pd.DataFrame:
    """Every pair, the better-ranked model first: McNemar on the same images, the corrected t-test over folds."""
    rank = {name: i for i, name in enumerate(results.compared.table.index)}
    folds = results.compared.fold_tests
    rows = []
    for test in results.compared.mcnemar.itertuples():
        first, second = sorted((test.model_a, test.model_b), key=rank.get)
        right_first, right_second = (test.n10, test.n01) if first == test.model_a else (test.n01, test.n10)
        row = {"pair": f"{first} vs {second}",
               "right only in the first / the second": f"{right_first} / {right_second}",
               "McNemar p (Holm)": f"{format_p(test.p_value)} ({format_p(test.p_holm)})"}
        if folds is not None:
            fold = folds[(folds["model_a"] == test.model_a) & (folds["model_b"] == test.model_b)].iloc[0]
            sign = 1 if first == test.model_a else -1
            row["fold-mean macro-F1 difference"] = f"{sign * fold['mean_difference']:+.3f}"
            row[f"corrected resampled t-test p over {fold['folds']} folds (Holm)"] = (
                f"{format_p(fold['p_value'])} ({format_p(fold['p_holm'])})")
        rows.append((rank[first], rank[second], row))
    return pd.DataFrame([row for *_, row in sorted(rows, key=lambda r: r[:2])])


def headline_block(results: RunResults) -> str:
    """The README's results: what the run is, the headline table, the paired tests."""
    record, table = results.record, results.compared.table
    settings = record["settings"]
    n_test, repeats = int(table["n_test"].iloc[0]), settings.get("repeats") or 1
    if results.compared.fold_tests is None:
        protocol = f"one held-out test split of {n_test} cells"
    else:
        protocol = (f"{settings['folds']}-fold cross-validation: each of the {n_test} test cells is predicted once"
                    + (f" per repeat ({repeats} repeats; the first one is pooled)" if repeats > 1 else "")
                    + ", by the fold's model that did not train on it; pooled: over those predictions")
    lines = [START,
             f"Run `{record['run_id']}` (commit `{record['git']['short']}`), profile {record['profile']}, "
             f"dataset {settings['dataset']}, {settings['mode']} mode at {settings['image_size']} px, {protocol}. "
             f"Intervals: {results.ci_method}.",
             "", markdown_table(headline_table(results))]
    if len(results.compared.mcnemar):
        lines += ["", markdown_table(pair_table(results))]
    return "\n".join(lines + [END])


def across_labs_section(results: RunResults) -> list[str]:
    lines = ["## Across labs (notebook 08)", "",
             "### Trained in one lab, tested in another", "", markdown_table(results.cells), ""]
    for model, gap in results.gaps.items():
        shown = gap.reset_index()
        if "notes" in shown and not shown["notes"].str.strip().any():
            shown = shown.drop(columns="notes")
        lines += [f"### Narrowing the gap at test time ({model})", "", markdown_table(shown), ""]
    for model, compared in results.finetuned.items():
        per_fold = compared["per_fold"].reset_index()
        several = per_fold["repeat"].nunique() > 1
        shown = pd.DataFrame({"fold": [f"{r + 1}/{f + 1}" if several else str(f + 1)
                                       for r, f in zip(per_fold["repeat"], per_fold["fold"])],
                              "from scratch": [f"{v:.3f}" for v in per_fold["from scratch"]],
                              "fine-tuned": [f"{v:.3f}" for v in per_fold["fine-tuned"]],
                              "difference": [f"{v:+.3f}" for v in per_fold["difference"]]})
        means = per_fold[["from scratch", "fine-tuned", "difference"]].mean()
        shown.loc[len(shown)] = ["mean", f"{means['from scratch']:.3f}", f"{means['fine-tuned']:.3f}",
                                 f"{means['difference']:+.3f}"]
        fold, pair = compared["fold_test"].iloc[0], compared["mcnemar"].iloc[0]
        lines += [f"### {model}: trained from scratch, or {compared['weights']}: macro-F1 per fold", "",
                  markdown_table(shown), "",
                  f"{fold['method']}: p = {format_p(fold['p_value'])} over {fold['folds']} folds; McNemar "
                  f"({pair['method']}) on the pooled predictions: p = {format_p(pair['p_value'])} "
                  f"({pair['n01']} images right only fine-tuned, {pair['n10']} only from scratch).", ""]
    return lines


def any_lab_section(results: RunResults) -> list[str]:
    lines = ["## Any lab (notebook 09)", ""]
    for model, table in results.any_lab.items():
        rounds = table[table["images"] == lolo.HELD_OUT]
        at_home = table[table["images"] == lolo.AT_HOME]
        lines += [f"### Leave one lab out ({model}): every cell of the held-out lab, trained on the other labs", "",
                  markdown_table(lolo.display_lolo(table).reset_index()), "", lolo.travels_text(rounds), ""]
        if len(at_home):
            lines += [f"### Each lab's own test part ({model}): trained on that lab alone, or on every lab", "",
                      markdown_table(transfer.display_table(at_home).drop(columns=["model", "images"])), ""]
    return lines


def markdown(results: RunResults, *, run_href: str | None = None) -> str:
    """The whole of ``results.md``."""
    record = results.record
    where = run_href or results.run_dir.name
    lines = [f"# Results of run {record['run_id']}", "",
             f"Generated by `bloodlib.pipeline.summary` from `{where}` (commit `{record['git']['commit']}`"
             + (", with uncommitted changes" if record["git"].get("dirty") else "")
             + "); do not edit. `tests/test_results.py` recomputes it from the run's saved predictions.", "",
             "## Headline (notebook 07)", "", headline_block(results), ""]
    if results.across_labs or results.finetuned:  # notebook 08 ran and compared two labs
        lines += across_labs_section(results)
    if results.any_lab:
        lines += any_lab_section(results)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_results(run_dir: str | os.PathLike, dest: str | os.PathLike, *, run_href: str | None = None) -> Path:
    """Write ``dest`` (``report/results.md``) from the run folder ``run_dir``, atomically. ``run_href``: the run
    folder as the text names it (default: relative to ``dest``'s folder; pass it when ``dest`` is staged
    elsewhere)."""
    dest = Path(dest)
    href = run_href or Path(os.path.relpath(Path(run_dir).resolve(), dest.resolve().parent)).as_posix()
    return fileio.write_text(dest, markdown(collect(run_dir), run_href=href))


def block(text: str, source: str = "text") -> str:
    """The part of ``text`` from :data:`START` to :data:`END`, both included."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{source}: no {START} ... {END} block")
    return text[start:end + len(END)]


def splice_readme(readme: str, results: str) -> str:
    """``readme`` with its results block replaced by the one of ``results`` (the text of results.md)."""
    old = block(readme, "README")
    return readme.replace(old, block(results, RESULTS), 1)
