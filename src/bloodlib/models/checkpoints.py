"""The checkpoint format: what a training run writes, and how it is read back and checked.

:func:`bloodlib.training.train.fit` writes two checkpoints into its ``out_dir``:

- ``best.pt``: the weights of the kept epoch (the best on validation, or a fixed schedule's last) and the
  metadata needed to use them (model, classes, image size, mode, normalisation, ...), written atomically
  whenever validation improves (or at the schedule's end), so it survives any interruption;
- ``last.pt``: everything needed to continue an interrupted run (``fit(..., resume=True)``): weights,
  optimizer, scheduler, random state and history, written after the first epoch and then at most every
  ``save_every`` seconds (weights plus AdamW's state are 12 bytes a parameter: 135 MB for resnet18, written
  after every 0.2-second epoch on a GPU would dominate the run). Once the run ends it is replaced by a small
  record without weights, so a finished run keeps one copy of its weights.

Every checkpoint holds tensors and plain values only and is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bloodlib.utils import fileio
from bloodlib.models.registry import build_model

CHECKPOINT_FORMAT = "bloodlib-checkpoint"
CHECKPOINT_VERSION = 1
BEST, LAST = "best.pt", "last.pt"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint, or one made for another model, class list or image size."""


def plain_values(value):
    """Metadata as JSON-able plain values (numpy scalars, paths, tuples...): what weights_only can read."""
    def default(obj):
        if isinstance(obj, (np.generic, torch.Tensor)) and np.ndim(obj) == 0:
            return obj.item()
        if isinstance(obj, (np.ndarray, torch.Tensor)):
            return obj.tolist()
        if isinstance(obj, (Path, torch.device, torch.dtype)):
            return str(obj)
        raise TypeError(f"checkpoint metadata cannot hold {type(obj).__name__}: {obj!r}")
    return json.loads(json.dumps(value, default=default))


def _atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file renamed into place: readers never see half a checkpoint."""
    with fileio.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | os.PathLike, model: nn.Module | None, metadata: dict, **extra) -> Path:
    """Write ``model``'s weights (CPU tensors), its metadata and ``extra`` entries atomically to ``path``."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if model is not None else None
    _atomic_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "state_dict": state,
                  "metadata": plain_values(metadata), **extra}, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The whole checkpoint dictionary, or :class:`CheckpointError` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save's format is a zip archive
        raise CheckpointError(f"{path} is not a checkpoint: not a file written by torch.save")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path} is refused: it holds Python objects other than tensors and plain values, "
                              f"which a checkpoint never does (loading them could run code): "
                              f"{str(error).splitlines()[-1][:200]}") from None
    except Exception as error:  # a damaged archive, a zip of something else, ...
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(error).__name__}: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a bloodlib checkpoint (no format marker)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {checkpoint.get('version')}, "
                              f"this bloodlib reads version {CHECKPOINT_VERSION}")
    return checkpoint


def check_metadata(path: str | os.PathLike, metadata: dict, *, model_name: str | None = None,
                   classes: list[str] | None = None, image_size: int | tuple[int, int] | None = None) -> None:
    """Refuse a checkpoint made for another model, class list or image size, naming the file and the field."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    expected = {"model": model_name, "classes": list(classes) if classes is not None else None,
                "image_size": list(image_size) if image_size is not None else None}
    for key, want in expected.items():
        if want is not None and metadata.get(key) != want:
            raise CheckpointError(f"{path} was made for {key} {metadata.get(key)!r}, expected {want!r}")


def load_checkpoint(path: str | os.PathLike, *, model_name: str | None = None, classes: list[str] | None = None,
                    image_size: int | tuple[int, int] | None = None) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a checkpoint, refused if it does not match what is expected."""
    checkpoint = read_checkpoint(path)
    metadata = checkpoint["metadata"]
    if checkpoint["state_dict"] is None:
        raise CheckpointError(f"{path} holds no weights (a finished run's last.pt): use best.pt")
    check_metadata(path, metadata, model_name=model_name, classes=classes, image_size=image_size)
    metadata["image_size"] = tuple(metadata["image_size"])
    return checkpoint["state_dict"], metadata


def load_model(path: str | os.PathLike, *, device: torch.device | str | None = None, build_kwargs: dict | None = None,
               **expect) -> nn.Module:
    """The model of a checkpoint (:func:`~bloodlib.models.registry.build_model`, then its weights), in eval mode.

    ``expect`` (model_name, classes, image_size) refuses checkpoints made for something else; ``build_kwargs``
    (dropout, drop-path) go to the builder: they change no weight, only how the network trains on. The metadata
    is kept on the model as ``model.checkpoint_metadata``.
    """
    state_dict, metadata = load_checkpoint(path, **expect)
    if "model" not in metadata or "classes" not in metadata:
        raise CheckpointError(f"{path} does not say which model and classes it holds")
    model = build_model(metadata["model"], len(metadata["classes"]), **(build_kwargs or {}))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: its weights do not fit {metadata['model']!r}: {error}") from None
    model.pretrained_source = metadata.get("pretrained_source", "scratch")
    model.initial_weights = metadata.get("initial_weights", {"kind": model.pretrained_source})
    model.normalization = metadata.get("normalization", model.normalization)
    model.checkpoint_metadata = metadata
    return model.to(device or "cpu").eval()
