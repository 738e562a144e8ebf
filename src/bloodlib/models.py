"""Every network of the study behind one call: :func:`create_model`.

A small registry (like timm's) maps a name to a builder, the smallest input the built model accepts and
where its ImageNet weights live. Callers never special-case a model: training, prediction and the
figures only see an ``nn.Module`` with these attributes set here:

- ``model_name``: the registry name, saved in checkpoints;
- ``pretrained_source``: where the initial weights came from, in a few words (``"imagenet"``, ``"scratch"``,
  ``"pretrained on pbc"``), saved with the results;
- ``initial_weights``: the same as a record (``kind``: scratch, imagenet or checkpoint; for a checkpoint its
  path, dataset, data checksum, model, image size, mode, classes and recipe, and for a backbone of
  :mod:`bloodlib.backbones` its key and its scores on its dataset's test part), saved in checkpoints and metrics;
- ``normalization``: ``{"mean": [...], "std": [...]}`` the input pipeline applies to [0, 1] images;
- ``min_size``: the smallest height or width the model accepts.

``pretrained`` picks the initial weights: ``"scratch"``, ``"imagenet"``, ``"auto"`` (ImageNet when it can
be had, else scratch with a warning) or the path of a checkpoint of this study (``best.pt``), whose backbone
is loaded under a new head. A named source such as ``"pbc"`` (this study's backbone trained on PBC) is turned
into such a path by :func:`bloodlib.backbones.backbone`, which needs the run's settings.

ImageNet weights are only ever looked for where they can be had quickly: first the local caches (the Hugging Face
hub cache for timm, ``torch.hub``'s for torchvision), then the network, and only if the download host
answers within a few seconds, so an offline machine falls back to training from scratch at once.
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
from typing import Callable
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_TIMEOUT = 3.0  # seconds to wait for a weights host before deciding we are offline
PRETRAINED_KINDS = ("scratch", "imagenet", "auto")  # besides a checkpoint path


class PretrainedUnavailableError(RuntimeError):
    """ImageNet weights were required (``pretrained="imagenet"``) but could not be loaded."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registry entry: how to build the network and what it needs."""
    build: Callable[[int, bool], nn.Module]  # (num_classes, pretrained) -> model
    min_size: int  # smallest input height/width the built model accepts
    weights_host: str  # where ImageNet weights are downloaded from (probed before trying)
    note: str = ""


# --------------------------------------------------------------------------------------------- builders

def _timm_builder(arch: str) -> Callable[[int, bool], nn.Module]:
    def build(num_classes: int, pretrained: bool) -> nn.Module:
        import timm

        model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        model.normalization = {"mean": list(cfg.get("mean", IMAGENET_MEAN)), "std": list(cfg.get("std", IMAGENET_STD))}
        return model
    return build


