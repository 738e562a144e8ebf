"""Grad-CAM: where in the image did the model look when it chose a class?

Built on the ``grad-cam`` package (``pytorch_grad_cam``). The only model-specific piece is the layer whose
activations are weighted: :func:`target_layer` finds it with one generic rule (the last convolution, widened
to the whole residual block that holds it), which gives the usual choice for every model of the registry:
timm resnet18/resnet50 ``layer4[-1]``, timm efficientnet_b0 ``conv_head``, torchvision alexnet ``features[10]``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from bloodlib.models import IMAGENET_MEAN, IMAGENET_STD

Normalize = Callable[[torch.Tensor], torch.Tensor]


def normalizer(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Normalize:
    """``uint8 N x 3 x H x W -> (x / 255 - mean) / std``: the training pipeline's normalisation."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def normalize(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - mean_t.to(images.device)) / std_t.to(images.device)

    return normalize


def target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM weights: the last ``nn.Conv2d``, or the block holding it inside a stage.

    Rule: take the last Conv2d in ``model.modules()``; if it sits inside an ``nn.Sequential`` stage, use the
    stage's child that holds it (a residual block's output includes the skip path and the activation; a
    plain convolution in a Sequential, as in alexnet's ``features``, is its own child and stays as it is).
    """
    names = dict(model.named_modules())
    convs = [name for name, module in names.items() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer: Grad-CAM needs a convolutional model")
    conv = convs[-1]
    parts = conv.split(".")
    for depth in range(len(parts) - 1, 0, -1):  # deepest Sequential ancestor first
        if isinstance(names[".".join(parts[:depth])], nn.Sequential):
            return names[".".join(parts[:depth + 1])]
    return names[conv]


def _as_batch(images, device: torch.device, normalize: Normalize | tuple | None) -> torch.Tensor:
    """uint8 N x 3 x H x W (torch or numpy) -> the model's float input on ``device``."""
    batch = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"images must be uint8 N x 3 x H x W, got {batch.dtype} {tuple(batch.shape)}")
    if normalize is None:
        normalize = normalizer()
    elif isinstance(normalize, tuple):
        normalize = normalizer(*normalize)
    return normalize(batch.to(device)).float()


def gradcam(model: nn.Module, images, *, normalize: Normalize | tuple | None = None, targets=None,
            device: torch.device | str | None = None, layer: nn.Module | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (N x H x W floats in [0, 1]) and the softmax probabilities (N x classes).

    ``targets``: class index per image (None: the predicted class). ``normalize``: callable on the uint8
    batch, a (mean, std) pair, or None for ImageNet statistics. The model is moved to ``device`` (default:
    where it is) and its train/eval mode is restored.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.to(device)
    x = _as_batch(images, device, normalize).requires_grad_(True)  # gradients flow even into a frozen model
    # An in-place activation after the target layer (alexnet's ReLU(inplace=True)) would overwrite the saved
    # activations and detach their gradient hook: switch in-place off while the maps are computed.
    inplace = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for m in inplace:
        m.inplace = False
    cam = GradCAM(model=model, target_layers=[layer or target_layer(model)])
    try:
        target_list = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
        maps = cam(input_tensor=x, targets=target_list)
        probs = torch.softmax(cam.outputs.detach().float(), dim=1).cpu().numpy()
    finally:
        cam.activations_and_grads.release()
        for m in inplace:
            m.inplace = True
        model.train(was_training)
    return maps, probs


def overlay(images, maps: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Heat maps over their images: N x H x W x 3 uint8 (jet colour map, RGB)."""
    array = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    rgb = array.transpose(0, 2, 3, 1).astype(np.float32) / 255
    return np.stack([show_cam_on_image(img, m, use_rgb=True, image_weight=image_weight) for img, m in zip(rgb, maps)])


def samples_per_class(labels, per_class: int, seed: int = 0) -> np.ndarray:
    """Positions of up to ``per_class`` images of each class (seeded), grouped by class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == k), size=min(per_class, int((labels == k).sum())), replace=False)
              for k in np.unique(labels)]
    return np.concatenate(chosen) if chosen else np.array([], dtype=int)
