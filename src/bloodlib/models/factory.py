"""The one entry point for a network and its initial weights: :func:`create_model`.

``pretrained`` says where the initial weights come from, and is read once, by :meth:`InitialWeights.parse`:

- ``"scratch"``: random weights (the study's arms train from scratch, or from a backbone this study made);
- ``"imagenet"``: ImageNet's weights, or :class:`PretrainedUnavailableError`;
- ``"auto"``: ImageNet's weights when they can be had, else random weights with a warning;
- a checkpoint of this study (a path object, or a name ending in ``.pt``): its backbone under a new head;
- a dataset name (``"pbc"``): this study's model trained on that dataset. Only the study layer can make such a
  backbone (:func:`bloodlib.study.backbones.backbone` turns it into a checkpoint), so ``create_model`` refuses it.

The outcome is ``model.pretrained_source`` (a few words: ``"scratch"``, ``"imagenet"``, ``"pretrained on pbc"``)
and ``model.initial_weights`` (a record: ``kind``, and for a checkpoint its path, dataset, data checksum, model,
image size, mode, classes, recipe and, for a backbone, its key and its scores on its dataset's test part), both
saved in checkpoints and metrics.

ImageNet weights are only looked for where they can be had quickly: the local caches first (the Hugging Face hub
cache for timm, ``torch.hub``'s for torchvision), then the network, only if the download host answers within a few
seconds, so that an offline machine falls back at once.
"""
from __future__ import annotations

import dataclasses
import io
import os
import socket
import threading
import warnings
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from bloodlib import config
from bloodlib.models import checkpoints
from bloodlib.models.registry import ModelSpec, build_model, get_spec
from bloodlib.utils import paths

PROBE_TIMEOUT = 3.0  # seconds to wait for a weights host before deciding we are offline
KEYWORDS = ("scratch", "imagenet", "auto")  # besides a checkpoint path and a dataset name


class PretrainedUnavailableError(RuntimeError):
    """ImageNet weights were required (``pretrained="imagenet"``) but could not be loaded."""


@dataclasses.dataclass(frozen=True)
class InitialWeights:
    """What a ``pretrained`` value means: ``kind`` is one of :data:`KEYWORDS`, ``"checkpoint"`` (``path``) or
    ``"dataset"`` (``dataset``: a backbone still to be made by the study layer)."""
    kind: str
    path: Path | None = None
    dataset: str | None = None

    @classmethod
    def parse(cls, value: "str | os.PathLike | InitialWeights") -> "InitialWeights":
        """Read a notebook's or a caller's ``pretrained`` once. A checkpoint is known by its form alone (a path
        object or a name ending in ``.pt``), so a file named like a keyword or a dataset never changes meaning;
        True/False are refused: the strings say what they do."""
        if isinstance(value, InitialWeights):
            return value
        if isinstance(value, os.PathLike) or isinstance(value, str) and value.endswith(".pt"):
            return cls("checkpoint", path=Path(value))
        if isinstance(value, str) and value in KEYWORDS:
            return cls(value)
        if isinstance(value, str) and value.strip():
            return cls("dataset", dataset=value)
        raise ValueError(f"pretrained must be one of {KEYWORDS}, a checkpoint path (best.pt) or a dataset name "
                         f"such as 'pbc', got {value!r}")


def create_model(name: str, num_classes: int, pretrained: "str | os.PathLike | InitialWeights" = "scratch", *,
                 image_size: int | tuple[int, int] | None = None, **kwargs) -> nn.Module:
    """Build ``name`` with a ``num_classes`` head and the initial weights ``pretrained`` names (see the module).

    A checkpoint needs ``image_size`` (what the model will be trained at), so that one made at another size is
    refused; a dataset name is refused with where its backbone is made. ``kwargs`` (``drop_rate``,
    ``drop_path_rate``) go to the model's builder, as timm's ``create_model`` passes them on.
    """
    weights = InitialWeights.parse(pretrained)
    spec = get_spec(name)
    if weights.kind == "dataset":
        raise ValueError(f"pretrained={weights.dataset!r}: a backbone trained on a dataset is made by "
                         f"bloodlib.study.backbones.backbone(settings, name, source), which "
                         f"bloodlib.study.experiment.run_model calls; pass its checkpoint here")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    model, record = None, {"kind": "scratch"}
    if weights.kind == "checkpoint":
        if image_size is None:
            raise ValueError(f"pretrained={str(weights.path)!r}: pass image_size (what {name!r} will be trained "
                             f"at), so that a checkpoint made at another size is refused")
        model, record = _from_checkpoint(name, num_classes, weights.path, image_size, kwargs)
    elif weights.kind in ("imagenet", "auto"):
        # a failed attempt has already drawn one random initialisation: the fallback draws the same weights as
        # pretrained="scratch" at the same seed, so that a run does not depend on whether weights were tried
        rng = torch.random.get_rng_state()
        try:
            model, record = _imagenet(name, spec, num_classes, kwargs), {"kind": "imagenet"}
        except PretrainedUnavailableError as error:
            if weights.kind == "imagenet":
                raise
            warnings.warn(f"{error}. Training {name!r} from scratch (random initialisation) instead.", stacklevel=2)
            torch.random.set_rng_state(rng)
    if model is None:
        model = build_model(name, num_classes, **kwargs)
    model.initial_weights = record
    model.pretrained_source = describe_initial_weights(record)
    return model


