"""Parameters: profile defaults, a dataset's own defaults, explicit values over both."""
from __future__ import annotations

import pytest

from bloodlib import config


def test_profile_then_dataset_defaults_then_explicit_values(tmp_path):
    bccd = config.resolve("full", output_dir=tmp_path)
    assert (bccd.dataset, bccd.mode, bccd.epochs) == ("bccd", "crop", config.PROFILES["full"]["epochs"])
    kaggle = config.resolve("full", output_dir=tmp_path, dataset="kaggle-augmented", mode=None)
    for name, value in config.DATASET_DEFAULTS[("full", "kaggle-augmented")].items():
        assert getattr(kaggle, name) == value, name
    chosen = config.resolve("full", output_dir=tmp_path, dataset="kaggle-augmented", mode="full", epochs=3)
    assert (chosen.mode, chosen.epochs) == ("full", 3)  # what the user sets wins
    folder = config.resolve("smoke", output_dir=tmp_path, dataset=f"folder:{tmp_path}")
    assert folder.epochs == config.PROFILES["smoke"]["epochs"]


def test_bad_values_are_refused_early(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        config.resolve("fast", output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epoch'\]"):
        config.resolve("full", output_dir=tmp_path, epoch=3)
    with pytest.raises(ValueError, match="mode must be 'crop' or 'full'"):
        config.resolve("full", output_dir=tmp_path, mode="whole")
