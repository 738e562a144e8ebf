"""Train and test one model on every split of a run, and the tables and figures of a training notebook.

The splits come from :func:`bloodlib.data.splits.plan` through :func:`bloodlib.data.datasets.prepare`: with
``folds > 1`` (the default on BCCD) stratified k-fold cross-validation, repeated ``repeats`` times, so that
the headline numbers and the paired tests between models rest on all cleaned images rather than on a test
split of a few dozen; a dataset with its own test set (``kaggle-augmented``) is a holdout. Inside each
split a validation part of the training images is watched every epoch and, with ``keep_epoch="best"``,
selects the epoch (early stopping); the test part is touched once, after training.
"""
from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bloodlib import plots
from bloodlib.evaluation import explain
from bloodlib.study import backbones
from bloodlib.models import checkpoints, inference
from bloodlib import config, evaluation, models
from bloodlib.data import splits
from bloodlib.training import train
from bloodlib.data.datasets import ImageSet, Prepared


@dataclasses.dataclass
class ModelRun:
    """Everything one training notebook shows: histories, predictions, the first split's model."""
    model_name: str
    protocol: str
    splits: list[splits.Split]
    fits: list[train.FitResult]
    evaluation: evaluation.Evaluation
    history: pd.DataFrame  # every split's history, with columns split, fold, repeat
    model: torch.nn.Module  # the first split's best model (Grad-CAM, predict)
    out_dir: Path
    extra_evaluations: dict[str, evaluation.Evaluation] = dataclasses.field(default_factory=dict)


def run_model(prepared: Prepared, model_name: str, *, pretrained: str | Path = "scratch",
              out_dir: str | Path | None = None, progress: bool = True, resume: bool = False,
              callback: Callable[[splits.Split, int, dict, torch.nn.Module], None] | None = None,
              **train_overrides) -> ModelRun:
    """Train and test ``model_name`` on every split of ``prepared.splits``; save predictions, metrics, histories.

    Writes ``out_dir/`` (default ``output_dir/models/<model_name>``): ``metrics.json`` and
    ``predictions.csv`` (every test prediction), ``history.csv``, ``split-*/best.pt`` and ``best.pt`` (the
    first split's model, for ``python -m bloodlib predict``). With ``resume`` an interrupted run continues where it stopped.
    ``pretrained``: ``"scratch"`` (the default: the same numbers with or without internet), ``"imagenet"``,
    ``"auto"``, a checkpoint path, or a named source (``"pbc"``: this study's backbone trained on that dataset,
    built once and cached by :func:`bloodlib.study.backbones.backbone`).
    ``callback(split, epoch, row, model)`` runs after every epoch of every split (see :func:`bloodlib.training.train.fit`).
    """
    # a model's tuned recipe (config.MODEL_RECIPES) was chosen for training from scratch, not for fine-tuning
    from_scratch = models.InitialWeights.parse(pretrained).kind == "scratch"
    settings, data = prepared.settings.for_model(model_name, from_scratch=from_scratch), prepared.data
    out_dir = Path(out_dir or settings.output_dir / "models" / model_name)
    cfg = dataclasses.replace(settings.train, **train_overrides)  # the layered recipe (config.resolve), then the caller
    how, planned = prepared.protocol, prepared.splits
    initial = backbones.resolve_pretrained(pretrained, settings, model_name)  # before the seeds: it may train
    fits, probs, histories, first_model = [], [], [], None
    for i, split in enumerate(planned):
        config.seed_everything(settings.seed + i)  # the initial weights of each split, repeatable
        model = models.create_model(model_name, num_classes=len(data.classes), pretrained=initial,
                                    image_size=data.image_size, **cfg.model_kwargs())
        split_dir = out_dir / f"split-{i + 1:02d}"
        metadata = dict(mode=settings.mode, crop_margin=settings.crop_margin, dataset=settings.dataset,
                        split=split.name, fold=split.fold, repeat=split.repeat)
        fit = train.fit(model, data, split.train, split.val, dataclasses.replace(cfg, seed=settings.seed + i),
                        out_dir=split_dir, metadata=metadata, resume=resume, progress=progress,
                        callback=functools.partial(callback, split) if callback is not None else None)
        probs.append(inference.predict_proba(model, data.images[torch.as_tensor(split.test)]))
        histories.append(fit.history.assign(split=split.name, fold=split.fold, repeat=split.repeat))
        fits.append(fit)
        if first_model is None:
            first_model = model
        if progress:
            print(f"{split.name}: kept epoch {fit.kept_epoch}, validation macro-F1 {fit.kept_val['macro_f1']:.3f}, "
                  f"{fit.train_seconds:.0f} s")
    shutil.copyfile(out_dir / "split-01" / checkpoints.BEST, out_dir / checkpoints.BEST)
    history = pd.concat(histories, ignore_index=True)
    history.to_csv(out_dir / "history.csv", index=False)
    test = np.concatenate([s.test for s in planned])
    cv = how == "cv"
    result = evaluation.Evaluation(
        model=model_name, classes=data.classes, y_true=data.labels.numpy()[test], y_prob=np.concatenate(probs),
        ids=data.rows["id"].to_numpy()[test], groups=data.rows["group"].to_numpy()[test],
        fold=np.concatenate([np.full(len(s.test), s.fold) for s in planned]) if cv else None,
        repeat=np.concatenate([np.full(len(s.test), s.repeat) for s in planned]) if cv else None,
        train_seconds=float(sum(f.train_seconds for f in fits)),
        params=models.count_parameters(first_model),
        flops=float(models.count_flops(first_model, data.image_size)),
        throughput=inference_throughput(first_model, data),
        pretrained_source=getattr(first_model, "pretrained_source", "scratch"),
        extra=dict(protocol=how, splits=len(planned),
                   test_train_ratio=float(np.mean([len(s.test) / len(s.train) for s in planned])), dataset=settings.dataset,
                   mode=settings.mode, image_size=list(data.image_size), epochs=cfg.epochs,
                   batch_size=cfg.batch_size, device=fits[0].device, precision=fits[0].precision,
                   kept_epochs=[f.kept_epoch for f in fits], train_config=dataclasses.asdict(cfg),
                   initial_weights=first_model.initial_weights,
                   validation={k: float(np.mean([f.kept_val[k] for f in fits])) for k in ("accuracy", "macro_f1")},
                   train_images_per_second=float(np.mean([f.images_per_second for f in fits]))))
    evaluation.save_evaluation(result, out_dir, n=settings.bootstrap, seed=settings.seed)
    extra = extra_test_sets(first_model, data, result, settings)
    return ModelRun(model_name, how, planned, fits, result, history, first_model,
                    out_dir, extra)


