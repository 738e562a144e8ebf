"""Notebook 09: leave-one-lab-out (LOLO), the study's test of generalisation to a lab no model has seen.

For each lab of a :class:`~bloodlib.study.labs.LabSet` (the classes all labs share), a model is trained on the other
labs (:func:`bloodlib.training.train.fit`, the study's loop and seeds; lab-balanced epochs; validation grouped
within the training labs) and tested on every image of the held-out lab, whose labels it never sees, without and
with the test-time methods of :mod:`bloodlib.evaluation.crossdataset` (Reinhard stain normalisation towards the
training labs, AdaBN on the held-out lab's images). With ``single_lab``, a model is also trained on each lab alone
(its own grouped train / validation / test parts) and tested on its own test part and on every image of the other
labs: the lab x lab matrix, in which each LOLO round is one more row. With ``all_labs``, a last model trains on every
lab at once (each lab's own train part, lab-balanced) and is tested on each lab's test part, the images the
single-lab models are tested on: the model the report publishes for labs beyond these (``python -m bloodlib
predict --checkpoint any-lab``), whose chance on a new lab the LOLO rounds estimate.

Every score is a :class:`bloodlib.study.transfer.Cell`, saved with its predictions (``lolo/<model>/cells/``,
:func:`bloodlib.study.transfer.save_cells`), so that every table, figure and sentence of the page can be recomputed
from the run alone (:func:`load_cells`, :func:`scores`, :func:`conclusion`).
"""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from bloodlib import config, evaluation, models, plots
from bloodlib.data import splits
from bloodlib.evaluation import crossdataset
from bloodlib.evaluation.significance import format_p
from bloodlib.models import inference
from bloodlib.study import labs as labsets
from bloodlib.study import transfer
from bloodlib.training import train
from bloodlib.utils import fileio, paths

METHODS = ("none", "reinhard", "adabn")  # "none" always comes first: every method is measured against it
FOLDER = "lolo"  # under the run's output_dir: <model>/<training set>/ (checkpoints, history), <model>/cells/
CELLS = "cells"
RECORD = "lolo.json"  # beside the cells: the resolved settings and every model's split and training
ANY_LAB = "any_lab_checkpoint"  # the record's key naming the all-labs model's best.pt, relative to the record
HELD_OUT = "every image (lab held out)"  # a LOLO round's cell
ELSEWHERE = "every image"  # a single-lab model on another lab
AT_HOME = "held-out test part"  # a single-lab model on its own lab's test part
TRAVELS = 0.85  # the study's target: macro-F1 on a lab never trained on, without adaptation, for every lab

def checked_methods(methods: Sequence[str]) -> list[str]:
    """``"none"`` first, then each method once: a name of :data:`bloodlib.evaluation.crossdataset.ADAPTATIONS`, or
    several joined by ``+`` (``"reinhard+adabn"``); anything else is refused before any training."""
    checked = ["none"]
    for method in methods:
        if method != "none":
            crossdataset.adaptation_steps(method.split("+"))  # raises, naming the unknown one
            checked.append(method)
    return list(dict.fromkeys(checked))


@dataclasses.dataclass
class Trained:
    """One model of the page: the architecture, the labs it trained on, its split, what the loop returned."""
    model: str
    trained_on: list[str]
    split: splits.Split
    fit: train.FitResult
    positions_per_epoch: dict[str, int]  # per training lab: its training positions in one epoch

    @property
    def name(self) -> str:
        return "+".join(self.trained_on)


@dataclasses.dataclass
class LOLO:
    """Everything notebook 09 shows."""
    model: str
    data: labsets.LabSet
    trained: list[Trained]
    cells: list[transfer.Cell]
    folder: Path  # where the cells and checkpoints are


