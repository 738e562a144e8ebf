"""Every network of the study behind one call: :func:`create_model`.

A small registry (like timm's) maps a name to a builder, the smallest input the built model accepts and
where its ImageNet weights live. Callers never special-case a model: training, prediction and the
figures only see an ``nn.Module`` with four attributes set here:

- ``model_name``: the registry name, saved in checkpoints;
- ``pretrained_source``: ``"imagenet"`` or ``"scratch"``, saved with the results;
- ``normalization``: ``{"mean": [...], "std": [...]}`` the input pipeline applies to [0, 1] images;
- ``min_size``: the smallest height or width the model accepts.

Weights are only ever looked for where they can be had quickly: first the local caches (the Hugging Face
hub cache for timm, ``torch.hub``'s for torchvision), then the network, and only if the download host
answers within a few seconds, so an offline machine falls back to training from scratch at once.
"""
from __future__ import annotations

import dataclasses
import io
import socket
import threading
import warnings
from contextlib import contextmanager, redirect_stderr
from typing import Callable
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_TIMEOUT = 3.0  # seconds to wait for a weights host before deciding we are offline


class PretrainedUnavailableError(RuntimeError):
    """ImageNet weights were required (``pretrained=True``) but could not be loaded."""


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


def _build_alexnet(num_classes: int, pretrained: bool) -> nn.Module:
    from torchvision.models import AlexNet_Weights

    model = SmallInputAlexNet(num_classes=1000 if pretrained else num_classes)
    if pretrained:
        model.load_state_dict(AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=True))
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
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

def create_model(name: str, num_classes: int, pretrained: bool | str = "auto") -> nn.Module:
    """Build ``name`` with a ``num_classes`` head.

    ``pretrained``: ``"auto"`` loads ImageNet weights when they can be had and otherwise warns and trains
    from scratch; ``True`` raises :class:`PretrainedUnavailableError` when they cannot; ``False`` never
    tries. The outcome is ``model.pretrained_source`` (``"imagenet"`` or ``"scratch"``).
    """
    spec = get_spec(name)
    if pretrained not in (True, False, "auto"):
        raise ValueError(f"pretrained must be True, False or 'auto', got {pretrained!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    model, source = None, "scratch"
    if pretrained:
        try:
            model, source = _build_pretrained(name, spec, num_classes), "imagenet"
        except PretrainedUnavailableError as error:
            if pretrained is True:
                raise
            warnings.warn(f"{error}. Training {name!r} from scratch (random initialisation) instead.",
                          stacklevel=2)
    if model is None:
        model = spec.build(num_classes, False)
    model.model_name = name
    model.pretrained_source = source
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
