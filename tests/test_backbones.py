"""Pretraining as a choice: a backbone trained once on another dataset and cached, fine-tuned under a new
head, refused where it cannot start the model, and the fine-tuning recipe (the backbone's learning rate)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bloodlib.study import backbones, experiment
from bloodlib.models import checkpoints
from bloodlib import config, models
from bloodlib.data import datasets
from bloodlib.pipeline import records, report
from bloodlib.training import train
from bloodlib.config import TrainConfig
from bloodlib.utils import paths
from bloodlib.data.synthetic import toy_imageset

SIZE = 16  # the smallest input every model takes: each training here lasts a second or two
TINY = dict(epochs=1, batch_size=8)  # the backbone's recipe in these tests


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of this test's own: a backbone found there was made by this test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(config.ENV_CACHE, str(folder))
    return folder


@pytest.fixture
def source(tmp_path) -> str:
    """Another lab's atlas in miniature: three classes of 12 coloured cells, one folder per class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "atlas"
    colours = {"basophil": (120, 40, 160), "platelet": (200, 180, 60), "erythroblast": (60, 160, 200)}
    for label, colour in colours.items():
        (root / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture
def fits(monkeypatch) -> list:
    """Every train.fit call: (the model's state as it started, its config); training goes on as usual."""
    calls, real = [], train.fit

    def counted(model, *args, **kwargs):
        calls.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(train, "fit", counted)
    return calls


def _settings(tmp_path, **overrides) -> config.Settings:
    return config.resolve("smoke", output_dir=tmp_path / "out", **{"image_size": SIZE, **overrides})


def _prepared(tmp_path, image_size=SIZE, **overrides) -> datasets.Prepared:
    """A BCCD-like run on synthetic cells (four classes), two folds, one epoch."""
    data = toy_imageset((10, 10, 10, 10), size=image_size)
    settings = config.resolve("smoke", output_dir=tmp_path / "out", image_size=image_size, epochs=1, folds=2,
                              bootstrap=20, **overrides)
    data.rows, planned, how = datasets.split(data.rows.assign(split="", group=data.rows["id"].astype(str)), settings)
    return datasets.Prepared(settings=settings, root=tmp_path, cleaning=None, data=data, boxes=None, splits=planned,
                             protocol=how)


# ------------------------------------------------------------------------------------------ the cache

def test_a_backbone_is_trained_once_then_read_from_the_cache(tmp_path, cache, source, fits):
    settings = _settings(tmp_path)
    path = backbones.backbone(settings, "resnet18", source, progress=False, **TINY)
    assert len(fits) == 1 and path.name == checkpoints.BEST and path.is_file()
    assert path.parent.parent == cache / backbones.FOLDER
    assert backbones.backbone(settings, "resnet18", source, progress=False, **TINY) == path
    assert len(fits) == 1  # the second call trained nothing
    assert [p.name for p in path.parent.parent.iterdir()] == [path.parent.name]  # no temporary folder left

    record = backbones.read_record(path)
    assert record["key"] == path.parent.name and record["dataset"] == source and record["model"] == "resnet18"
    assert record["image_size"] == [SIZE, SIZE] and record["recipe"]["epochs"] == 1
    assert sum(record["split"][part] for part in ("train", "val", "test")) == 36
    assert record["test"]["images"] == record["split"]["test"]
    assert 0 <= record["test"]["accuracy"] <= 1 and 0 <= record["test"]["macro_f1"] <= 1
    assert (path.parent / "history.csv").is_file()
    metadata = checkpoints.read_checkpoint(path)["metadata"]
    assert (metadata["dataset"], metadata["backbone"], metadata["data_checksum"]) == (
        source, record["key"], record["data_checksum"])
    assert metadata["test_metrics"] == record["test"]  # travels with the weights into the runs fine-tuned from them


def test_the_key_changes_with_what_made_the_backbone(tmp_path, cache, source):
    def key(model="resnet18", checksum=None, recipe=TINY, **run):
        made = backbones.source_settings(_settings(tmp_path, **run), model, source, **recipe)
        return backbones.cache_key(made, checksum or datasets.data_checksum(made))

    same = key()
    assert key() == same
    others = {key(checksum="0" * 64), key(recipe=dict(TINY, epochs=2)), key(model="alexnet"), key(image_size=24),
              key(mode="full")}
    assert len(others) == 5 and same not in others
    # the checksum is the data's: one changed image makes another dataset
    image = next((Path(source.partition(":")[2]) / "basophil").glob("*.png"))
    Image.new("RGB", (24, 24), (0, 0, 0)).save(image)
    assert key() != same


def test_a_source_that_shares_the_runs_images_is_refused(tmp_path, source):
    for run, pretrain in (("bccd", "bccd"), ("bccd", "kaggle-augmented"), ("kaggle-augmented", "bccd"),
                          (source, source)):
        with pytest.raises(ValueError, match="has seen this run's test images"):
            backbones.check_source(run, pretrain)
    with pytest.raises(ValueError, match=r"pretrained='imagenette' is none of .*unknown dataset"):
        backbones.check_source("bccd", "imagenette")
    backbones.check_source("bccd", source)


# ------------------------------------------------------------------------------------------ fine-tuning

def test_run_model_starts_from_the_backbone_under_a_new_head(tmp_path, cache, source, fits):
    path = backbones.backbone(_settings(tmp_path), "resnet18", source, progress=False, **TINY)
    saved = checkpoints.read_checkpoint(path)["state_dict"]
    prepared = _prepared(tmp_path)
    run = experiment.run_model(prepared, "resnet18", pretrained=path, progress=False)
    assert len(fits) == 1 + len(prepared.splits)
    for started in fits[1:]:  # every split starts from the backbone, with a head for the run's 4 classes
        assert torch.equal(started["conv1.weight"], saved["conv1.weight"])
        assert torch.equal(started["layer4.1.bn2.running_var"], saved["layer4.1.bn2.running_var"])
        assert started["fc.weight"].shape == (4, 512) and saved["fc.weight"].shape == (3, 512)
    assert run.evaluation.pretrained_source == f"pretrained on {source}"
    metrics = json.loads((run.out_dir / "metrics.json").read_text())
    initial = metrics["metadata"]["extra"]["initial_weights"]
    assert initial["kind"] == "checkpoint" and initial["path"] == paths.portable(path.resolve(), config.project_root())
    assert initial["backbone"] == path.parent.name and initial["recipe"]["epochs"] == 1
    assert checkpoints.read_checkpoint(run.out_dir / checkpoints.BEST)["metadata"]["initial_weights"] == initial
    # the run record and the report name where the weights came from
    shown = records.models_record(tmp_path / "out")["resnet18"]
    assert shown["pretrained"] == f"pretrained on {source}" and shown["initial_weights"] == initial
    text = report.weights(shown["initial_weights"])
    assert text.startswith(f"pretrained on {source} (resnet18, {SIZE}x{SIZE} px, crop, data ")
    assert "on its own test part accuracy" in text
    assert report.weights("scratch") == report.weights({"kind": "scratch"}) == "from scratch"


def test_run_model_builds_a_named_source_once(tmp_path, cache, source, fits):
    prepared = _prepared(tmp_path)
    first = experiment.run_model(prepared, "resnet18", pretrained=source, progress=False)
    assert len(fits) == 1 + len(prepared.splits)
    key = first.evaluation.extra["initial_weights"]["backbone"]
    assert (cache / backbones.FOLDER / key / checkpoints.BEST).is_file()
    experiment.run_model(prepared, "resnet18", pretrained=source, progress=False, out_dir=tmp_path / "again")
    assert len(fits) == 1 + 2 * len(prepared.splits)  # the backbone came from the cache


def test_run_model_refuses_a_backbone_of_another_size_or_model(tmp_path, cache, source):
    path = backbones.backbone(_settings(tmp_path), "resnet18", source, progress=False, **TINY)
    with pytest.raises(checkpoints.CheckpointError,
                       match=rf"{path} was made for image_size \[16, 16\], expected \[24, 24\]"):
        experiment.run_model(_prepared(tmp_path, image_size=24), "resnet18", pretrained=path, progress=False)
    with pytest.raises(checkpoints.CheckpointError, match=rf"{path} was made for model 'resnet18', expected 'alexnet'"):
        experiment.run_model(_prepared(tmp_path), "alexnet", pretrained=path, progress=False)
    last = path.with_name(checkpoints.LAST)  # the finished backbone's record, without weights
    with pytest.raises(checkpoints.CheckpointError, match="holds no weights"):
        experiment.run_model(_prepared(tmp_path), "resnet18", pretrained=last, progress=False)


# ------------------------------------------------------------------------------------ the fine-tuning recipe

def test_default_optimizer_is_the_from_scratch_one():
    """backbone_lr_scale=1 keeps timm's grouping and the one-cycle schedule exactly as they were."""
    import timm.optim

    torch.manual_seed(0)
    model = models.create_model("resnet18", 4, pretrained="scratch")
    cfg = TrainConfig(epochs=4, lr=1e-3)
    optimizer, scheduler = train.make_optimizer(model, cfg, steps_per_epoch=5)
    reference = timm.optim.create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == \
        [[id(p) for p in g["params"]] for g in reference.param_groups]
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=cfg.lr, total_steps=20, pct_start=cfg.warmup,
                                                    anneal_strategy="cos", cycle_momentum=False)
    for _ in range(19):
        assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in reference.param_groups]
        optimizer.step(), scheduler.step(), reference.step(), one_cycle.step()