def extra_test_sets(model: torch.nn.Module, data: ImageSet, main: evaluation.Evaluation,
                    settings: config.Settings) -> dict[str, evaluation.Evaluation]:
    """Splits beyond train/val/test (TEST_SIMPLE of kaggle-augmented), reported separately under
    ``output_dir/extra/<split>/<model>``, so that the comparison of the main test set is not mixed with them."""
    result = {}
    for split, idx in splits.further_sets(data.rows["split"]).items():
        ev = dataclasses.replace(main, y_true=data.labels.numpy()[idx], ids=data.rows["id"].to_numpy()[idx],
                                 y_prob=inference.predict_proba(model, data.images[torch.as_tensor(idx)]),
                                 fold=None, repeat=None, groups=data.rows["group"].to_numpy()[idx])
        evaluation.save_evaluation(ev, settings.output_dir / "extra" / split / main.model, n=settings.bootstrap,
                                 seed=settings.seed)
        result[split] = ev
    return result


def inference_throughput(model: torch.nn.Module, data: ImageSet, batch_size: int = 64, batches: int = 3) -> float:
    """Images per second of :func:`~bloodlib.models.inference.predict_proba` on the run's device, after one warm-up batch."""
    images = data.images[:batch_size]
    inference.predict_proba(model, images)
    start = time.perf_counter()
    for _ in range(batches):
        inference.predict_proba(model, images)
    return batches * len(images) / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------- notebook summaries
