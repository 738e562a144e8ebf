"""The report a reader opens first: a run's index page, and its pages rendered (:mod:`bloodlib.pipeline.pages`).

The index (``index.html``) states the question, the data after cleaning and how the run split it, the
comparison with confidence intervals and the headline figure, links to the pages, a model card and the run
record. It travels with the report: every path it shows is portable (:func:`bloodlib.utils.paths.portable`).
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from bloodlib import evaluation
from bloodlib.data import cleaning, folders
from bloodlib.pipeline import records
from bloodlib.pipeline.pages import TEMPLATES, css, duration, page_list, render_notebook
from bloodlib.pipeline.provenance import repo_root
from bloodlib.utils import fileio, paths

TITLE = "White blood cell classification on BCCD smears"
SPLITS = ("train", "val", "test")
FOLD_COLUMN = re.compile(r"test_fold_r(\d+)")  # the manifest's fold of each image, per repeat (cross-validation)


def render_run(run_dir: str | os.PathLike, *, show_input: bool = False) -> Path:
    """Every executed notebook of a run to ``pages/``, then the run's own ``index.html``."""
    run_dir = Path(run_dir)
    notebooks = sorted((run_dir / "notebooks").glob("*.ipynb"))
    siblings = page_list(run_dir)
    for nb in notebooks:
        render_notebook(nb, run_dir / "pages" / f"{nb.stem}.html", show_input=show_input, siblings=siblings,
                        run_id=run_dir.name)
    return write_index(run_dir, run_dir / "index.html", run_href=".", show_input=show_input)


# ------------------------------------------------------------------------------------------- index
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def dataset_label(spec: str | None) -> str:
    """A reader's name for the ``dataset`` parameter (HTML-escaped)."""
    spec = spec or "bccd"
    if spec == "bccd":
        return ("the BCCD blood-smear photographs (Kaggle <code>paultimothymooney/blood-cells</code>, "
                "<code>dataset-master</code>, with the BCCD_Dataset WBC boxes)")
    if spec == "kaggle-augmented":
        return ("the augmented Kaggle blood-cell images (<code>dataset2-master</code>: TRAIN, with its own TEST "
                "and TEST_SIMPLE sets)")
    if spec == "pbc":
        return ("the PBC atlas of normal peripheral blood cells (Acevedo et al. 2020, Mendeley Data "
                "doi:10.17632/snkd93bnjr.1: expert-labelled cells in 8 classes, <code>PBC_dataset_normal_DIB</code>), "
                "with a held-out test split")
    if spec == "deepapl":
        return ("the normal white cells of DeepAPL (Sidhom et al. 2021, GitHub <code>sidhomj/DeepAPL</code>, "
                "<code>Data/All</code>: CellaVision cells of 106 leukaemia patients in 5 classes), split by patient")
    kind, _, path = spec.partition(":")
    what = "the images listed in" if kind == "csv" else "the folder-per-class images in"
    return f"{what} <code>{html.escape(path or spec)}</code>"


def split_protocol(kept: pd.DataFrame, dataset: str) -> dict:
    """How the run split its kept images, read from its manifest (:func:`bloodlib.data.splits.plan` made it):
    ``kind`` "cv" (with ``folds`` and ``repeats``: the manifest's ``test_fold_r1``, ... columns), "own test"
    (the dataset's own test set) or "holdout"; ``into`` and ``evaluation``: how the index says it."""
    columns = [c for c in kept.columns if FOLD_COLUMN.fullmatch(c)]
    if columns:
        tested = pd.to_numeric(kept[columns[0]], errors="coerce")
        folds, repeats = int(tested[tested >= 0].nunique()), len(columns)
        again = f", repeated {repeats} times with other shuffles" if repeats > 1 else ""
        return {"kind": "cv", "folds": folds, "repeats": repeats,
                "into": f"{folds} folds for stratified k-fold cross-validation{again}",
                "evaluation": f"Stratified k-fold cross-validation over {folds} folds{again}: every kept image is "
                              f"tested once{' per repeat' if repeats > 1 else ''}, by a model that never saw it"}
    if dataset == "kaggle-augmented" or (kept["split"] == "test_simple").any():
        return {"kind": "own test",
                "into": "the dataset's own training and test sets (a further test set scored apart)",
                "evaluation": "On the dataset's own test set, which no model trained on"}
    return {"kind": "holdout", "into": "one held-out training, validation and test part",
            "evaluation": "On one held-out test part, which no model trained on"}