def test_backbone_lr_scale_gives_the_backbone_its_own_rate():
    torch.manual_seed(0)
    model = models.create_model("alexnet", 4, pretrained="scratch")
    cfg = TrainConfig(lr=1e-3, weight_decay=0.05, backbone_lr_scale=0.1)
    optimizer, scheduler = train.make_optimizer(model, cfg, steps_per_epoch=5)
    head = {id(p) for p in model.get_classifier().parameters()}
    peaks = [(g["max_lr"], {id(p) in head for p in g["params"]}, g["weight_decay"]) for g in optimizer.param_groups]
    assert peaks[0][:2] == (1e-3, {True})  # the head first: the history's lr column is the head's
    assert {(lr, frozenset(part)) for lr, part, _ in peaks} == {(1e-3, frozenset({True})), (1e-4, frozenset({False}))}
    # the weight-decay rule is timm's, as from scratch: biases and norms undecayed
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model.get_classifier().bias)] == 0 and decay[id(model.get_classifier().weight)] == 0.05
    assert decay[id(model.features[0].bias)] == 0 and decay[id(model.features[0].weight)] == 0.05
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_a_zero_backbone_rate_trains_the_head_only():
    data = toy_imageset((8, 8, 8, 8), size=SIZE)
    torch.manual_seed(0)
    model = models.create_model("resnet18", 4, pretrained="scratch")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train.fit(model, data, data.indices("train"), data.indices("val"),
              TrainConfig(epochs=1, batch_size=8, backbone_lr_scale=0.0, seed=0), device="cpu", progress=False)
    after = model.state_dict()
    assert torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    with pytest.raises(ValueError, match="backbone_lr_scale must be >= 0"):
        TrainConfig(backbone_lr_scale=-0.1)
    assert dataclasses.asdict(TrainConfig())["backbone_lr_scale"] == 1.0
