"""Training-time augmentation of whole uint8 batches.

:func:`augment_batch` draws its random numbers per image but applies them to the batch at once (one affine
grid, one stain and one colour matrix per image), so the input pipeline has no per-image Python loop and runs on
the training device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# augment_batch's colour jitter at strength 1 (TrainConfig.colour_jitter scales all four)
COLOUR_JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03)


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None, *, enabled: bool = True,
                  flip: bool = True, rotate: bool = True, zoom: float = 0.0, shift: float = 0.0,
                  brightness: float = COLOUR_JITTER["brightness"], contrast: float = COLOUR_JITTER["contrast"],
                  saturation: float = COLOUR_JITTER["saturation"], hue: float = COLOUR_JITTER["hue"],
                  stain: float = 0.0) -> torch.Tensor:
    """Random flips, rotation by any angle, optional zoom and shift, optional stain jitter, and colour jitter,
    drawn per image, applied to the batch at once.

    A smear has no up, down, left or right, so every rotation and flip is a valid training image; zoom and
    shift imitate a WBC box drawn a little larger, smaller or off-centre; ``stain`` > 0 imitates another lab's
    staining (:func:`stain_jitter`, before the camera's part); the colour jitter imitates illumination and camera
    differences. Same dtype and shape out as in (uint8 stays uint8); the identity when ``enabled`` is False.
    Random numbers come from ``generator`` (CPU) for repeatability.
    """
    if not enabled:
        return images
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if flip or rotate or zoom or shift:
        x = _random_geometry(x, generator, flip=flip, rotate=rotate, zoom=zoom, shift=shift)
    if stain:  # drawn only when asked for: runs without it repeat earlier runs exactly
        x = stain_jitter(x, stain, generator)
    x = _random_colour(x, generator, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
    if images.dtype == torch.uint8:
        return x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return x.to(images.dtype)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


def _random_geometry(x: torch.Tensor, generator, *, flip: bool, rotate: bool, zoom: float = 0.0,
                     shift: float = 0.0) -> torch.Tensor:
    """One affine matrix per image (rotation about the centre, flips, zoom, shift), one ``grid_sample`` call.

    Zoom and shift draw their random numbers only when asked for, so runs without them repeat earlier runs.
    """
    n, _, h, w = x.shape
    angle = _uniform(n, 0, 2 * math.pi, generator, x.device) if rotate else torch.zeros(n, device=x.device)
    fx, fy = (torch.ones(n, device=x.device),) * 2
    if flip:
        fx, fy = (torch.where(_uniform(n, 0, 1, generator, x.device) < 0.5, -1.0, 1.0) for _ in range(2))
    # the grid maps output to input pixels: sampling a window 1/z of the side shows the image z times larger;
    # the zoom factor is drawn log-uniformly so that zooming in and out are equally likely
    inverse_zoom = torch.exp(_uniform(n, -math.log1p(zoom), math.log1p(zoom), generator, x.device)) if zoom else 1.0
    tx, ty = ((_uniform(n, -2 * shift, 2 * shift, generator, x.device) for _ in range(2)) if shift
              else (torch.zeros(n, device=x.device),) * 2)
    cos, sin = torch.cos(angle) * inverse_zoom, torch.sin(angle) * inverse_zoom
    # affine_grid works in [-1, 1] coordinates on both axes: rescale so that the rotation is one in pixels
    theta = torch.stack([torch.stack([cos * fx, -sin * fy * h / w, tx], 1),
                         torch.stack([sin * fx * w / h, cos * fy, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # corners rotated in from outside the image are filled by reflection: more smear, not black wedges
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# RGB <-> YIQ: saturation scales the chroma (I, Q) plane and hue rotates it
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)  # once: linalg.inv on a GPU waits for the device (error check)


def _random_colour(x: torch.Tensor, generator, *, brightness: float, contrast: float, saturation: float,
                   hue: float) -> torch.Tensor:
    """Brightness, contrast, then saturation and hue as one 3x3 colour matrix per image (values in [0, 1])."""
    n = len(x)
    b = _uniform(n, 1 - brightness, 1 + brightness, generator, x.device).view(n, 1, 1, 1)
    x = (x * b).clamp_(0, 1)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, x.device).view(n, 1, 1, 1)
    grey = (x * _RGB_TO_YIQ[0].to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - grey) * c + grey).clamp_(0, 1)
    s = _uniform(n, 1 - saturation, 1 + saturation, generator, x.device)
    a = _uniform(n, -hue, hue, generator, x.device) * 2 * math.pi
    chroma = torch.zeros(n, 3, 3, device=x.device)
    chroma[:, 0, 0] = 1
    chroma[:, 1, 1], chroma[:, 1, 2] = s * torch.cos(a), -s * torch.sin(a)
    chroma[:, 2, 1], chroma[:, 2, 2] = s * torch.sin(a), s * torch.cos(a)
    matrix = _YIQ_TO_RGB.to(x.device) @ chroma @ _RGB_TO_YIQ.to(x.device)
    return torch.einsum("nij,njhw->nihw", matrix, x).clamp_(0, 1)


# Colour deconvolution into haematoxylin, eosin and DAB (Ruifrok and Johnston, "Quantification of histochemical
# staining by color deconvolution", Anal Quant Cytol Histol 23(4), 2001): each row is one stain's RGB optical
# density, as scikit-image has them (skimage.color.rgb_from_hed). Blood smears are Romanowsky-stained, not H&E:
# here the axes are a generic way to perturb stain colour (purple nuclei, pink cytoplasm), not a model of the dyes.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_DARKEST = 1e-6  # intensities are floored here before the logarithm (a black pixel has no finite density)


def stain_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None = None, *,
                 scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
    """HED stain augmentation (Tellez et al., IEEE TMI 2018; Tellez et al., MedIA 2019): RGB (values in [0, 1],
    N x 3 x H x W) to optical density (natural logarithm), to stain concentrations by colour deconvolution; per
    image and stain a random scale in [1 - strength, 1 + strength] and shift in [-strength, strength]; back to RGB.

    0.05 and 0.2 are the "light" and "strong" settings of Tellez et al. 2019. ``scale`` and ``shift`` (N x 3) replace
    the random draws (the tests check the round trip with them)."""
    if not 0 <= strength < 1:
        raise ValueError(f"stain jitter strength must be in [0, 1) (a scale of 1 - strength must stay positive), "
                         f"got {strength}")
    n = len(x)
    if scale is None:
        scale = _uniform(3 * n, 1 - strength, 1 + strength, generator, x.device).view(n, 3)
    if shift is None:
        shift = _uniform(3 * n, -strength, strength, generator, x.device).view(n, 3)
    density = -torch.log(x.clamp(min=_DARKEST))
    stains = torch.einsum("nihw,ij->njhw", density, _HED_FROM_RGB.to(x.device))
    stains = stains * scale.view(n, 3, 1, 1) + shift.view(n, 3, 1, 1)
    density = torch.einsum("njhw,jk->nkhw", stains, _RGB_FROM_HED.to(x.device))
    return torch.exp(-density).clamp_(0, 1)