def statistics(run: ModelRun, *, n: int = 2000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The tables of a training notebook: headline metrics with bootstrap CIs, per class, per fold."""
    ev = run.evaluation
    first = ev.first_repeat()
    y_true, y_prob = ev.y_true[first], ev.y_prob[first]
    tables = {
        "headline": evaluation.evaluation_ci(ev, n=n, seed=seed),
        "per_class": evaluation.per_class_table(y_true, y_prob, ev.classes),
    }
    tables["confusion"], tables["confusion_normalised"] = evaluation.confusion_tables(y_true, y_prob, ev.classes)
    if ev.fold is not None:
        tables["per_fold"] = evaluation.fold_metrics(ev)
        tables["fold_summary"] = evaluation.fold_summary(tables["per_fold"], test_train_ratio=evaluation.test_train_ratio(ev))
    tables["splits"] = pd.DataFrame([{"split": s.name, "train": len(s.train), "validation": len(s.val),
                                      "test": len(s.test), "kept epoch": f.kept_epoch,
                                      "validation macro-F1": f.kept_val["macro_f1"],
                                      "seconds": f.train_seconds} for s, f in zip(run.splits, run.fits)])
    return tables


def test_sets_table(run: ModelRun, *, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Does validation predict the test? The validation part's accuracy and macro-F1 at the kept epoch (mean
    over splits; grouped like the test split), beside every test set's with 95% bootstrap intervals."""
    def row(name: str, images: int, values: dict, ci: pd.DataFrame | None = None) -> dict:
        out = {"evaluated on": name, "images": images}
        for metric in ("accuracy", "macro_f1"):
            out[metric] = values[metric]
            out[f"{metric} 95% CI"] = f"[{ci.loc[metric, 'low']:.3f}, {ci.loc[metric, 'high']:.3f}]" if ci is not None else ""
        return out

    val_images = int(np.mean([len(s.val) for s in run.splits]))
    rows = [row("validation (at the kept epoch)", val_images, run.evaluation.extra["validation"])]
    for name, ev in [("test" if run.protocol == "holdout" else "test (out-of-fold)", run.evaluation),
                     *run.extra_evaluations.items()]:
        ci = evaluation.evaluation_ci(ev, n=n, seed=seed)
        rows.append(row(name, len(ev.first_repeat()), ci["value"].to_dict(), ci))
    return pd.DataFrame(rows).set_index("evaluated on")


def gradcam_figure(run: ModelRun, data: ImageSet, *, per_class: int = 2, seed: int = 0):
    """Grad-CAM of the first split's model on test images of that split (never seen in training)."""

    test = run.splits[0].test
    chosen = test[explain.samples_per_class(data.labels.numpy()[test], per_class, seed)]
    # the model's own input pipeline (its input colour included), as in training and prediction
    normalize = functools.partial(inference.normalize, normalization=run.model.normalization)
    return plots.gradcam_figure(run.model, data.images[torch.as_tensor(chosen)], data.labels.numpy()[chosen],
                                  data.classes, normalize=normalize,
                                  title=f"Grad-CAM, {run.model_name}: true / predicted (p), held-out images")


def errors_by_source(run: ModelRun) -> pd.DataFrame | None:
    """The source smears behind the test errors (:func:`evaluation.errors_by_group`), or None where every test
    image is its own source (BCCD): there the confusion matrix already says it."""
    ev = run.evaluation
    if not evaluation.shares_groups(ev.groups):
        return None
    first = ev.first_repeat()
    return evaluation.errors_by_group(ev.y_true[first], ev.y_prob[first], ev.groups[first], ev.classes)


def mistakes_figure(run: ModelRun, data: ImageSet, k: int = 8):
    """The test images the model got wrong with the highest confidence, and what it said."""

    ev = run.evaluation
    first = ev.first_repeat()
    groups = ev.groups[first] if evaluation.shares_groups(ev.groups) else None  # one mistake per source smear
    table = evaluation.most_confident_mistakes(ev.y_true[first], ev.y_prob[first], ev.ids[first], ev.classes, k=k,
                                             groups=groups)
    if table.empty:
        return table, None
    by_id = pd.Series(np.arange(len(data)), index=data.rows["id"].to_numpy())
    positions = np.array(by_id[table["id"].astype(str)].to_numpy())
    titles = [f"{row.true} /\n{row.predicted} ({row.confidence:.2f})" for row in table.itertuples()]
    figure = plots.image_grid(data.images[torch.as_tensor(positions)], titles,
                              title=f"Most confident mistakes, {run.model_name}: true / predicted (p)")
    return table, figure
