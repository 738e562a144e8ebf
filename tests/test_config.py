"""Parameters: profile defaults, a dataset's own defaults, explicit values over both."""
from __future__ import annotations

import pytest

from bloodlib import config


def test_profile_then_dataset_then_model_recipe_then_the_caller(tmp_path):
    bccd = config.resolve("full", output_dir=tmp_path)
    assert (bccd.dataset, bccd.mode, bccd.train.epochs) == ("bccd", "crop", config.PROFILES["full"]["epochs"])
    assert bccd.train.lr == config.TrainConfig.lr  # the base recipe where no layer sets it
    kaggle = config.resolve("full", output_dir=tmp_path, dataset="kaggle-augmented", mode=None)
    for name, value in config.DATASET_DEFAULTS[("full", "kaggle-augmented")].items():
        assert getattr(kaggle.train if name in config.TRAIN_FIELDS else kaggle, name) == value, name
    # BCCD's ~40 validation images a fold do not choose the epoch; kaggle-augmented's 1.5k do
    assert (bccd.train.keep_epoch, kaggle.train.keep_epoch) == ("last", "best")
    chosen = config.resolve("full", output_dir=tmp_path, dataset="kaggle-augmented", mode="full", epochs=3)
    assert (chosen.mode, chosen.train.epochs) == ("full", 3)  # what the user sets wins
    folder = config.resolve("smoke", output_dir=tmp_path, dataset=f"folder:{tmp_path}")
    assert folder.train.epochs == config.PROFILES["smoke"]["epochs"]
    effnet = config.resolve("smoke", output_dir=tmp_path, model="efficientnet_b0", seed=7)
    recipe = config.MODEL_RECIPES[("bccd", "efficientnet_b0")]
    for name, value in recipe.items():  # the model's recipe, over the profile's epochs and under the caller's seed
        assert getattr(effnet.train, name) == value, name
    assert (effnet.train.epochs, effnet.train.seed) == (2, 7)
    assert config.resolve("smoke", output_dir=tmp_path, model="efficientnet_b0", lr=1e-4).train.lr == 1e-4
    resnet = effnet.for_model("resnet18")
    assert resnet.train.lr == config.MODEL_RECIPES.get(("bccd", "resnet18"), {}).get("lr", config.TrainConfig.lr)


def test_every_recipe_field_is_a_notebook_parameter(tmp_path):
    """A training notebook's parameters cell, as papermill or -p fills it, reaches the recipe."""
    cell = {name: None for name in config.PARAMETERS}
    cell.update(profile="smoke", output_dir=str(tmp_path), model_name="resnet18", lr=3e-4, label_smoothing=0.0,
                augment=False, folds=3, unrelated=1)
    settings = config.resolve(**config.notebook_parameters(cell))
    assert (settings.model, settings.folds) == ("resnet18", 3)
    assert (settings.train.lr, settings.train.label_smoothing, settings.train.augment) == (3e-4, 0.0, False)
    assert set(config.TRAIN_FIELDS) == {f for f in config.TrainConfig.__dataclass_fields__} - {"seed"}


def test_bad_values_are_refused_early(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        config.resolve("fast", output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epoch'\]"):
        config.resolve("full", output_dir=tmp_path, epoch=3)
    with pytest.raises(ValueError, match="mode must be 'crop' or 'full'"):
        config.resolve("full", output_dir=tmp_path, mode="whole")


def test_cache_dir_follows_the_environment_then_the_checkout(monkeypatch, tmp_path, isolated_cache):
    assert config.cache_dir() == isolated_cache  # tests never write into the checkout's data/
    monkeypatch.setenv(config.ENV_CACHE, str(tmp_path))
    assert config.cache_dir() == tmp_path
    monkeypatch.delenv(config.ENV_CACHE)
    assert config.cache_dir() == config.project_root() / "data"