def leave_one_lab_out(labs: Sequence[str] | labsets.LabSet, model_name: str, settings: config.Settings, *,
                      methods: Sequence[str] = METHODS, single_lab: bool = True, all_labs: bool = True,
                      out_dir: str | Path | None = None, resume: bool = False, progress: bool = True) -> LOLO:
    """Train ``model_name`` once per held-out lab on the others, and (``single_lab``) once per lab alone; score
    every model where it did not train, with each method of ``methods`` (:func:`checked_methods`), and the
    single-lab models on their own test parts; (``all_labs``) once on every lab, scored on each lab's test part
    (module doc). ``labs``: dataset names (prepared by
    :func:`bloodlib.study.labs.load` at the run's image size) or a LabSet. Saves checkpoints and every cell
    under ``out_dir`` (default ``output_dir/lolo/<model>``); with ``resume``, the models already trained there are
    kept and an interrupted one continues from its ``last.pt``."""
    methods = checked_methods(methods)
    settings = settings.for_model(model_name)
    data = labs if isinstance(labs, labsets.LabSet) else labsets.load(labs, settings, progress=progress)
    out_dir = Path(out_dir or settings.output_dir / FOLDER / model_name)
    rounds = [([lab for lab in data.labs if lab != held], labsets.held_out_split(data, held, seed=settings.seed))
              for held in data.labs]
    if single_lab:
        rounds += [([lab], labsets.single_lab_split(data, lab, seed=settings.seed)) for lab in data.labs]
    if all_labs:
        rounds.append((list(data.labs), labsets.all_labs_split(data, seed=settings.seed)))
    result = LOLO(model_name, data, [], [], out_dir)
    for index, (trained_on, split) in enumerate(rounds):
        training = data
        if index >= len(data.labs):  # a lab alone, or all: each lab gets at least the share it got in a LOLO round
            share = max(n for t in result.trained[:len(data.labs)] for n in t.positions_per_epoch.values())
            training = dataclasses.replace(data, lab_share=share)
        trained, model = train_model(training, split, trained_on, model_name, settings, index, out_dir, progress,
                                     resume)
        result.trained.append(trained)
        if index < len(data.labs):  # a LOLO round: the held-out lab, whole
            tested = [(lab, data.positions(lab), HELD_OUT) for lab in data.labs if lab not in trained_on]
        elif len(trained_on) == len(data.labs):  # every lab: each lab's own test part, no other lab to adapt to
            result.cells += [score(model, data, split.test[data.lab_of(split.test) == lab], trained, lab, "none",
                                   AT_HOME, batch_size=settings.train.eval_batch_size) for lab in data.labs]
            continue
        else:  # one lab alone: its own test part (no gap to narrow there), then every image of the others
            result.cells.append(score(model, data, split.test, trained, trained_on[0], "none", AT_HOME))
            tested = [(lab, data.positions(lab), ELSEWHERE) for lab in data.labs if lab not in trained_on]
        reference = reference_images(data, split.train, seed=settings.seed)
        result.cells += [score(model, data, positions, trained, lab, method, images, reference=reference,
                               batch_size=settings.train.eval_batch_size)
                         for lab, positions, images in tested for method in methods]
    for order, cell in enumerate(result.cells):  # saved cells are read back in name order: keep the run's
        cell.evaluation.extra["order"] = order
    transfer.save_cells(result.cells, out_dir / CELLS, n=settings.bootstrap, seed=settings.seed)
    # what the page resolved to (its recipe layer is not config's, so the run record cannot say it) and trained
    fileio.write_json(out_dir / RECORD, paths.portable_values(evaluation.jsonable({
        "settings": settings.as_dict(), "labs": data.labs, "classes": data.classes, "methods": methods,
        "left_out": data.left_out.to_dict(orient="records"),
        "models": [{"trained_on": t.trained_on, "split": t.split.name, "train": len(t.split.train),
                    "validation": len(t.split.val), "test": len(t.split.test),
                    "positions_per_epoch": t.positions_per_epoch, "kept_epoch": t.fit.kept_epoch,
                    "validation_scores": t.fit.kept_val, "train_seconds": t.fit.train_seconds,
                    "device": t.fit.device, "precision": t.fit.precision} for t in result.trained],
        ANY_LAB: (model_folder(out_dir, data.labs) / "best.pt").relative_to(out_dir).as_posix() if all_labs else None}),
        config.project_root()))
    return result