def describe_initial_weights(record: dict) -> str:
    """The few words ``model.pretrained_source`` holds for a record of ``initial_weights``."""
    if record["kind"] != "checkpoint":
        return record["kind"]
    return f"pretrained on {record['dataset']}" if record.get("dataset") else f"pretrained: {record['path']}"


# ------------------------------------------------------------------------------------------- a checkpoint
def _from_checkpoint(name: str, num_classes: int, path: Path, image_size: int | tuple[int, int],
                     build_kwargs: dict) -> tuple[nn.Module, dict]:
    """The checkpoint's network with a new ``num_classes`` head, and the record of where it came from.

    Refused (:class:`~bloodlib.models.checkpoints.CheckpointError`, naming the file): a checkpoint of another
    model or image size, or one without weights (a finished run's ``last.pt``)."""
    model = checkpoints.load_model(path, model_name=name, image_size=image_size, build_kwargs=build_kwargs)
    metadata = model.checkpoint_metadata
    if not hasattr(model, "reset_classifier"):
        raise TypeError(f"{name!r} has no reset_classifier(num_classes): its head cannot be replaced")
    model.reset_classifier(num_classes)  # the backbone is kept, the head starts afresh for the new classes
    model.train()
    del model.checkpoint_metadata
    # the record travels in metrics.json and the report: the path as the checkout names it, not this machine
    record = {"kind": "checkpoint", "path": paths.portable(path.resolve(), config.project_root()),
              "dataset": metadata.get("dataset"), "data_checksum": metadata.get("data_checksum"),
              "model": metadata["model"],
              "image_size": list(metadata["image_size"]), "mode": metadata.get("mode"),
              "classes": metadata["classes"], "recipe": metadata.get("train_config"),
              "backbone": metadata.get("backbone"), "test_metrics": metadata.get("test_metrics")}
    return model, record


# ---------------------------------------------------------------------------------------- ImageNet weights
def _host_answers(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``url``'s host (or the proxy for it) accepts a TCP connection within ``timeout`` seconds.

    Name resolution cannot be given a timeout, so it runs in a daemon thread that we stop waiting for.
    """
    from urllib.request import getproxies

    parsed = urlparse(url)
    proxy = getproxies().get(parsed.scheme)
    parsed = urlparse(proxy) if proxy else parsed  # behind a proxy, the proxy is what must answer
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    answered = []

    def probe():
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answered)


@contextmanager
def _local_caches_only():
    """Let timm (huggingface_hub) and torchvision (torch.hub) read their local caches but download nothing.

    huggingface_hub reads HF_HUB_OFFLINE once, at import, so its module constant is switched instead;
    torch.hub only downloads through ``download_url_to_file``, which is made to fail.
    """
    import huggingface_hub.constants as hf_constants

    def no_download(url, *args, **kwargs):
        raise OSError(f"{url} is not in the torch.hub cache ({torch.hub.get_dir()})")

    saved = hf_constants.HF_HUB_OFFLINE, torch.hub.download_url_to_file
    hf_constants.HF_HUB_OFFLINE, torch.hub.download_url_to_file = True, no_download
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE, torch.hub.download_url_to_file = saved


def _imagenet(name: str, spec: ModelSpec, num_classes: int, build_kwargs: dict) -> nn.Module:
    """Build with ImageNet weights from a local cache, else from the network if its host answers."""
    if not spec.weights_host:
        raise PretrainedUnavailableError(f"{name!r} has no ImageNet weights (its registry entry names none)")
    errors = []
    try:  # torch.hub announces on stderr a download it will not make: keep that quiet
        with _local_caches_only(), redirect_stderr(io.StringIO()):
            return build_model(name, num_classes, imagenet=True, **build_kwargs)
    except Exception as error:  # whatever the library raises for "not cached"
        errors.append(f"not in the local cache ({type(error).__name__})")
    if not _host_answers(spec.weights_host):
        errors.append(f"{spec.weights_host} cannot be reached (offline?)")
    else:
        try:
            return build_model(name, num_classes, imagenet=True, **build_kwargs)
        except Exception as error:  # any download or format failure: report it
            errors.append(f"download failed: {type(error).__name__}: {error}")
    raise PretrainedUnavailableError(f"ImageNet weights for {name!r} are unavailable: " + "; ".join(errors))
