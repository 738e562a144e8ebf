"""The checkpoint format: files that are not checkpoints, or were made for something else, are refused by name."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from bloodlib.models.checkpoints import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, load_model, save_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint of a 'tiny' model for four classes at 16 x 16 px (the metadata is what is checked)."""
    metadata = {"model": "tiny", "classes": [f"CLASS_{k}" for k in range(4)], "image_size": [16, 16]}
    return save_checkpoint(tmp_path / "run" / "best.pt", nn.Linear(3, 4), metadata)


@pytest.mark.parametrize("expect, message", [
    (dict(model_name="resnet18"), "made for model 'tiny', expected 'resnet18'"),
    (dict(classes=["A", "B", "C", "D"]), "made for classes"),
    (dict(image_size=32), r"made for image_size \[16, 16\], expected \[32, 32\]"),
])
def test_checkpoint_for_something_else_is_refused(checkpoint, expect, message):
    with pytest.raises(CheckpointError, match=message) as error:
        load_model(checkpoint, **expect)
    assert str(checkpoint) in str(error.value)


class Payload:
    """Stands for any pickled object: a checkpoint must never make torch.load build one."""


@pytest.mark.parametrize("kind, write, message", [
    ("random bytes", lambda p: p.write_bytes(np.random.default_rng(0).bytes(2000)), "not a file written by torch.save"),
    ("JSON", lambda p: p.write_text(json.dumps({"state_dict": {}})), "not a file written by torch.save"),
    ("empty", lambda p: p.write_bytes(b""), "not a file written by torch.save"),
    ("pickled object", lambda p: torch.save({"format": CHECKPOINT_FORMAT, "x": Payload()}, p),
     "refused: it holds Python objects"),
    ("other torch file", lambda p: torch.save({"weights": torch.zeros(2)}, p), "not a bloodlib checkpoint"),
])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, kind, write, message):
    path = tmp_path / "model.pt"
    write(path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_model(tmp_path / "nothing.pt")
