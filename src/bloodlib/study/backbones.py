"""Backbones this study pretrains on another dataset, built once and cached: :func:`backbone`.

ImageNet weights cannot be downloaded everywhere; a blood-cell atlas can (PBC: 17,092 cells of 8 classes,
another lab, stain and camera than BCCD). ``pretrained="pbc"`` in a training notebook means "this study's
``model_name`` trained from scratch on PBC, at this run's image size and mode": its ``best.pt`` becomes the
initial weights, under a new head (:func:`bloodlib.models.create_model`).

A backbone is an artefact keyed by what made it: the source dataset and its data checksum, the model, the
image size, mode and crop margin, and the whole training recipe (:func:`cache_key`). It lives in
``config.cache_dir()/backbones/<key>/`` (``best.pt``, ``history.csv``, ``backbone.json``: the split sizes
and the test part's accuracy and macro-F1, and ``test/``: that part's predictions, source to source), written into a temporary folder that is
renamed into place once complete, so a second run (or a second ``make report``) finds it and trains nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import torch

from bloodlib.models import checkpoints, inference
from bloodlib import config, evaluation, models
from bloodlib.data import datasets
from bloodlib.utils import fileio
from bloodlib.training import train
from bloodlib.data.sources import parse_dataset

FOLDER = "backbones"  # under config.cache_dir()
RECORD = "backbone.json"
TEST = "test"  # the source's held-out test part, scored (evaluation.save_evaluation)
VERSION = 2  # bump when how a backbone is made changes: every cached one is then made again

# datasets holding copies of one another's images (dataset2-master is augmented dataset-master smears): a
# backbone trained on one would have seen the other's test images
SAME_IMAGES = ({"bccd", "kaggle-augmented"},)


def check_source(run_dataset: str, source: str) -> None:
    """Refuse a source that is no dataset, or whose images a run on ``run_dataset`` tests on (the same
    dataset, or copies of it)."""
    try:
        parsed = parse_dataset(source)
    except ValueError as error:
        raise ValueError(f"pretrained={source!r} is none of {models.PRETRAINED_KINDS}, no checkpoint path (.pt) "
                         f"and no dataset to pretrain on: {error}") from None
    run = parse_dataset(run_dataset)
    if parsed == run or any({parsed[0], run[0]} <= same for same in SAME_IMAGES):
        raise ValueError(f"pretrained={source!r} for a run on {run_dataset!r}: a backbone trained on {source!r} "
                         f"has seen this run's test images; pretrain on another dataset (e.g. 'pbc')")


def source_settings(settings: config.Settings, model_name: str, source: str, *, data_dir=None,
                    **recipe) -> config.Settings:
    """The settings a backbone is trained with: ``source``'s data at the run's image size, mode, crop margin
    and seed, on one holdout split, with the layered recipe of ``settings.profile`` for that dataset and model
    (the run's own overrides are for fine-tuning, not for the backbone), then ``recipe``."""
    return config.resolve(settings.profile, data_dir, config.cache_dir() / FOLDER, model=model_name, dataset=source,
                          image_size=settings.image_size, mode=settings.mode, crop_margin=settings.crop_margin,
                          seed=settings.seed, folds=1, **recipe)


def cache_key(source: config.Settings, checksum: str) -> str:
    """What made a backbone, as 16 hex digits: dataset, data checksum, model, image size, mode, crop margin and
    recipe (``source`` from :func:`source_settings`)."""
    made_of = {"version": VERSION, "dataset": source.dataset, "data_checksum": checksum, "model": source.model,
               "image_size": source.image_size, "mode": source.mode, "crop_margin": source.crop_margin,
               "recipe": dataclasses.asdict(source.train)}
    return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()[:16]


def backbone(settings: config.Settings, model_name: str, source: str = "pbc", *, data_dir=None,
             progress: bool = True, **recipe) -> Path:
    """The ``best.pt`` of ``model_name`` trained on ``source`` for runs like ``settings``; trained once, then
    read from the cache. ``data_dir`` is the source's data folder (None: where ``datasets.locate`` finds it);
    ``recipe`` overrides the backbone's training recipe (each value changes the key)."""
    check_source(settings.dataset, source)
    made = source_settings(settings, model_name, source, data_dir=data_dir, **recipe)
    checksum = datasets.data_checksum(made)
    key = cache_key(made, checksum)
    folder = config.cache_dir() / FOLDER / key
    if not (folder / checkpoints.BEST).is_file():
        _build(made, checksum, key, folder, progress)
    return folder / checkpoints.BEST


def resolve_pretrained(pretrained: "str | os.PathLike | models.InitialWeights", settings: config.Settings,
                       model_name: str) -> models.InitialWeights:
    """A run's ``pretrained`` as :func:`bloodlib.models.create_model` takes it: parsed once
    (:meth:`~bloodlib.models.InitialWeights.parse`); a dataset name becomes the checkpoint of its cached backbone
    (trained here if missing), a keyword or a checkpoint stays as it is."""
    weights = models.InitialWeights.parse(pretrained)
    if weights.kind != "dataset":
        return weights
    return models.InitialWeights("checkpoint", path=backbone(settings, model_name, source=weights.dataset))


def read_record(path: str | os.PathLike) -> dict | None:
    """The ``backbone.json`` beside a backbone's ``best.pt`` (None beside any other checkpoint)."""
    record = Path(path).with_name(RECORD)
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None


def _build(made: config.Settings, checksum: str, key: str, folder: Path, progress: bool) -> None:
    """Train the backbone on the source's training part, select its epoch on the validation part, score it on
    the test part; everything in a temporary folder renamed to ``folder`` at the end."""
    prepared = datasets.prepare(made, progress=progress)
    data, split = prepared.data, prepared.splits[0]  # folds=1: the one holdout split (or the dataset's own test)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.with_name(f".{key}.{secrets.token_hex(6)}.tmp")
    work.mkdir()  # mode from the umask, as fileio's files
    try:
        config.seed_everything(made.seed)  # the backbone's initial weights, repeatable
        model = models.create_model(made.model, len(data.classes), pretrained="scratch")
        metadata = dict(mode=made.mode, crop_margin=made.crop_margin, dataset=made.dataset, data_checksum=checksum,
                        backbone=key, split=split.name)
        fit = train.fit(model, data, split.train, split.val, made.train, out_dir=work, metadata=metadata,
                        progress=progress)
        probs = inference.predict_proba(model, data.images[torch.as_tensor(split.test)])
        scores = evaluation.metrics(data.labels.numpy()[split.test], probs, data.classes)
        # the test part's predictions, so that a page can show source-to-source scores with intervals
        evaluation.save_evaluation(evaluation.Evaluation(
            model=made.model, classes=data.classes, y_true=data.labels.numpy()[split.test], y_prob=probs,
            ids=data.rows["id"].to_numpy()[split.test], groups=data.rows["group"].to_numpy()[split.test],
            train_seconds=fit.train_seconds, pretrained_source="scratch",
            extra=dict(protocol="holdout", dataset=made.dataset, image_size=list(data.image_size), mode=made.mode)),
            work / TEST, n=made.bootstrap, seed=made.seed)
        test = {"images": int(len(split.test)), "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
        # the test scores travel in the checkpoint too, so that a run fine-tuned from it can report them
        saved = checkpoints.read_checkpoint(work / checkpoints.BEST)
        checkpoints.save_checkpoint(work / checkpoints.BEST, model, {**saved["metadata"], "test_metrics": test},
                                    kind=saved.get("kind", "best"))
        fit.history.to_csv(work / "history.csv", index=False)
        fileio.write_json(work / RECORD, {
            "key": key, "dataset": made.dataset, "data_checksum": checksum, "model": made.model,
            "image_size": list(data.image_size), "mode": made.mode, "crop_margin": made.crop_margin,
            "recipe": dataclasses.asdict(made.train), "classes": data.classes,
            "split": {"name": split.name, "train": len(split.train), "val": len(split.val), "test": len(split.test)},
            "best_epoch": fit.kept_epoch, "validation": fit.kept_val, "test": test, "device": fit.device,
            "precision": fit.precision, "train_seconds": fit.train_seconds})
        try:
            work.rename(folder)
        except OSError:  # another process finished the same backbone first: its copy is as good
            if not (folder / checkpoints.BEST).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