def train_model(data: labsets.LabSet, split: splits.Split, trained_on: list[str], model_name: str,
                settings: config.Settings, index: int, out_dir: Path, progress: bool, resume: bool = False
                ) -> tuple[Trained, nn.Module]:
    """One model from scratch on ``split`` as :func:`bloodlib.study.experiment.run_model` trains a split: the
    initial weights and the loop's draws seeded by ``settings.seed + index``; ``best.pt`` and ``history.csv``
    under ``out_dir/<training labs>/``."""
    cfg = dataclasses.replace(settings.train, seed=settings.seed + index)
    config.seed_everything(settings.seed + index)  # the initial weights, repeatable
    model = models.create_model(model_name, num_classes=len(data.classes), pretrained="scratch",
                                image_size=data.image_size, **cfg.model_kwargs())
    folder = model_folder(out_dir, trained_on)
    metadata = dict(mode=labsets.MODE, crop_margin=settings.crop_margin, labs=list(trained_on), split=split.name)
    fit = train.fit(model, data, split.train, split.val, cfg, out_dir=folder, metadata=metadata, resume=resume,
                    progress=progress)
    fit.history.to_csv(folder / "history.csv", index=False)
    per_epoch = pd.Series(data.lab_of(data.training_indices(split.train, cfg.oversample))).value_counts()
    if progress:
        print(f"trained on {' + '.join(trained_on)}: kept epoch {fit.kept_epoch}, validation macro-F1 "
              f"{fit.kept_val['macro_f1']:.3f}, {fit.train_seconds:.0f} s")
    per_lab = {lab: int(per_epoch.get(lab, 0)) for lab in trained_on}
    return Trained(model_name, list(trained_on), split, fit, per_lab), model


def model_folder(out_dir: Path, trained_on: Sequence[str]) -> Path:
    """Where the model trained on ``trained_on`` keeps its ``best.pt`` and ``history.csv``."""
    return Path(out_dir) / re.sub(r"[^A-Za-z0-9+-]+", "-", "+".join(trained_on))


def any_lab_checkpoint(folder: str | Path) -> Path:
    """The all-labs model's ``best.pt`` that a run's ``lolo/<model>`` ``folder`` records (:data:`ANY_LAB`)."""
    record = Path(folder) / RECORD
    if not record.is_file():
        raise FileNotFoundError(f"{record}: no leave-one-lab-out run here")
    name = json.loads(record.read_text(encoding="utf-8")).get(ANY_LAB)
    if not name:
        raise FileNotFoundError(f"{record}: this run trained no model on every lab (all_labs=False)")
    return Path(folder) / name


def reference_images(data: labsets.LabSet, train_positions: np.ndarray, *, seed: int) -> torch.Tensor:
    """What a stain normaliser is fitted on: up to :data:`~bloodlib.evaluation.crossdataset.REFERENCE_IMAGES`
    training images, the same number from each training lab (a seeded sample), so that no lab sets the colours."""
    rng = np.random.default_rng(seed)
    train_positions = np.asarray(train_positions)
    training_labs = [lab for lab in data.labs if (data.lab_of(train_positions) == lab).any()]
    each = crossdataset.REFERENCE_IMAGES // len(training_labs)
    chosen = []
    for lab in training_labs:
        mine = train_positions[data.lab_of(train_positions) == lab]
        chosen.append(rng.choice(mine, size=min(each, len(mine)), replace=False))
    return data.images[torch.as_tensor(np.sort(np.concatenate(chosen)))]


