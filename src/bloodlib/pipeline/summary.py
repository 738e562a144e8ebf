"""``report/results.md``: a run's numbers as Markdown tables, computed by the library's own functions from what
the run saved, so that the README and the tests quote one generated file instead of numbers typed by hand.

From the saved predictions and metrics (``models/<name>/``, ``transfer/<name>/``): every model's headline and
the paired tests between them (notebook 07's :func:`bloodlib.study.comparison.compare`), and notebook 08's cells
at home and its from-scratch-against-fine-tuned comparison (:mod:`bloodlib.study.transfer`), all with the run's
own bootstrap size and seed. Notebook 08's cross-lab cells and gap-narrowing methods are scored on images whose
predictions a run does not keep: they are read from the run's rendered page 08 and say so.

The part between :data:`START` and :data:`END` is the README's results table (:func:`splice_readme`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pandas as pd
from bs4 import BeautifulSoup

from bloodlib import evaluation
from bloodlib.pipeline.publish import published_run
from bloodlib.study import comparison, transfer
from bloodlib.utils import fileio

RESULTS = "results.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
ACROSS_LABS_PAGE = "08_across_labs"
FROM_PAGE = "page 08"  # the "numbers from" of a cell read from the rendered notebook, not recomputed


@dataclasses.dataclass
class RunResults:
    """What ``results.md`` shows of one run."""
    run_dir: Path
    record: dict  # run_record.json
    compared: comparison.Comparison  # notebook 07: the models side by side, the paired tests
    ci_method: str
    cells: pd.DataFrame  # notebook 08's train x test table, as transfer.display_table shows it, + "numbers from"
    gaps: dict[str, pd.DataFrame]  # architecture -> gap-narrowing table, as page 08 shows it
    finetuned: dict[str, dict]  # architecture -> transfer.finetuned_against_scratch, + "weights": where from
    page: Path | None  # the rendered page 08 the cross-lab numbers come from


def run_record(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "run_record.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; is {run_dir} a run folder?") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None


def rendered_page(run_dir: str | os.PathLike, stem: str) -> Path | None:
    """The run's own ``pages/<stem>.html``, else the published report's when it was made from this run (the
    committed run folder leaves its pages to ``report/pages``)."""
    run_dir = Path(run_dir)
    own = run_dir / "pages" / f"{stem}.html"
    if own.is_file():
        return own
    report_dir = run_dir.parent.parent
    if (report_dir / "published.json").is_file() and published_run(report_dir).resolve() == run_dir.resolve():
        published = report_dir / "pages" / f"{stem}.html"
        return published if published.is_file() else None
    return None


def page_tables(page: Path) -> list[tuple[str | None, pd.DataFrame]]:
    """Every pandas table of a rendered notebook with one index level, as text, with the bold label shown above
    it (or None). A table with several index levels (rows of uneven length) is left out."""
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    found = []
    for table in soup.find_all("table", class_="dataframe"):
        head = [[cell.get_text(strip=True) for cell in row.find_all("th")] for row in table.thead.find_all("tr")]
        columns = list(head[0])
        if len(head) > 1 and head[1] and head[1][0]:  # a named index: its name is on a second header row
            columns[0] = head[1][0]
        rows = [[cell.get_text(strip=True) for cell in row.find_all(["th", "td"])]
                for row in table.tbody.find_all("tr")]
        if any(len(row) != len(columns) for row in rows):
            continue
        frame = pd.DataFrame(rows, columns=columns)
        if not columns[0]:  # an unnamed 0..n index
            frame = frame.drop(columns=columns[0])
        label = table.find_previous("strong")
        found.append((label.get_text(strip=True) if label else None, frame))
    return found


def collect(run_dir: str | os.PathLike, *, page: Path | None = None) -> RunResults:
    """Recompute a run's results from its folder; ``page``: its rendered notebook 08 (default: looked for)."""
    run_dir = Path(run_dir)
    record = run_record(run_dir)
    n, seed = record["settings"]["bootstrap"], record["settings"]["seed"]
    compared = comparison.compare(run_dir / "models", n=n, seed=seed)
    home = record["settings"]["dataset"]
    evals = compared.evaluations
    cells = transfer.display_table(transfer.table(
        [transfer.Cell(name, home, home, "cross-validation" if ev.fold is not None else "test part", ev)
         for name, ev in evals.items()], n=n, seed=seed))
    cells["numbers from"] = "recomputed"
    tuned = evaluation.load_all(run_dir / "transfer") if (run_dir / "transfer").is_dir() else {}
    finetuned = {name: {**transfer.finetuned_against_scratch(evals[name], ev), "weights": ev.pretrained_source}
                 for name, ev in tuned.items()}
    page = page or rendered_page(run_dir, ACROSS_LABS_PAGE)
    gaps = {}
    if page is not None:
        for label, table in page_tables(page):
            if {"trained on", "tested on"} <= set(table.columns):
                away = table[table["trained on"].ne(home) | table["tested on"].ne(home)]
                cells = pd.concat([cells, away.assign(**{"numbers from": FROM_PAGE})], ignore_index=True)
            elif "change in macro-F1" in table.columns:
                gaps[label] = table.set_index("method")
    order = {name: i for i, name in enumerate(compared.table.index)}  # the ranking, as in the headline
    cells = cells.sort_values("model", key=lambda names: names.map(order), kind="stable", ignore_index=True)
    ci_method = saved_ci_method(run_dir / "models" / next(iter(evals)))
    return RunResults(run_dir, record, compared, ci_method, cells, gaps, finetuned, page)


