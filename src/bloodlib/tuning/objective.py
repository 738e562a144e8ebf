"""The score a search maximises: fold-mean validation macro-F1 of one recipe, trained on every split of a run.

Each split trains exactly as :func:`bloodlib.study.experiment.run_model` would (the same splits, seeds and layered
recipe, the same fixed schedule) but is scored on its **validation** part only: :func:`validation_splits` drops
the test parts before anything is trained, so no trial can read a test image or label. The test parts are read
once, by the training notebooks, with the recipe the search chose.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from bloodlib import config, models
from bloodlib.data.datasets import ImageSet
from bloodlib.data.splits import Split
from bloodlib.training import train

# (global epoch step, running fold-mean validation macro-F1, image-epochs so far) -> None; may raise to stop the
# trial (a pruner)
Reporter = Callable[[int, float, int], None]


def validation_splits(planned: list[Split]) -> list[Split]:
    """The splits with their test parts removed: all a search may see."""
    return [dataclasses.replace(split, test=np.empty(0, dtype=np.int64)) for split in planned]


@dataclasses.dataclass
class Score:
    """What one recipe scored: the fold-mean validation macro-F1 and its parts."""
    value: float  # mean over splits of the validation macro-F1 of the kept (last) epoch
    per_split: list[float]
    image_epochs: int  # training images seen, over every split and epoch run
    seconds: float
    precision: str
    device: str = ""


def cross_validated_score(data: ImageSet, planned: list[Split], settings: config.Settings, model_name: str,
                          overrides: dict, *, report: Reporter | None = None, progress: bool = False) -> Score:
    """Train ``model_name`` with ``settings``' recipe and ``overrides`` on every split; score validation only.

    ``report(step, value, image_epochs)`` is called after every epoch (``step`` counts epochs over all splits, from 1) with the
    mean validation macro-F1 of the splits done so far, the current split counted at its current epoch; a pruner
    raising there stops the trial. The kept epoch must be the last (a fixed schedule): with ``keep_epoch="best"``
    the validation part would both choose the epoch and score it, an optimistic score.
    """
    cfg = dataclasses.replace(settings.train, **overrides)
    if cfg.keep_epoch != "last":
        raise ValueError("a search scores the validation part: keep_epoch must be 'last' (a fixed schedule), "
                         f"got {cfg.keep_epoch!r}")
    done, image_epochs, seconds, precision = [], 0, 0.0, ""
    for i, split in enumerate(validation_splits(planned)):
        per_epoch = images_per_epoch(data, split, cfg)

        def after_epoch(epoch: int, row: dict, _model, i=i, per_epoch=per_epoch) -> None:
            if report is not None:
                report(i * cfg.epochs + epoch, float(np.mean([*done, row["val_macro_f1"]])),
                       image_epochs + epoch * per_epoch)

        config.seed_everything(settings.seed + i)  # the initial weights run_model draws for this split
        model = models.create_model(model_name, num_classes=len(data.classes), pretrained="scratch",
                                    **cfg.model_kwargs())
        fit = train.fit(model, data, split.train, split.val, dataclasses.replace(cfg, seed=settings.seed + i),
                        progress=progress, callback=after_epoch)
        done.append(fit.kept_val["macro_f1"])
        image_epochs += per_epoch * len(fit.history)
        seconds += fit.train_seconds
        precision = fit.precision
    return Score(float(np.mean(done)), done, image_epochs, seconds, precision, fit.device)


def images_per_epoch(data: ImageSet, split: Split, cfg: config.TrainConfig) -> int:
    """Training images one epoch of ``split`` steps through: oversampled, whole batches only (as fit runs it)."""
    positions = len(data.training_indices(np.asarray(split.train), cfg.oversample))
    return positions if positions <= cfg.batch_size else positions // cfg.batch_size * cfg.batch_size