def epoch_rule(record: dict) -> str | None:
    """Which epoch the run's trained models keep, from what their notebooks resolved to (the run record)."""
    trains = [(n.get("settings") or {}).get("train") or {} for n in record.get("notebooks") or []
              if (n.get("settings") or {}).get("model")]
    rules = {(t.get("keep_epoch"), t.get("epochs"), t.get("patience")) for t in trains}
    if len(rules) != 1:
        return "each training page says which epoch its model keeps" if rules else None
    keep, epochs, patience = rules.pop()
    if keep == "last":
        return (f"each model keeps the last epoch of a fixed {epochs}-epoch schedule (a validation part of its "
                f"training images is scored, but chooses nothing)")
    return (f"a validation part of each model's training images (never its test images) chooses the epoch kept: "
            f"the best validation macro-F1 within {epochs} epochs, stopping after {patience} without a better one")


def data_summary(run_dir: Path, dataset: str | None = None) -> dict | None:
    """Images per class and split after cleaning (with cross-validation: the test folds of the first repeat, as
    the models used them), how they were split, and what was skipped, from the run's ``data/manifest.csv``."""

    path = run_dir / "data" / "manifest.csv"
    if not path.is_file():
        return None
    manifest = pd.read_csv(path, keep_default_na=False)
    kept_mask = manifest["kept"].astype(str).str.lower() == "true"
    kept = manifest[kept_mask]
    part = (kept["test_fold_r1"].map(lambda fold: f"test fold {fold + 1}") if "test_fold_r1" in kept
            else kept["split"])
    table = pd.crosstab(kept["label"], part)
    table = table.reindex(columns=[s for s in SPLITS if s in table.columns] +
                          [s for s in table.columns if s not in SPLITS])
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum()
    if "group" in kept and kept["group"].astype(str).nunique() < len(kept):  # copies of one source share a group
        groups = kept.groupby(part)["group"].nunique().reindex(table.columns[:-1]).fillna(0).astype(int)
        table.loc["source groups"] = [*groups, kept["group"].nunique()]
    table.index.name, table.columns.name = "class", None
    unlabelled = {"no_image", "empty_label", "double_label", "rare_class"}
    counts = kept["label"].value_counts()
    steps = {**folders.STEPS, **cleaning.STEPS}
    dropped = manifest.loc[~kept_mask, "reason"].value_counts() if "reason" in manifest else pd.Series(dtype=int)
    return {"table": _html(table), "kept": int(kept_mask.sum()), "rows": len(manifest),
            "dataset": dataset or "bccd", "dataset_label": Markup(dataset_label(dataset)),
            "protocol": split_protocol(kept, dataset or "bccd"),
            "skipped": [(steps.get(reason, reason), int(n)) for reason, n in dropped.items()],
            "labelled": int((~manifest["reason"].isin(unlabelled)).sum()) if "reason" in manifest else len(manifest),
            "counts": ", ".join(f"{c.lower()} {n}" for c, n in counts.items())}


