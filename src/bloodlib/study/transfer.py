"""Notebook 08: how models trained in one lab read another lab's cells, and what a second lab's data is worth.

Two labs: the run's dataset (``home``: BCCD, Wright/Giemsa smears photographed whole) and a ``source`` atlas
(PBC: May Grünwald-Giemsa, a CellaVision analyser's cell images). For every architecture:

- the train-dataset x test-dataset table: home -> home (the training notebooks' cross-validation), home -> source
  (a home model, the first split's, on every source image), source -> source (the backbone's held-out test
  part), source -> home (the backbone on every home image, no home training at all); every cross-dataset
  number on the classes both labs share (:mod:`bloodlib.classes`), with what was left out said;
- gap-narrowing at test time, before and after on the same images (stain normalisation, AdaBN:
  :mod:`bloodlib.crossdataset`);
- home from scratch against home fine-tuned from the source backbone, on the same folds, with the corrected
  resampled t-test over folds and McNemar's test on the pooled predictions.

Every cell's predictions are saved in the run folder (``transfer/cells/``, :func:`save_cells`), so that each number
of the page can be recomputed from the run alone (:func:`load_cells`).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bloodlib.study import backbones, comparison, experiment
from bloodlib.data import classes, datasets
from bloodlib import config, evaluation, plots
from bloodlib.evaluation import crossdataset
from bloodlib.evaluation.significance import format_p
from bloodlib.utils import paths

SHOWN = ("macro_f1", "balanced_accuracy", "accuracy")  # macro-F1 first: "always neutrophil" scores 0.60 accuracy
GAP_P = "McNemar p (vs none)"  # the gap table's p-value column
CELLS = "cells"  # under the run's transfer/: one saved evaluation per cell and gap-narrowing method


@dataclasses.dataclass
class Cell:
    """One train-dataset x test-dataset score of one model."""
    model: str
    trained_on: str
    tested_on: str
    images: str  # which images: "cross-validation", "held-out test part", "every image"
    evaluation: evaluation.Evaluation
    details: crossdataset.CrossDataset | None = None  # None where train and test are one dataset
    method: str = "none"  # the gap-narrowing method it was scored with

    @property
    def notes(self) -> list[str]:
        """What the scoring had to say (the adaptation's notes), kept when the cell is saved."""
        return list(self.details.notes) if self.details is not None else self.evaluation.extra.get("notes", [])


def applies(settings: config.Settings, source: str) -> str | None:
    """Why notebook 08 has nothing to compare in this run (None when it has)."""
    if settings.dataset == source:
        return f"the run's dataset is {source} itself: notebook 08 compares it with another lab (run it on bccd)"
    try:
        backbones.check_source(settings.dataset, source)
    except ValueError as err:
        return str(err)
    return None


def source_settings(settings: config.Settings, model: str, source: str) -> config.Settings:
    """The source dataset at the run's image size and mode: what the backbone is trained and scored on."""
    return backbones.source_settings(settings, model, source)


def home_cell(settings: config.Settings, model: str) -> Cell:
    """home -> home: the cross-validated predictions notebooks 04-06 saved."""
    ev = evaluation.load_evaluation(settings.output_dir / "models" / model)
    return Cell(model, settings.dataset, settings.dataset, "cross-validation" if ev.fold is not None else "test part", ev)


def source_cell(backbone: Path, source: str) -> Cell:
    """source -> source: the backbone's held-out test part (all of the source's classes)."""
    ev = evaluation.load_evaluation(Path(backbone).parent / backbones.TEST)
    return Cell(ev.model, source, source, "held-out test part", ev)


def cross_cell(checkpoint: Path, target: config.Settings, trained_on: str, adapt=None) -> Cell:
    """A checkpoint on every image of another dataset, on the shared classes (``adapt``: see crossdataset)."""
    ev, details = crossdataset.evaluate_checkpoint(checkpoint, target, adapt=adapt)
    return Cell(details.model, trained_on, target.dataset, "every image (shared classes)", ev, details,
                method=adapt or "none")


def save_cells(cells: list[Cell], folder: Path, *, n: int = 2000, seed: int = 0) -> None:
    """Each cell's predictions (gzipped) and metrics (:func:`bloodlib.evaluation.save_evaluation`) in a folder of
    its own under ``folder``, with what the cell is in the evaluation's ``extra``."""
    for cell in cells:
        what = dict(trained_on=cell.trained_on, tested_on=cell.tested_on, images=cell.images, method=cell.method,
                    notes=cell.notes)
        name = "_".join(re.sub(r"[^A-Za-z0-9-]+", "-", part)
                        for part in (cell.model, cell.trained_on, "on", cell.tested_on, cell.method))
        # the checkpoint's path as the report may show it (relative to the checkout, or named by its variable)
        extra = paths.portable_values({**cell.evaluation.extra, "cell": what}, config.project_root())
        ev = dataclasses.replace(cell.evaluation, extra=extra)
        # compressed: a cell holds every image of a lab, and the committed report keeps them all
        evaluation.save_evaluation(ev, Path(folder) / name, n=n, seed=seed, compress=True)


def load_cells(folder: Path) -> list[Cell]:
    """The cells :func:`save_cells` wrote, in name order."""
    cells = []
    for ev in evaluation.load_all(folder).values():
        what = ev.extra.get("cell")
        if what is None:
            raise ValueError(f"{folder}: {ev.model}'s evaluation does not say which cell it is")
        ev.extra["notes"] = what["notes"]
        cells.append(Cell(ev.model, what["trained_on"], what["tested_on"], what["images"], ev, method=what["method"]))
    return cells


def table(cells: list[Cell], *, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per cell: the images and classes it rests on, and each metric with its 95% bootstrap interval."""
    rows = []
    for cell in cells:
        ci = evaluation.evaluation_ci(cell.evaluation, n=n, seed=seed)
        row = {"model": cell.model, "trained on": cell.trained_on, "tested on": cell.tested_on,
               "images": cell.images, "n": len(cell.evaluation.first_repeat()),
               "classes": len(cell.evaluation.classes)}
        for metric in SHOWN:
            row[metric] = ci.loc[metric, "value"]
            row[f"{metric}_low"], row[f"{metric}_high"] = ci.loc[metric, "low"], ci.loc[metric, "high"]
        rows.append(row)
    return pd.DataFrame(rows)


def left_out(cells: list[Cell]) -> str:
    """For each cross-dataset cell: the images and shared classes it rests on, and what was left out."""
    lines = []
    for cell in cells:
        if cell.details is None:
            continue
        dropped = cell.details.dataset_left_out["images"]
        line = (f"{cell.model}, {cell.trained_on} -> {cell.tested_on}: {cell.details.n_images} images of "
                f"{', '.join(cell.details.classes)}; left out: "
                + (", ".join(f"{name} ({n})" for name, n in dropped.items()) or "nothing"))
        if cell.details.model_only:
            line += f"; the model's classes the dataset lacks: {', '.join(cell.details.model_only)}"
        lines.append(line)
    return "\n".join(lines)


def display_table(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` as a reader wants it: "0.912 [0.881, 0.940]" per metric."""
    shown = scores[["model", "trained on", "tested on", "images", "n", "classes"]].copy()
    for metric in SHOWN:
        shown[evaluation.METRIC_LABELS.get(metric, metric)] = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
            zip(scores[metric], scores[f"{metric}_low"], scores[f"{metric}_high"])]
    return shown


def heatmap(scores: pd.DataFrame, metric: str = "macro_f1"):
    """Per model, the train-dataset x test-dataset matrix of ``metric`` (:func:`bloodlib.plots.train_test_heatmaps`)."""
    matrices = {model: part.pivot_table(index="trained on", columns="tested on", values=metric)
                for model, part in scores.groupby("model", sort=False)}
    label = evaluation.METRIC_LABELS.get(metric, metric)
    return plots.train_test_heatmaps(matrices, title=f"{label}: trained in one lab, tested in another "
                                                     f"(shared classes across labs)")


def gap_table(cells: dict[str, Cell], *, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each gap-narrowing method against no adaptation, on the same images: ``cells`` maps a method ("none",
    "reinhard", "adabn", ...) to its cell, every cell from one checkpoint and target."""
    base = cells["none"].evaluation
    rows = []
    for method, cell in cells.items():
        ev = cell.evaluation
        if not np.array_equal(ev.ids, base.ids):
            raise ValueError(f"{method}: scored on other images than without adaptation")
        ci = evaluation.evaluation_ci(ev, n=n, seed=seed)
        row = {"method": method, "macro-F1": ci.loc["macro_f1", "value"],
               "macro-F1 95% CI": f"[{ci.loc['macro_f1', 'low']:.3f}, {ci.loc['macro_f1', 'high']:.3f}]",
               "accuracy": ci.loc["accuracy", "value"],
               "change in macro-F1": ci.loc["macro_f1", "value"] - evaluation.metrics(base.y_true, base.y_prob,
                                                                                    base.classes)["macro_f1"]}
        row[GAP_P] = (np.nan if method == "none" else
                      evaluation.mcnemar(base.y_true, base.y_pred, ev.y_pred)["p_value"])
        row["notes"] = "; ".join(cell.notes)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def display_gap(gap: pd.DataFrame) -> pd.DataFrame:
    """A :func:`gap_table` as a reader wants it: numbers to 3 decimals, the p-values as "1.3e-26" (display only)."""
    return comparison.display_tests(gap, p_columns=[GAP_P], decimals=3)


def finetuned_against_scratch(scratch: evaluation.Evaluation, finetuned: evaluation.Evaluation) -> dict[str, pd.DataFrame]:
    """From scratch against fine-tuned from the backbone, on the same folds: per-fold macro-F1 side by side, the
    corrected resampled t-test over folds and McNemar's test on the pooled predictions."""
    pair = {"from scratch": scratch, "fine-tuned": finetuned}
    per_fold = pd.concat({name: evaluation.fold_metrics(ev).set_index(["repeat", "fold"])["macro_f1"]
                          for name, ev in pair.items()}, axis=1)
    per_fold["difference"] = per_fold["fine-tuned"] - per_fold["from scratch"]
    return {"per_fold": per_fold, "fold_test": evaluation.pairwise_fold_tests(pair),
            "mcnemar": evaluation.pairwise_mcnemar(pair)}


def display_finetuned(compared: dict[str, pd.DataFrame]) -> list[pd.DataFrame]:
    """:func:`finetuned_against_scratch`'s tables as a reader wants them: per fold to 3 decimals, then both tests
    with their p-values as "3.8e-14" or "0.26" (display only)."""
    return [compared["per_fold"].round(3), comparison.display_tests(compared["fold_test"]),
            comparison.display_tests(compared["mcnemar"])]


def side_by_side(home: datasets.Prepared, away: datasets.Prepared, *, per_class: int = 4, seed: int = 0):
    """Cells of every shared class from both labs, a row per class: ``per_class`` of each, home first."""
    shared = classes.shared(home.data.classes, away.data.classes)
    rng = np.random.default_rng(seed)
    picked, titles = [], []
    for name in shared:
        for prepared in (home, away):
            labels = np.array([classes.canonical(prepared.data.classes[i]) for i in prepared.data.labels.numpy()])
            chosen = rng.choice(np.flatnonzero(labels == name), size=per_class, replace=False)
            picked.append(prepared.data.images[torch.as_tensor(chosen)])
            titles += [f"{prepared.settings.dataset}: {name.lower()}"] * per_class
    return plots.image_grid(torch.cat(picked), titles, ncols=2 * per_class,
                            title=f"The same cell types in two labs ({home.settings.dataset} left, "
                                  f"{away.settings.dataset} right)")


@dataclasses.dataclass
class AcrossLabs:
    """Everything notebook 08 shows; empty where it does not apply to the run (``why_not`` says why)."""
    why_not: str | None
    home: datasets.Prepared | None = None
    away: datasets.Prepared | None = None
    backbones: dict[str, Path] = dataclasses.field(default_factory=dict)
    cells: list[Cell] = dataclasses.field(default_factory=list)
    gaps: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)  # model -> gap_table
    finetuned: dict[str, dict] = dataclasses.field(default_factory=dict)  # model -> finetuned_against_scratch


def across_labs(settings: config.Settings, source: str, models: list[str], *, pretrain: list[str] = (),
                adapt: list[str] = (), finetune: list[str] = (), progress: bool = True) -> AcrossLabs:
    """Score every train x test pair: the home models of notebooks 04-06 (``models``) at home and on the
    source's images; for ``pretrain``, a backbone trained (or read from the cache) on ``source``, at the source
    and on the home images, with each gap-narrowing method of ``adapt``; then fine-tune ``finetune`` (each
    needs its backbone) on the run's own splits."""
    why_not = applies(settings, source)
    if why_not:
        return AcrossLabs(why_not)
    home = datasets.prepare(settings, progress=progress)
    result = AcrossLabs(None, home=home)
    for model in models:
        result.cells += [home_cell(settings, model),
                         cross_cell(settings.output_dir / "models" / model / "best.pt",
                                    source_settings(settings, model, source), settings.dataset)]
    adapted = []
    for model in dict.fromkeys([*pretrain, *finetune]):
        result.backbones[model] = backbones.backbone(settings, model, source=source, progress=progress)
        methods = {"none": cross_cell(result.backbones[model], settings, source)}
        methods.update({method: cross_cell(result.backbones[model], settings, source, adapt=method)
                        for method in adapt})
        result.cells += [source_cell(result.backbones[model], source), methods["none"]]
        result.gaps[model] = gap_table(methods, n=settings.bootstrap, seed=settings.seed)
        adapted += [cell for method, cell in methods.items() if method != "none"]
    # every cell but the home ones (notebooks 04-06 saved those), so that the run alone holds every number
    away_cells = [cell for cell in result.cells
                  if cell.trained_on != settings.dataset or cell.tested_on != settings.dataset]
    save_cells(away_cells + adapted, settings.output_dir / "transfer" / CELLS, n=settings.bootstrap, seed=settings.seed)
    result.away = datasets.prepare(source_settings(settings, models[0], source), progress=progress)
    for model in finetune:
        run = experiment_run(home, model, result.backbones[model], settings.output_dir / "transfer" / model, progress)
        result.finetuned[model] = finetuned_against_scratch(home_cell(settings, model).evaluation, run.evaluation)
    return result


def finetune_recipe(settings: config.Settings) -> dict:
    """What fine-tuning changes in the home recipe: ``config.FINETUNE_RECIPES`` of the run's profile and dataset,
    less what the caller set."""
    recipe = config.FINETUNE_RECIPES.get((settings.profile, settings.dataset), {})
    return {k: v for k, v in recipe.items() if k not in settings.requested}


def experiment_run(home: datasets.Prepared, model: str, backbone: Path, out_dir: Path, progress: bool):
    """The training notebooks' protocol on the run's own splits, starting from ``backbone`` (a new head), with
    the fine-tuning recipe (:func:`finetune_recipe`)."""

    return experiment.run_model(home, model, pretrained=backbone, out_dir=out_dir, progress=progress,
                                **finetune_recipe(home.settings))


def macro_f1(ev: evaluation.Evaluation) -> float:
    """The point estimate on each test image once (the first repeat of a cross-validation)."""
    first = ev.first_repeat()
    return float(evaluation.metrics(ev.y_true[first], ev.y_prob[first], ev.classes)["macro_f1"])


def conclusion(result: AcrossLabs) -> str:
    """The notebook's last paragraph, written from the numbers."""
    if result.why_not:
        return f"Nothing to compare: {result.why_not}."
    home, away = result.home.settings.dataset, result.away.settings.dataset
    lines = []
    for model in dict.fromkeys(cell.model for cell in result.cells):
        get = {(c.trained_on, c.tested_on): macro_f1(c.evaluation) for c in result.cells if c.model == model}
        line = (f"**{model}**: macro-F1 {get[(home, home)]:.3f} at home ({home}), {get[(home, away)]:.3f} on "
                f"{away}'s cells")
        if (away, away) in get:
            line += (f"; trained on {away}: {get[(away, away)]:.3f} there (all its classes), {get[(away, home)]:.3f} "
                     f"on {home}'s cells")
        lines.append(line + ".")
        gap = result.gaps.get(model)
        if gap is not None and len(gap) > 1:
            changes = gap.drop(index="none")["change in macro-F1"]
            best = changes.idxmax()
            others = [f"{m} {change:+.3f}" for m, change in changes.drop(index=best).items()]
            lines.append(f"Of the gap-narrowing methods, {best} moved {away} -> {home} macro-F1 the most, by "
                         f"{changes[best]:+.3f} (McNemar p = {format_p(gap.loc[best, GAP_P])})"
                         + (f"; {', '.join(others)}" if others else "") + ".")
            useless = list(changes.index[changes <= 0])
            if useless:
                lines.append(f"Did not help {model}: {', '.join(useless)}.")
    for model, compared in result.finetuned.items():
        test = compared["fold_test"].iloc[0]
        folds = compared["per_fold"]
        lines.append(f"**{model} fine-tuned from the {result.away.settings.dataset} backbone**: fold-mean macro-F1 "
                     f"{folds['fine-tuned'].mean():.3f} against {folds['from scratch'].mean():.3f} from scratch on "
                     f"the same folds ({test['method']}: p = {format_p(test['p_value'])}; McNemar on the pooled "
                     f"predictions p = {format_p(compared['mcnemar'].iloc[0]['p_value'])}).")
    return "\n\n".join(lines)