def score(model: nn.Module, data: labsets.LabSet, positions: np.ndarray, trained: Trained, tested_on: str,
          method: str, images: str, *, reference: torch.Tensor | None = None, batch_size: int = 128) -> transfer.Cell:
    """``model`` on ``data``'s ``positions`` (images of ``tested_on``) after ``method`` (``"none"`` or
    :func:`checked_methods`' names). AdaBN sees every image of the lab, its classes left out too (as a deployment
    would, labels unseen), when the cell is the whole lab; a stain method is fitted on ``reference``."""
    steps = [] if method == "none" else crossdataset.adaptation_steps(method.split("+"))
    positions = np.asarray(positions)
    shown, notes = data.images[torch.as_tensor(positions)], []
    if steps:
        whole_lab = "adabn" in steps and images != AT_HOME and len(data.unlabelled.get(tested_on, []))
        seen = torch.cat([shown, data.unlabelled[tested_on]]) if whole_lab else shown
        model, seen, notes = crossdataset.apply_adaptations(model, seen, steps, reference=reference,
                                                            batch_size=batch_size)
        shown = seen[:len(positions)]
    name = trained.model
    ev = evaluation.Evaluation(
        model=name, classes=data.classes, y_true=data.labels.numpy()[positions],
        y_prob=inference.predict_proba(model, shown, batch_size=batch_size),
        ids=data.rows["id"].to_numpy()[positions], groups=data.rows["group"].to_numpy()[positions],
        train_seconds=trained.fit.train_seconds, pretrained_source="scratch",
        extra=dict(trained_on=trained.trained_on, tested_on=tested_on, split=trained.split.name, method=method,
                   image_size=list(data.image_size), mode=labsets.MODE, kept_epoch=trained.fit.kept_epoch,
                   validation=trained.fit.kept_val, device=trained.fit.device, notes=notes))
    return transfer.Cell(name, trained.name, tested_on, images, ev, method=method)


def load_cells(folder: str | Path) -> list[transfer.Cell]:
    """The cells :func:`leave_one_lab_out` saved under ``folder`` (``.../lolo/<model>``, or its ``cells/``)."""
    folder = Path(folder)
    cells = transfer.load_cells(folder / CELLS if (folder / CELLS).is_dir() else folder)
    return sorted(cells, key=lambda cell: cell.evaluation.extra.get("order", len(cells)))


# ----------------------------------------------------------------------------------- tables and figure