def _with_ci(table: pd.DataFrame) -> pd.DataFrame:
    """Columns ``m, m_low, m_high`` -> one column ``m`` formatted ``0.812 [0.701, 0.903]``."""
    out = pd.DataFrame(index=table.index)
    for m in [c for c in table.columns if f"{c}_low" in table.columns and f"{c}_high" in table.columns]:
        out[evaluation.METRIC_LABELS.get(m, m)] = [
            "–" if pd.isna(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if not (pd.isna(lo) or pd.isna(hi)) else f"{v:.3f}"
            for v, lo, hi in zip(table[m], table[f"{m}_low"], table[f"{m}_high"])]
    if "n_test" in table:
        out["test images"] = table["n_test"].map(lambda v: "–" if pd.isna(v) else f"{int(v)}")
    if "params" in table:
        out["parameters"] = table["params"].map(lambda v: "–" if pd.isna(v) else f"{v / 1e6:.2f} M")
    if "train_seconds" in table:
        out["training"] = table["train_seconds"].map(lambda v: "–" if pd.isna(v) else duration(v))
    if "pretrained_source" in table:
        out["weights"] = table["pretrained_source"].map(lambda v: weights(None if pd.isna(v) else v))
    out.index.name = "model"
    return out


def comparison(run_dir: Path) -> tuple[pd.DataFrame | None, str | None]:
    """The comparison table of notebook 07 (``comparison/comparison.csv``), else one row per saved
    ``models/*/metrics.json`` (its headline values and CIs); and the CI method's name."""
    method = None
    for path in sorted((run_dir / "models").glob("*/metrics.json")):
        method = method or (_read_json(path) or {}).get("ci_method")
    path = run_dir / "comparison" / "comparison.csv"
    if path.is_file():
        table = pd.read_csv(path)
        table = table.set_index(table.columns[0] if "model" not in table.columns else "model")
        return table, method
    rows = {}
    for metrics_path in sorted((run_dir / "models").glob("*/metrics.json")):
        m = _read_json(metrics_path) or {}
        if "headline" not in m:
            continue
        row = {}
        for name, value in m["headline"].items():
            ci = (m.get("ci") or {}).get(name) or {}
            row.update({name: value, f"{name}_low": ci.get("low"), f"{name}_high": ci.get("high")})
        meta = m.get("metadata") or {}
        row.update(n_test=m.get("n_test"), params=meta.get("params"), train_seconds=meta.get("train_seconds"),
                   pretrained_source=meta.get("pretrained_source"))
        rows[m.get("model", metrics_path.parent.name)] = row
    if not rows:
        return None, method
    return pd.DataFrame.from_dict(rows, orient="index").astype(float, errors="ignore"), method


def _html(table: pd.DataFrame) -> str:
    """A table as plain HTML, its index as the first column (one header row)."""
    return table.reset_index().to_html(border=0, index=False, na_rep="–")


def _embedded_png(path: Path) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def weights(source: str | dict | None) -> str:
    """How a model's weights started, from its ``pretrained_source`` ('imagenet' -> 'ImageNet-pretrained',
    'scratch' -> 'from scratch') or its ``initial_weights`` record (a checkpoint: its dataset, model, size,
    data checksum and its score on its own dataset's test part)."""
    if isinstance(source, dict):
        if source.get("kind") != "checkpoint":
            return weights(source.get("kind"))
        made = [source.get("model"), "x".join(map(str, source.get("image_size") or [])) + " px", source.get("mode"),
                f"data {source['data_checksum'][:12]}" if source.get("data_checksum") else None]
        text = (f"pretrained on {source.get('dataset') or source.get('path')} "
                f"({', '.join(str(m) for m in made if m)})")
        test = source.get("test_metrics")
        if test:
            text += (f", on its own test part accuracy {test['accuracy']:.3f}, macro-F1 {test['macro_f1']:.3f} "
                     f"({test['images']} images)")
        return text
    return {"imagenet": "ImageNet-pretrained", "scratch": "from scratch"}.get(source or "", str(source or "unknown"))


def run_rows(record: dict) -> list[tuple[str, str]]:
    """The run record as (label, HTML) rows for the index."""
    esc = html.escape
    git = record.get("git") or {}
    commit = git.get("commit") or "not a git checkout"
    if git.get("dirty"):
        commit += " (with uncommitted changes)"
    device = record.get("device") or {}
    versions = record.get("versions") or {}
    data = record.get("data") or {}
    settings = record.get("settings") or {}
    timings = "; ".join(f"{n['name']} {duration(n.get('seconds'))}" + ("" if n.get("status") == "ok" else " (failed)")
                        for n in record.get("notebooks", []))
    if record.get("total_seconds"):
        timings += f"; total {duration(record['total_seconds'])}"
    rows = [("run", f"<code>{esc(str(record.get('run_id')))}</code>, {esc(str(record.get('status')))}, "
                    f"started {esc(str(record.get('started')))}"),
            ("git commit", f"<code>{esc(commit)}</code>"),
            ("profile", esc(str(record.get("profile")))),
            ("overrides", "<code>" + esc(json.dumps(record.get("overrides") or {}, default=str)) + "</code>"),
            ("parameters", ", ".join(f"{esc(k)}=<code>{esc(str(v))}</code>" for k, v in settings.items()
                                     if k not in ("output_dir",)) or "–"),
            ("data", f"manifest checksum <code>{esc(str(data.get('checksum')))}</code>"
                     + (f", {data['files']} files" if data.get("files") else "")
                     + (f", from <code>{esc(str(data.get('root')))}</code>" if data.get("root") else "")),
            ("device", f"{esc(str(device.get('device')))}: {esc(str(device.get('name')))}"),
            ("weights", "; ".join(f"{esc(k)}: {esc(weights(v.get('initial_weights') or v.get('pretrained')))}"
                                  for k, v in (record.get("models") or {}).items()) or "no model trained"),
            # precision is part of a recipe: bf16 and fp32 runs of one model do not give the same numbers
            ("precision", "; ".join(f"{esc(k)}: {esc(str(v.get('precision') or 'not recorded'))}"
                                    + (f" on {esc(str(v['device']))}" if v.get("device") else "")
                                    for k, v in (record.get("models") or {}).items()) or "no model trained"),
            ("timings", esc(timings)),
            ("platform", f"Python {esc(str(versions.get('python')))} on {esc(str(record.get('platform')))}"),
            ("packages", ", ".join(f"{esc(k)} {esc(str(v))}" for k, v in versions.items() if k != "python" and v))]
    return rows


def write_index(run_dir: str | os.PathLike, dest: str | os.PathLike, *, run_href: str = ".",
                show_input: bool = False, link_notebooks: bool = True) -> Path:
    """The index page of a run. Links are relative to ``dest``: pages in ``pages/``, run files under
    ``run_href`` (``"."`` in the run folder, ``"runs/<id>"`` in the report folder). The record's paths are
    shown portable, whatever the record holds (the parameters given are kept there as given).
    ``link_notebooks=False`` names the folder of the executed notebooks instead of linking each one: the
    report folder's index is committed, and they are not (:data:`bloodlib.pipeline.publish.LEFT_OUT`)."""
    run_dir, dest = Path(run_dir), Path(dest)
    record = paths.portable_values(_read_json(run_dir / records.RECORD) or {"run_id": run_dir.name}, repo_root())
    pages = [dict(p, href=p["page"], notebook=p["notebook"] if link_notebooks else None)
             for p in page_list(run_dir, run_href)]
    data = data_summary(run_dir, (record.get("settings") or {}).get("dataset"))
    if data:
        data["pages"] = [(p["title"].split(":")[0], p["href"]) for p in pages
                         if any(w in p["stem"] for w in ("cleaning", "exploration"))]
        data["links"] = [(name, f"{run_href}/data/{name}") for name in
                         ("manifest.csv", "cleaning_table.csv", "data_manifest.csv", "data_record.json")
                         if (run_dir / "data" / name).is_file()]
    table, method = comparison(run_dir)
    csv = run_dir / "comparison" / "comparison.csv"
    models = record.get("models") or {}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.ChainableUndefined,
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters.update(duration=duration, weights=weights)
    page = env.get_template("index.html.j2").render(
        title=TITLE, css=Markup(css()), record=record, pages=pages, show_input=show_input,
        data=dict(data, table=Markup(data["table"])) if data else None,
        comparison=Markup(_html(_with_ci(table))) if table is not None else None,
        comparison_source=f"{run_href}/comparison/comparison.csv" if csv.is_file() else None,
        ci_method=method, headline=_embedded_png(run_dir / "comparison" / "headline.png"),
        conclusion=_conclusion(run_dir), epoch_rule=epoch_rule(record),
        models=list(models) or (list(table.index) if table is not None else []),
        pretrained={name: m.get("initial_weights") or m.get("pretrained") for name, m in models.items()},
        run_rows=[(k, Markup(v)) for k, v in run_rows(record)],
        run_links=[(name, f"{run_href}/{name}") for name in (records.RECORD, "run.log")
                   if (run_dir / name).is_file()],
        notebooks_folder=None if link_notebooks or not pages else f"{run_href}/notebooks/")
    fileio.write_text(dest, page)
    return dest


def _conclusion(run_dir: Path) -> Markup | None:
    """The comparison notebook's conclusion (markdown: bold and paragraphs only), written from its numbers."""
    try:
        text = json.loads((run_dir / "comparison" / "comparison.json").read_text())["conclusion"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    paragraphs = [re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", str(Markup.escape(p))) for p in text.split("\n\n")]
    return Markup("".join(f"<p>{p}</p>" for p in paragraphs))