class SmallInputAlexNet(nn.Module):
    """torchvision's AlexNet that also accepts inputs below 63 px.

    Its three stride-2 max-pools fail on inputs smaller than 63 px (the feature map shrinks to nothing).
    Smaller inputs are enlarged (bilinear) so that their short side is 63 px before the first layer;
    inputs of 63 px or more are untouched, so the parameters and the ImageNet weights are torchvision's own.
    """
    native_min_size = 63

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        from torchvision.models import AlexNet

        net = AlexNet(num_classes=num_classes, dropout=dropout)
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier

    def enlarge(self, x: torch.Tensor) -> torch.Tensor:
        short = min(x.shape[-2:])
        if short >= self.native_min_size:
            return x
        scale = self.native_min_size / short
        size = (max(self.native_min_size, round(x.shape[-2] * scale)), max(self.native_min_size, round(x.shape[-1] * scale)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.enlarge(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)

    # the head as timm models expose theirs, so that fine-tuning and the optimizer treat every model alike
    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier[-1] = nn.Linear(self.classifier[-1].in_features, num_classes)


def _build_alexnet(num_classes: int, pretrained: bool) -> nn.Module:
    from torchvision.models import AlexNet_Weights

    model = SmallInputAlexNet(num_classes=1000 if pretrained else num_classes)
    if pretrained:
        model.load_state_dict(AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=True))
        model.reset_classifier(num_classes)
    model.normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return model


_HF = "https://huggingface.co"
_TORCH = "https://download.pytorch.org"
REGISTRY: dict[str, ModelSpec] = {
    "resnet18": ModelSpec(_timm_builder("resnet18"), 16, _HF),
    "resnet50": ModelSpec(_timm_builder("resnet50"), 16, _HF),
    # from scratch it learns slowly at lr 1e-3: 4-fold macro-F1 0.44 -> 0.61 at 3e-3 (96 px, 30 epochs, BCCD crops)
    "efficientnet_b0": ModelSpec(_timm_builder("efficientnet_b0"), 16, _HF),
    # timm has no AlexNet: torchvision's, adapted to run below its native 63 px (see SmallInputAlexNet)
    "alexnet": ModelSpec(_build_alexnet, 16, _TORCH, note="inputs below 63 px are enlarged to 63 px"),
}


def list_models() -> list[str]:
    """The names :func:`create_model` accepts."""
    return sorted(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``, or a clear error listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: expected one of {list_models()}") from None


def check_input_size(name: str, image_size: int | tuple[int, int]) -> None:
    """Refuse, naming the model and the size, an input smaller than the model accepts."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    spec = get_spec(name)
    if min(h, w) < spec.min_size:
        raise ValueError(f"model {name!r} needs inputs of at least {spec.min_size} px, got {h}x{w}")


# ------------------------------------------------------------------------------------- pretrained weights

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


def _build_pretrained(name: str, spec: ModelSpec, num_classes: int) -> nn.Module:
    """Build with ImageNet weights from a local cache, else from the network if its host answers."""
    errors = []
    try:  # torch.hub announces on stderr a download it will not make: keep that quiet
        with _local_caches_only(), redirect_stderr(io.StringIO()):
            return spec.build(num_classes, True)
    except Exception as error:  # whatever the library raises for "not cached"
        errors.append(f"not in the local cache ({type(error).__name__})")
    if not _host_answers(spec.weights_host):
        errors.append(f"{spec.weights_host} cannot be reached (offline?)")
    else:
        try:
            return spec.build(num_classes, True)
        except Exception as error:  # any download or format failure: report it
            errors.append(f"download failed: {type(error).__name__}: {error}")
    raise PretrainedUnavailableError(f"ImageNet weights for {name!r} are unavailable: " + "; ".join(errors))


# ------------------------------------------------------------------------------------------ entry point

def checkpoint_path(pretrained: str | os.PathLike) -> Path | None:
    """``pretrained`` as a checkpoint path (a path object or a name ending in ``.pt``), else None: by its form
    alone, so that a file named like a keyword or a source (``auto``, ``pbc``) never changes what it means."""
    if isinstance(pretrained, os.PathLike) or isinstance(pretrained, str) and pretrained.endswith(".pt"):
        return Path(pretrained)
    return None


def _from_checkpoint(name: str, spec: ModelSpec, num_classes: int, path: Path,
                     image_size: int | tuple[int, int]) -> tuple[nn.Module, dict]:
    """The checkpoint's network with a new ``num_classes`` head, and the record of where it came from.

    Refused (:class:`~bloodlib.checkpoints.CheckpointError`, naming the file): a checkpoint of another model
    or image size, or one without weights (a finished run's ``last.pt``)."""
    from . import checkpoints  # it builds models with create_model: imported here, not at the top

    state_dict, metadata = checkpoints.load_checkpoint(path, model_name=name, image_size=image_size)
    if not metadata.get("classes"):
        raise checkpoints.CheckpointError(f"{path} does not say which classes its head was trained on")
    model = spec.build(len(metadata["classes"]), False)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise checkpoints.CheckpointError(f"{path}: its weights do not fit {name!r}: {error}") from None
    if not hasattr(model, "reset_classifier"):
        raise TypeError(f"{name!r} has no reset_classifier(num_classes): its head cannot be replaced")
    model.reset_classifier(num_classes)  # the backbone is kept, the head starts afresh for the new classes
    model.normalization = metadata.get("normalization", model.normalization)  # what the backbone learnt with
    record = {"kind": "checkpoint", "path": str(path.resolve()), "dataset": metadata.get("dataset"),
              "data_checksum": metadata.get("data_checksum"), "model": metadata["model"],
              "image_size": list(metadata["image_size"]), "mode": metadata.get("mode"),
              "classes": metadata["classes"], "recipe": metadata.get("train_config"),
              "backbone": metadata.get("backbone"), "test_metrics": metadata.get("test_metrics")}
    return model, record


def describe_initial_weights(record: dict) -> str:
    """The few words ``model.pretrained_source`` holds for a record of ``initial_weights``."""
    if record["kind"] != "checkpoint":
        return record["kind"]
    return f"pretrained on {record['dataset']}" if record.get("dataset") else f"pretrained: {record['path']}"


def create_model(name: str, num_classes: int, pretrained: str | os.PathLike = "auto", *,
                 image_size: int | tuple[int, int] | None = None) -> nn.Module:
    """Build ``name`` with a ``num_classes`` head.

    ``pretrained``: ``"scratch"`` never looks for weights; ``"imagenet"`` raises
    :class:`PretrainedUnavailableError` when ImageNet weights cannot be had; ``"auto"`` then warns and trains
    from scratch; a checkpoint path (``best.pt`` of this study) loads its backbone under a new head, and needs
    ``image_size`` (what the model will be trained at) to refuse a checkpoint made at another size. The outcome
    is ``model.pretrained_source`` (a few words) and ``model.initial_weights`` (a record, see the module).
    """
    spec = get_spec(name)
    path = checkpoint_path(pretrained)
    if path is None and pretrained not in PRETRAINED_KINDS:  # True/False too: the strings say what they do
        hint = (" (a named source such as 'pbc' is built by bloodlib.backbones.backbone(settings, name, source), "
                "which experiment.run_model calls)" if isinstance(pretrained, str) else "")
        raise ValueError(f"pretrained must be one of {PRETRAINED_KINDS} or a checkpoint path (best.pt), "
                         f"got {pretrained!r}{hint}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    model, record = None, {"kind": "scratch"}
    if path is not None:
        if image_size is None:
            raise ValueError(f"pretrained={str(path)!r}: pass image_size (what {name!r} will be trained at), "
                             f"so that a checkpoint made at another size is refused")
        model, record = _from_checkpoint(name, spec, num_classes, path, image_size)
    elif pretrained in ("imagenet", "auto"):
        # a failed attempt has already drawn one random initialisation: the fallback draws the same weights as
        # pretrained="scratch" at the same seed, so that a run does not depend on whether weights were tried
        rng = torch.random.get_rng_state()
        try:
            model, record = _build_pretrained(name, spec, num_classes), {"kind": "imagenet"}
        except PretrainedUnavailableError as error:
            if pretrained == "imagenet":
                raise
            warnings.warn(f"{error}. Training {name!r} from scratch (random initialisation) instead.",
                          stacklevel=2)
            torch.random.set_rng_state(rng)
    if model is None:
        model = spec.build(num_classes, False)
    model.model_name = name
    model.initial_weights = record
    model.pretrained_source = describe_initial_weights(record)
    model.min_size = spec.min_size
    return model


# ------------------------------------------------------------------------------------------------ sizes

def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, image_size: int | tuple[int, int]) -> int:
    """Floating-point operations of one forward pass on one image (a multiply-add counts as 2).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a zero image, in eval mode, on the
    model's own device; the model's train/eval mode is restored afterwards.
    """
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, h, w, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
