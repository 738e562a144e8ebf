"""The training loop on synthetic images: it learns, repeats, stops, saves, refuses and resumes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from bloodlib import config, models
from bloodlib.training import train
from bloodlib.models.checkpoints import BEST, LAST, CheckpointError, load_checkpoint, load_model, read_checkpoint
from bloodlib.models.inference import predict_proba
from bloodlib.data.synthetic import toy_imageset
from bloodlib.config import TrainConfig
from bloodlib.training.train import NonFiniteLossError, early_stopping_epoch, fit

TIMING = ["seconds", "images_per_second"]  # the only history columns allowed to differ between equal runs


def _tiny(num_classes: int, pretrained: bool) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
    model.normalization = {"mean": [0.5] * 3, "std": [0.25] * 3}
    return model


@pytest.fixture
def tiny(monkeypatch):
    """A registry entry for a 300-parameter CNN, so that loop tests take a fraction of a second."""
    monkeypatch.setitem(models.REGISTRY, "tiny", models.ModelSpec(_tiny, 8, ""))
    return "tiny"


@pytest.fixture(scope="module")
def data():
    return toy_imageset((12, 6, 4, 4), size=16)  # imbalanced, as the real data: oversampling has work to do


def _model(name="tiny", seed=0):
    config.seed_everything(seed)
    return models.create_model(name, 4, pretrained="scratch")


def _fit(data, cfg=None, **kwargs):
    cfg = cfg or TrainConfig(epochs=3, batch_size=8, lr=0.05, patience=10, seed=1)
    kwargs.setdefault("save_every", 0)  # last.pt after every epoch: the resume tests interrupt at chosen epochs
    return fit(kwargs.pop("model", None) or _model(), data, data.indices("train"), data.indices("val"), cfg,
               progress=False, **kwargs)


def test_resnet18_from_scratch_learns_separable_colours():
    data = toy_imageset((16, 16, 16, 16), size=32)
    model = _model("resnet18")
    result = fit(model, data, data.indices("train"), data.indices("val"),
                 TrainConfig(epochs=3, batch_size=16, lr=3e-3, seed=0), device="cpu", progress=False)
    losses = result.history["train_loss"]
    assert losses.iloc[-1] < losses.iloc[0]
    assert list(result.history.columns) == train.HISTORY_COLUMNS
    assert result.history["epoch"].tolist() == [1, 2, 3]
    assert result.device == "cpu" and result.images_per_second > 0 and result.checkpoint is None
    assert result.kept_val["macro_f1"] == result.history["val_macro_f1"].max()
    assert not model.training


def test_same_seed_same_history(tiny, data):
    first, second = _fit(data), _fit(data)
    assert first.history.drop(columns=TIMING).equals(second.history.drop(columns=TIMING))


def test_early_stopping_stops_after_patience(tiny, data):
    # lr 0: the model never changes, so epoch 1 stays the best and patience 2 ends the run at epoch 3
    result = _fit(data, TrainConfig(epochs=20, batch_size=8, lr=0.0, patience=2))
    assert result.history["epoch"].tolist() == [1, 2, 3]
    assert result.kept_epoch == 1


def test_keeping_the_last_epoch_runs_the_whole_schedule_and_keeps_its_weights(tiny, data, tmp_path):
    # lr 0 and patience 2 would stop "best" at epoch 3; "last" runs all 5 epochs and keeps the fifth
    cfg = TrainConfig(epochs=5, batch_size=8, lr=0.0, patience=2, keep_epoch="last")
    result = _fit(data, cfg, out_dir=tmp_path)
    assert result.history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert result.kept_epoch == 5 and result.kept_val["macro_f1"] == result.history["val_macro_f1"].iloc[-1]
    assert read_checkpoint(tmp_path / BEST)["metadata"]["epoch"] == 5
    with pytest.raises(ValueError, match="keep_epoch"):
        TrainConfig(keep_epoch="first")


def test_keeping_the_last_epoch_trains_exactly_as_keeping_the_best(tiny, data):
    # the rule only chooses among epochs; it never changes what training does (quality.py --replay-selection)
    best = _fit(data, TrainConfig(epochs=4, batch_size=8, lr=0.05, patience=10, seed=1))
    last = _fit(data, TrainConfig(epochs=4, batch_size=8, lr=0.05, patience=10, seed=1, keep_epoch="last"))
    assert best.history.drop(columns=TIMING).equals(last.history.drop(columns=TIMING))
    assert last.kept_epoch == 4


def test_early_stopping_replayed_on_a_whole_history_keeps_what_a_stopped_run_kept(tiny, data):
    whole = _fit(data, TrainConfig(epochs=6, batch_size=8, lr=0.05, patience=6, seed=1, keep_epoch="last"))
    for patience in (1, 2, 6):
        stopped = _fit(data, TrainConfig(epochs=6, batch_size=8, lr=0.05, patience=patience, seed=1))
        assert early_stopping_epoch(whole.history, patience) == stopped.kept_epoch, patience


def test_non_finite_loss_names_epoch_and_step(tiny, data):
    model, calls = _model(), []
    steps = len(data.training_indices(data.indices("train"))) // 8

    def poison(module, inputs, output):  # NaN logits from the 2nd training step of epoch 2 on
        calls.append(module.training)
        return output * float("nan") if sum(calls) > steps + 1 else output
    model.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 2, step 2"):
        _fit(data, model=model)


def test_checkpoint_round_trip_gives_same_predictions(tiny, data, tmp_path):
    model = _model()
    result = _fit(data, model=model, out_dir=tmp_path, metadata={"mode": "crop", "fold": 0})
    assert result.checkpoint == tmp_path / BEST
    loaded = load_model(result.checkpoint, model_name="tiny", classes=data.classes, image_size=(16, 16))
    np.testing.assert_allclose(predict_proba(loaded, data.images), predict_proba(model, data.images), atol=1e-6)
    meta = loaded.checkpoint_metadata
    assert meta["epoch"] == result.kept_epoch and meta["metrics"]["macro_f1"] == result.kept_val["macro_f1"]
    assert (meta["model"], meta["classes"], meta["image_size"], meta["mode"], meta["fold"]) == (
        "tiny", data.classes, (16, 16), "crop", 0)
    assert meta["seed"] == 1 and meta["pretrained_source"] == "scratch"
    assert meta["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    for path in (tmp_path / BEST, tmp_path / LAST):
        torch.load(path, weights_only=True)  # plain tensors and values only
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST, LAST]  # no temporary file left behind


def test_interrupted_run_keeps_its_best_checkpoint(tiny, data, tmp_path):
    model, calls = _model(), []
    steps = len(data.training_indices(data.indices("train"))) // 8

    def crash(module, inputs, output):  # fails inside epoch 3, after two finished epochs
        calls.append(module.training)
        if sum(calls) > 2 * steps:
            raise KeyboardInterrupt
    model.register_forward_hook(crash)
    with pytest.raises(KeyboardInterrupt):
        _fit(data, model=model, out_dir=tmp_path)
    state, meta = load_checkpoint(tmp_path / BEST)
    assert meta["epoch"] in (1, 2)
    assert read_checkpoint(tmp_path / LAST)["train_state"]["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST, LAST]


@pytest.mark.parametrize("extra", [{}, {"ema_decay": 0.8}, {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}],
                         ids=["plain", "ema", "mixup"])
def test_resume_continues_an_interrupted_run_exactly(tiny, data, tmp_path, extra):
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.05, patience=10, seed=1, **extra)
    whole = _fit(data, cfg, out_dir=tmp_path / "whole")

    def stop_after_2(epoch, row, model):
        if epoch == 2:
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(data, cfg, out_dir=tmp_path / "cut", callback=stop_after_2)
    resumed = _fit(data, cfg, model=_model(seed=123), out_dir=tmp_path / "cut", resume=True)
    assert resumed.history["epoch"].tolist() == [1, 2, 3, 4]
    assert resumed.history.drop(columns=TIMING).equals(whole.history.drop(columns=TIMING))
    assert resumed.kept_epoch == whole.kept_epoch
    # a finished run keeps a small record instead of its optimizer state, and resuming it changes nothing
    assert read_checkpoint(tmp_path / "cut" / LAST)["state_dict"] is None
    again = _fit(data, cfg, model=_model(seed=5), out_dir=tmp_path / "cut", resume=True)
    assert again.history.drop(columns=TIMING).equals(whole.history.drop(columns=TIMING))
    # the training time is every epoch's, those before the interruption included, not only this call's
    assert resumed.train_seconds == pytest.approx(resumed.history["seconds"].sum())
    assert again.train_seconds == pytest.approx(resumed.train_seconds) and again.train_seconds > 0
    assert again.images_per_second > 0


def test_resume_state_written_every_save_every_seconds_still_resumes_exactly(tiny, data, tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=8, lr=0.05, patience=10, seed=1)
    whole = _fit(data, cfg, out_dir=tmp_path / "whole")

    def stop_after_3(epoch, row, model):
        if epoch == 3:
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(data, cfg, out_dir=tmp_path / "cut", callback=stop_after_3, save_every=3600)
    # within the hour only the first epoch's state was written; best.pt may be newer
    assert read_checkpoint(tmp_path / "cut" / LAST)["train_state"]["epoch"] == 1
    resumed = _fit(data, cfg, model=_model(seed=123), out_dir=tmp_path / "cut", resume=True)
    assert resumed.history.drop(columns=TIMING).equals(whole.history.drop(columns=TIMING))
    assert resumed.kept_epoch == whole.kept_epoch


def test_resume_with_another_setup_is_refused(tiny, data, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8)
    _fit(data, cfg, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another training set-up.*'lr': \\(0.001, 0.01\\)"):
        _fit(data, TrainConfig(epochs=2, batch_size=8, lr=0.01), out_dir=tmp_path, resume=True)


@pytest.mark.parametrize("field, value", [("zoom", -0.1), ("zoom", 1.0), ("shift", 0.5)])
def test_train_config_refuses_geometry_out_of_range(field, value):
    with pytest.raises(ValueError, match=f"zoom must be in.*{value}"):
        TrainConfig(**{field: value})


def test_only_training_images_are_oversampled_and_augmented(tiny, data, monkeypatch):
    augmented, evaluated = [], []
    real_augment, real_validate = train.augment_batch, train.validate
    monkeypatch.setattr(train, "augment_batch", lambda x, *a, **k: augmented.append(len(x)) or real_augment(x, *a, **k))
    monkeypatch.setattr(train, "validate", lambda m, x, y, **k: evaluated.append(len(x)) or real_validate(m, x, y, **k))
    train_idx, val_idx = data.indices("train"), data.indices("val")
    oversampled = len(data.training_indices(train_idx))
    assert oversampled > len(train_idx)
    _fit(data, TrainConfig(epochs=2, batch_size=4))
    # every epoch sees the oversampled positions, less an incomplete last batch (reshuffled each epoch)
    assert sum(augmented) == 2 * (oversampled // 4 * 4)
    assert evaluated == [len(val_idx)] * 2  # validation: its own images, once each, no augmentation


def test_empty_validation_and_bad_config_are_refused(tiny, data):
    with pytest.raises(ValueError, match="val_idx is empty"):
        fit(_model(), data, data.indices("train"), [], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)


def test_schedule_works_for_runs_of_any_length():
    model = nn.Linear(2, 2)
    for epochs, steps in [(1, 1), (1, 2), (2, 1), (2, 5), (1, 10), (3, 7), (40, 16)]:
        optimizer, scheduler = train.make_optimizer(model, TrainConfig(epochs=epochs, lr=0.1), steps)
        lrs = []
        for _ in range(epochs * steps):
            optimizer.step()
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
        assert all(0 <= lr <= 0.1 + 1e-12 for lr in lrs[:-1]), (epochs, steps, lrs)
        if epochs * steps >= 10:
            assert max(lrs) == pytest.approx(0.1, rel=0.05) and lrs[-2] < 0.01  # warm up to the peak, anneal


def test_loop_on_real_images(bccd_root, tmp_path):
    """One short epoch on the real images (32 px full smears), on the first split of the run."""
    from bloodlib.data import datasets

    settings = config.resolve("smoke", data_dir=bccd_root, output_dir=tmp_path, image_size=32, mode="full", epochs=1)
    prepared = datasets.prepare(settings, progress=False)
    data, split = prepared.data, prepared.splits[0]
    result = fit(_model("resnet18"), data, split.train[::3], split.val,  # a third: the point is the real images
                 settings.train, out_dir=tmp_path / "run", progress=False)
    assert result.history["val_macro_f1"].between(0, 1).all()
    assert load_model(result.checkpoint, classes=data.classes, image_size=data.image_size).checkpoint_metadata["mode"] == "full"


def test_ema_weights_are_validated_kept_and_saved(tiny, data, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, patience=10, seed=1, ema_decay=0.8)
    model = _model()
    result = _fit(data, cfg, model=model, out_dir=tmp_path)
    plain = _fit(data, dataclasses.replace(cfg, ema_decay=0.0), out_dir=tmp_path / "plain")
    assert not result.history["val_loss"].equals(plain.history["val_loss"])  # another model was validated
    saved, _ = load_checkpoint(tmp_path / "best.pt")
    for name, tensor in model.state_dict().items():  # what fit leaves in the model is what best.pt holds
        torch.testing.assert_close(tensor.cpu(), saved[name])
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(ema_decay=1.0)


def test_mixup_blends_training_batches_only(tiny, data, monkeypatch):
    seen = []
    real = train._make_mixup

    def spy(cfg, num_classes):
        mixer = real(cfg, num_classes)
        def mix(x, y):
            out, target = mixer(x, y)
            seen.append((len(x), target.shape, float(target.max())))
            return out, target
        return mix
    monkeypatch.setattr(train, "_make_mixup", spy)
    _fit(data, TrainConfig(epochs=1, batch_size=8, mixup_alpha=0.4, label_smoothing=0.1))
    assert seen and all(shape == (n, len(data.classes)) and top < 1 for n, shape, top in seen)  # soft targets
    with pytest.raises(ValueError, match="mixup_alpha and cutmix_alpha must be >= 0"):
        TrainConfig(mixup_alpha=-1)
