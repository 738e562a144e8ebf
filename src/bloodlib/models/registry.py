"""Every network of the study by name: a small registry (like timm's) of builders.

Each entry says how to build the network, the smallest input it accepts and where its ImageNet weights live.
:func:`build_model` makes one with random weights; :func:`bloodlib.models.create_model` (the entry point every
caller uses) adds the initial weights. Callers never special-case a model: training, prediction and the figures
only see an ``nn.Module`` with these attributes:

- ``model_name``: the registry name, saved in checkpoints;
- ``normalization``: ``{"mean": [...], "std": [...]}`` the input pipeline applies to [0, 1] images;
- ``min_size``: the smallest height or width the model accepts;
- ``pretrained_source`` and ``initial_weights``: where its initial weights came from (set by ``create_model``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registry entry: how to build the network, what it needs, and what its training notebook says of it
    (``title``, ``description``, ``citation``: the only text that differs between notebooks 04-06, filled into
    ``notebooks/templates/training.py`` by :mod:`bloodlib.pipeline.notebooks`)."""
    build: Callable[..., nn.Module]  # (num_classes, pretrained, **regularisation) -> model
    min_size: int  # smallest input height/width the built model accepts
    weights_host: str  # where ImageNet weights are downloaded from (probed before trying); "": there are none
    note: str = ""
    title: str = ""  # the notebook's heading: "ResNet-18"
    description: str = ""  # the architecture in a sentence or two (Markdown, one line: the notebook wraps it)
    citation: str = ""  # the paper that introduced it (Markdown)


# --------------------------------------------------------------------------------------------- builders

def _timm_builder(arch: str, **layers) -> Callable[..., nn.Module]:
    """A builder of timm's ``arch``; ``layers`` (timm's own arguments, such as ``norm_layer``) make a variant."""
    def build(num_classes: int, pretrained: bool, **kwargs) -> nn.Module:
        import timm

        # drop_rate, drop_path_rate: timm's own arguments
        model = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, **layers, **kwargs)
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


def _build_alexnet(num_classes: int, pretrained: bool, drop_rate: float = 0.5) -> nn.Module:
    """AlexNet; ``drop_rate``: its two dropout layers' (torchvision's 0.5 by default). It has no stochastic depth."""
    from torchvision.models import AlexNet_Weights

    model = SmallInputAlexNet(num_classes=1000 if pretrained else num_classes, dropout=drop_rate)
    if pretrained:
        model.load_state_dict(AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=True))
        model.reset_classifier(num_classes)
    model.normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return model


_HF = "https://huggingface.co"
_TORCH = "https://download.pytorch.org"
_RESNET = ("He, Zhang, Ren and Sun, *Deep Residual Learning for Image Recognition*, CVPR 2016 "
           "([arXiv:1512.03385](https://arxiv.org/abs/1512.03385))")
REGISTRY: dict[str, ModelSpec] = {
    "resnet18": ModelSpec(
        _timm_builder("resnet18"), 16, _HF, title="ResNet-18", citation=_RESNET,
        description="A residual network: 11 million parameters in four stages of 3x3 convolutions with skip "
                    "connections. The workhorse baseline of image classification; here through `timm`."),
    # GroupNorm normalises each image by itself: no statistics of the training labs' batches are kept for use on
    # another lab's (Wu and He 2018; for white cells across labs, Tsutsui, Su and Wen, ICASSP 2023). ImageNet's
    # weights are BatchNorm's, so this variant has none.
    "resnet18_gn": ModelSpec(
        _timm_builder("resnet18", norm_layer="groupnorm"), 16, "", title="ResNet-18 with GroupNorm",
        citation=_RESNET + "; Wu and He, *Group Normalization*, ECCV 2018 "
                           "([arXiv:1803.08494](https://arxiv.org/abs/1803.08494))",
        description="ResNet-18 with every BatchNorm replaced by GroupNorm (32 groups): each image is normalised "
                    "by its own statistics, not by those of the training batches; through `timm`, from scratch "
                    "only (ImageNet's weights are BatchNorm's)."),
    "resnet50": ModelSpec(
        _timm_builder("resnet50"), 16, _HF, title="ResNet-50", citation=_RESNET,
        description="A deeper residual network: 24 million parameters in four stages of bottleneck blocks "
                    "(1x1, 3x3 and 1x1 convolutions) with skip connections; here through `timm`."),
    "efficientnet_b0": ModelSpec(
        _timm_builder("efficientnet_b0"), 16, _HF, title="EfficientNet-B0",
        description="A network scaled for accuracy per FLOP: 4 million parameters of mobile inverted "
                    "bottlenecks with squeeze-and-excitation; through `timm`.",
        citation="Tan and Le, *EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks*, "
                 "ICML 2019 ([arXiv:1905.11946](https://arxiv.org/abs/1905.11946))"),
    # timm has no AlexNet: torchvision's, adapted to run below its native 63 px (see SmallInputAlexNet)
    "alexnet": ModelSpec(
        _build_alexnet, 16, _TORCH, note="inputs below 63 px are enlarged to 63 px", title="AlexNet",
        description="Five large convolutions and three dense layers, 57 million parameters: the network the "
                    "seed study started from; through `torchvision` (timm has none), with inputs below its "
                    "native 63 px enlarged to 63 px.",
        citation="Krizhevsky, Sutskever and Hinton, *ImageNet Classification with Deep Convolutional Neural "
                 "Networks*, NIPS 2012, pp. 1097-1105"),
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


def build_model(name: str, num_classes: int, imagenet: bool = False, **kwargs) -> nn.Module:
    """``name`` with a ``num_classes`` head: random weights, or ImageNet's (downloaded by the builder) when
    ``imagenet``; ``model_name`` and ``min_size`` set. ``kwargs``: the builder's regularisation (``drop_rate``,
    ``drop_path_rate`` where the model has it), refused by name where it has not."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    spec = get_spec(name)
    try:
        model = spec.build(num_classes, imagenet, **kwargs)
    except TypeError as error:
        if not kwargs:
            raise
        raise ValueError(f"model {name!r} does not take {sorted(kwargs)}: {error}") from None
    model.model_name = name
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