def scores(cells: list[transfer.Cell], *, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per cell (:func:`bloodlib.study.transfer.table`: the images and classes it rests on, each metric
    with its 95% bootstrap interval, whole patients resampled where a lab has them), with its method."""
    table = transfer.table(cells, n=n, seed=seed)
    table.insert(table.columns.get_loc("images"), "method", [cell.method for cell in cells])
    return table


def display_lolo(table: pd.DataFrame) -> pd.DataFrame:
    """The LOLO table as a reader wants it: per held-out lab and method, "0.912 [0.881, 0.940]" per metric."""
    rounds = table[table["images"] == HELD_OUT]
    shown = transfer.display_table(rounds).assign(method=rounds["method"].to_numpy())
    return (shown.rename(columns={"tested on": "held out"}).set_index(["held out", "method"])
            .drop(columns=["model", "images"]))


def matrices(table: pd.DataFrame, metric: str = "macro_f1") -> dict[str, pd.DataFrame]:
    """Per method, ``metric`` trained-on x tested-on: a row per lab alone (the diagonal its own test part, without
    adaptation in every panel), then a row per LOLO round (trained on the other labs; with two labs that row is
    the other lab's, already there), then the all-labs model's row (each lab's test part, without adaptation)."""
    labs = list(dict.fromkeys(table["tested on"]))
    at_home = table[table["images"] == AT_HOME]
    away = table[table["images"] != AT_HOME]
    out = {}
    for method, part in away.groupby("method", sort=False):
        single = pd.concat([at_home, part[part["images"] == ELSEWHERE]])
        rounds = part[(part["images"] == HELD_OUT) & ~part["trained on"].isin(single["trained on"])]
        order = ([lab for lab in labs if lab in set(single["trained on"])] + list(dict.fromkeys(rounds["trained on"]))
                 + [name for name in dict.fromkeys(at_home["trained on"]) if name not in labs])
        matrix = pd.concat([single, rounds]).pivot(index="trained on", columns="tested on", values=metric)
        out[method] = matrix.reindex(index=order, columns=labs)
    return out


def heatmap(table: pd.DataFrame, metric: str = "macro_f1"):
    """:func:`matrices` as heat maps, a panel per method (:func:`bloodlib.plots.train_test_heatmaps`)."""
    label = evaluation.METRIC_LABELS.get(metric, metric)
    return plots.train_test_heatmaps(matrices(table, metric), title=f"{label} on the shared classes: trained on "
                                     f"the row's labs, tested on the column's (diagonal: the lab's own test part)")


def per_class_recall(cells: list[transfer.Cell]) -> pd.DataFrame:
    """Recall and support of every class in every cell (:func:`bloodlib.evaluation.per_class_table`)."""
    rows = []
    for cell in cells:
        ev = cell.evaluation
        table = evaluation.per_class_table(ev.y_true, ev.y_prob, ev.classes)
        rows += [{"trained on": cell.trained_on, "tested on": cell.tested_on, "images": cell.images,
                  "method": cell.method, "class": name, "recall": row["recall"], "support": int(row["support"])}
                 for name, row in table.iterrows()]
    return pd.DataFrame(rows)


def display_recall(recall: pd.DataFrame) -> pd.DataFrame:
    """The LOLO rounds' recall per class (columns), per held-out lab and method, to 3 decimals."""
    rounds = recall[recall["images"] == HELD_OUT].rename(columns={"tested on": "held out"})
    return rounds.pivot_table(index=["held out", "method"], columns="class", values="recall", sort=False).round(3)


def training_table(result: LOLO) -> pd.DataFrame:
    """Per model and training lab: images in each part, training positions per epoch (lab-balanced), and the
    model's kept epoch, validation macro-F1 and training time."""
    parts = []
    for trained in result.trained:
        part = labsets.split_table(result.data, trained.split).loc[trained.trained_on]
        part["positions per epoch"] = [trained.positions_per_epoch[lab] for lab in trained.trained_on]
        part["kept epoch"] = trained.fit.kept_epoch
        part["validation macro-F1"] = round(trained.fit.kept_val["macro_f1"], 3)
        part["seconds"] = round(trained.fit.train_seconds)
        parts.append(part.assign(**{"trained on": trained.name}).set_index("trained on", append=True).swaplevel())
    return pd.concat(parts)


def conclusion(cells: list[transfer.Cell], table: pd.DataFrame) -> str:
    """The page's last paragraph, written from the cells and their :func:`scores`."""
    rounds = table[table["images"] == HELD_OUT]
    if rounds.empty:
        return "No lab was held out: nothing to conclude."
    by_key = {(c.trained_on, c.tested_on, c.method, c.images): c.evaluation for c in cells}
    lines = []
    for held, part in rounds.groupby("tested on", sort=False):
        base = part[part["method"] == "none"].iloc[0]
        line = (f"**{held} held out** (trained on {base['trained on']}): macro-F1 {_with_ci(base)} on its "
                f"{base['n']} cells")
        adapted = part[part["method"] != "none"]
        if len(adapted):
            best = adapted.loc[adapted["macro_f1"].idxmax()]
            change = best["macro_f1"] - base["macro_f1"]
            which = "the best test-time method" if change > 0 else "no test-time method helps: the better one"
            line += f"; {which}, {best['method']}, gives {best['macro_f1']:.3f} ({change:+.3f})"
        labs_trained = len(base["trained on"].split("+"))
        single = table[(table["images"] == ELSEWHERE) & (table["tested on"] == held) & (table["method"] == "none")]
        if len(single) and labs_trained > 1:  # with two labs, the round is itself a model of one lab
            rival = single.loc[single["macro_f1"].idxmax()]
            # the same images, two models: McNemar's test on their errors
            ours = by_key[(base["trained on"], held, "none", HELD_OUT)]
            theirs = by_key[(rival["trained on"], held, "none", ELSEWHERE)]
            if not np.array_equal(ours.ids, theirs.ids):
                raise ValueError(f"{held}: the LOLO round and the model trained on {rival['trained on']} were "
                                 f"scored on other images")
            p = evaluation.mcnemar(ours.y_true, ours.y_pred, theirs.y_pred)["p_value"]
            line += (f". Of the models trained on one lab, the one trained on {rival['trained on']} reads it best, "
                     f"at {rival['macro_f1']:.3f} ({base['macro_f1'] - rival['macro_f1']:+.3f} for training on "
                     f"{labs_trained} labs; McNemar's test on their errors: p = {format_p(p)})")
        home = table[(table["images"] == AT_HOME) & (table["tested on"] == held) & (table["trained on"] == held)]
        if len(home):
            line += (f"; trained on {held} alone, a model reads {held}'s held-out test part at "
                     f"{home['macro_f1'].iloc[0]:.3f}")
        lines.append(line + ".")
    means = rounds.groupby("method", sort=False)["macro_f1"].mean()
    lines.append(f"Averaged over the {rounds['tested on'].nunique()} held-out labs, macro-F1 is {means['none']:.3f} "
                 "without adaptation" + "".join(f", {m} {v:.3f}" for m, v in means.drop(index="none").items()) + ".")
    lines.append(travels_text(rounds))
    everywhere = all_labs_text(table)
    return "\n\n".join(lines + ([everywhere] if everywhere else []))


def travels_text(rounds: pd.DataFrame) -> str:
    """Whether the LOLO rounds reach the study's target (:data:`TRAVELS`) without adaptation, lab by lab: the
    published model applies no test-time method, so no method is picked per lab here."""
    plain = rounds[rounds["method"] == "none"].set_index("tested on")["macro_f1"]
    met = plain[plain >= TRAVELS]
    if len(met) == len(plain):
        return (f"Every held-out lab reaches the study's target, macro-F1 {TRAVELS:.2f} without adaptation: the "
                f"lowest is {plain.idxmin()} at {plain.min():.3f}.")
    missed = ", ".join(f"{lab} {value:.3f}" for lab, value in plain[plain < TRAVELS].items())
    return (f"The study's target, macro-F1 {TRAVELS:.2f} on every lab never trained on, without adaptation, is "
            f"**not met**: {len(met)} of {len(plain)} held-out labs reach it (below it: {missed}). A model from "
            f"this page should not be trusted on a new lab without checking it there.")


def all_labs_text(table: pd.DataFrame) -> str:
    """A sentence on the model trained on every lab: each lab's test part against the model of that lab alone on
    the same images; empty when the run trained none."""
    labs = list(dict.fromkeys(table["tested on"]))
    home = table[table["images"] == AT_HOME]
    everywhere = home[[set(name.split("+")) == set(labs) for name in home["trained on"]]] if len(labs) > 1 \
        else home.iloc[:0]
    if everywhere.empty:
        return ""
    parts = []
    for _, row in everywhere.iterrows():
        alone = home[(home["trained on"] == row["tested on"]) & (home["tested on"] == row["tested on"])]
        versus = f" (trained on it alone: {alone['macro_f1'].iloc[0]:.3f})" if len(alone) else ""
        parts.append(f"{row['tested on']} {_with_ci(row)}{versus}")
    return (f"**Trained on every lab** ({everywhere['trained on'].iloc[0]}; the model the report publishes, "
            f"`--checkpoint any-lab`), each lab's own test part reads at macro-F1 " + "; ".join(parts) + ". "
            "On a lab it never saw, expect what the leave-one-lab-out rounds above measured, not these.")


def _with_ci(row: pd.Series, metric: str = "macro_f1") -> str:
    return f"{row[metric]:.3f} [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]"