def saved_ci_method(folder: Path) -> str:
    """How the saved intervals were drawn (metrics.json's ``ci_method``)."""
    return json.loads((folder / evaluation.METRICS).read_text(encoding="utf-8")).get("ci_method", "bootstrap")


# ------------------------------------------------------------------------------------------ Markdown
def p_value(p: float) -> str:
    """Three significant digits; scientific notation below 0.001 (McNemar's p reaches 1e-14 here)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "0" if p == 0 else f"{p:.1e}" if p < 1e-3 else f"{p:.3g}"


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
        "weights": table["pretrained_source"].fillna("scratch").to_list()})


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
               "McNemar p (Holm)": f"{p_value(test.p_value)} ({p_value(test.p_holm)})"}
        if folds is not None:
            fold = folds[(folds["model_a"] == test.model_a) & (folds["model_b"] == test.model_b)].iloc[0]
            sign = 1 if first == test.model_a else -1
            row["fold-mean macro-F1 difference"] = f"{sign * fold['mean_difference']:+.3f}"
            row[f"corrected resampled t-test p over {fold['folds']} folds (Holm)"] = (
                f"{p_value(fold['p_value'])} ({p_value(fold['p_holm'])})")
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
    lines = ["## Across labs (notebook 08)", ""]
    if results.page is None:
        lines += ["The run's rendered page 08 was not found: only the cells recomputed from saved predictions are "
                  "shown.", ""]
    else:
        lines += [f"Cells marked \"{FROM_PAGE}\" are scored on images whose predictions the run does not keep: their "
                  f"numbers are read from the rendered notebook (`{results.page.name}`), not recomputed.", ""]
    lines += ["### Trained in one lab, tested in another", "", markdown_table(results.cells), ""]
    for model, gap in results.gaps.items():
        shown = gap.reset_index()
        if "notes" in shown and not shown["notes"].str.strip().any():
            shown = shown.drop(columns="notes")
        p_column = "McNemar p (vs none)"
        if p_column in shown:  # the page rounds to 3 decimals
            shown[p_column] = [("–" if p == "NaN" else "< 0.0005" if float(p) == 0 else p) for p in shown[p_column]]
        lines += [f"### Narrowing the gap at test time ({model}, {FROM_PAGE})", "", markdown_table(shown), ""]
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
        lines += [f"### {model}: from scratch, or fine-tuned from a backbone ({compared['weights']}), macro-F1 "
                  f"per fold", "",
                  markdown_table(shown), "",
                  f"{fold['method']}: p = {p_value(fold['p_value'])} over {fold['folds']} folds; McNemar "
                  f"({pair['method']}) on the pooled predictions: p = {p_value(pair['p_value'])} "
                  f"({pair['n01']} images right only fine-tuned, {pair['n10']} only from scratch).", ""]
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
    if results.page is not None or results.finetuned:  # notebook 08 ran and compared two labs
        lines += across_labs_section(results)
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
