"""Inference with a trained model: class probabilities of uint8 image tensors (:func:`predict_proba`), and
the classes of users' image files with a checkpoint (``bloodlib predict IMAGE... --checkpoint best.pt``).

A user's image is converted the way the training cache converted the smears (see :mod:`bloodlib.data.images`):
RGB (grayscale, palette and transparent images too; transparency over white), then

- ``full`` checkpoints: the whole image resized to the checkpoint's (H, W), bilinear with antialiasing;
- ``crop`` checkpoints: the training crops were centred on the white cell's box; a user's image has no
  box, so the cell is found by its stain (:func:`bloodlib.data.images.stain_box`, the rule crop mode uses on
  datasets without boxes) and the square around it, grown by the checkpoint's margin, is resized to
  (H, W). An image without a purple blob large enough (not a stained smear) falls back to its centred square.

The decoded uint8 image then becomes the network's input as the model's saved ``normalization`` says
(:func:`normalize`): RGB standardised by the model's mean and std, or, for a model trained with
``input_colour="lab"``, the image's own CIELAB channels standardised by its own mean and spread.

A checkpoint that holds a familiarity reference (written by training since it was added) also says, per image,
whether the image looks unlike the model's training images or leaves the model unsure
(:mod:`bloodlib.models.familiarity`).
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from bloodlib import config
from bloodlib.data import images
from bloodlib.models import familiarity
from bloodlib.models.precision import Precision, autocast_for

CHUNK = 64  # images decoded and classified at a time
LAB_FLAT = 1e-2  # a LAB channel's spread below this (a flat image) is not divided by: its values stay near 0


def normalize(images: torch.Tensor, normalization: dict, channels_last: bool = False) -> torch.Tensor:
    """uint8 images to the float input of the network: [0, 1], then (x - mean) / std per channel; or, where
    ``normalization["colour"]`` is ``"lab"``, each image's own CIELAB channels standardised (:func:`standardised_lab`)."""
    x = images.float() / 255
    if input_colour(normalization) == "lab":
        x = standardised_lab(x)
    else:
        mean = torch.tensor(normalization["mean"], device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(normalization["std"], device=images.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def input_colour(normalization: dict) -> str:
    """What the network reads (:data:`bloodlib.config.INPUT_COLOURS`); checkpoints from before the choice read RGB."""
    colour = normalization.get("colour", "rgb")
    if colour not in config.INPUT_COLOURS:
        raise ValueError(f"unknown input colour {colour!r} in the model's normalization: expected one of "
                         f"{list(config.INPUT_COLOURS)}")
    return colour


def with_input_colour(normalization: dict, colour: str) -> dict:
    """``normalization`` for a network that reads ``colour``: RGB keeps no ``colour`` key (as every checkpoint
    before the choice), ``"lab"`` adds it; the mean and std stay, unused by ``"lab"``."""
    plain = {key: value for key, value in normalization.items() if key != "colour"}
    return plain if input_colour({"colour": colour}) == "rgb" else {**plain, "colour": colour}


def standardised_lab(x: torch.Tensor) -> torch.Tensor:
    """Float N x 3 x H x W RGB in [0, 1] -> each image's CIELAB channels (kornia) less the image's own mean,
    over its own standard deviation: Reinhard et al.'s (2001) colour standardisation without a target's colours
    put back. A colour cast or contrast of a whole image that is a shift and a scale per LAB channel (what
    Reinhard's method takes a lab's stain and lamp to be) leaves the network's input unchanged, and reading one
    image needs no other image of its lab."""
    import kornia  # here: its import takes seconds, and only "lab" models need it

    lab = kornia.color.rgb_to_lab(x.clamp(0, 1))
    mean = lab.mean(dim=(2, 3), keepdim=True)
    spread = lab.std(dim=(2, 3), keepdim=True).clamp_min(LAB_FLAT)
    return (lab - mean) / spread


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 128,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits (float32, on the CPU) of uint8 images: eval mode, no augmentation, in batches."""
    device = torch.device(device) if device else next(model.parameters()).device
    images = torch.as_tensor(images)
    was_training = model.training
    model.eval()
    precision = Precision(torch.float16 if device.type == "cuda" else None, False)
    try:
        out = []
        for chunk in torch.split(images, batch_size):
            with autocast_for(device, precision):
                out.append(model(normalize(chunk.to(device), model.normalization)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def predict_proba(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 128,
                  device: torch.device | str | None = None) -> np.ndarray:
    """Softmax probabilities (N x classes) of uint8 images, on the model's device unless ``device``."""
    return torch.softmax(predict_logits(model, images, batch_size=batch_size, device=device), 1).numpy()


def load_image(path: str | os.PathLike, image_size: tuple[int, int], mode: str,
               margin: float = images.CROP_MARGIN) -> torch.Tensor:
    """One image file as a uint8 3 x H x W tensor, converted like the training cache (see module doc)."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # phone pictures: stored sideways, shown upright
        image = _to_rgb(image)
    if mode == "crop":  # framed like the training cache of a dataset without boxes (folders._clean)
        box = images.stain_box(image) or images.centre_square(image.width, image.height)
        image = image.crop(images.square_around(box, image.width, image.height, margin))
    h, w = image_size
    image = image.resize((w, h), Image.Resampling.BILINEAR)  # PIL antialiases when shrinking
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB; an image with transparency is laid over white (a smear's background is light)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def predict_files(paths: list[str | os.PathLike], model: torch.nn.Module, *, mode: str | None = None,
                  device: torch.device | str | None = None) -> list[dict]:
    """One result per path, in order: ``{"file", "class", "probabilities"}`` or ``{"file", "error"}``; with the
    familiarity columns (:data:`familiarity.COLUMNS`) too when the checkpoint holds a reference."""
    metadata = model.checkpoint_metadata
    image_size, mode = tuple(metadata["image_size"]), mode or metadata.get("mode", "full")
    margin = metadata.get("crop_margin", images.CROP_MARGIN)
    classes, reference = metadata["classes"], metadata.get("familiarity")
    results = []
    for start in range(0, len(paths), CHUNK):
        pixels, done = [], []
        for path in paths[start:start + CHUNK]:
            result = {"file": str(path)}
            results.append(result)
            try:
                pixels.append(load_image(path, image_size, mode, margin))
                done.append(result)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
                result["error"] = _describe(path, error)
        if pixels:
            pixels = torch.stack(pixels)
            probabilities = predict_proba(model, pixels, device=device)
            for result, p in zip(done, probabilities):
                result["class"] = classes[int(p.argmax())]
                result["probabilities"] = {c: round(float(v), 4) for c, v in zip(classes, p)}
            if reference is not None:
                assessed = familiarity.assess(reference, pixels, probabilities).round(4)
                for result, row in zip(done, assessed.to_dict("records")):  # plain Python values
                    result.update(row)
    return results


def _describe(path, error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):
        return f"{path}: not an image (or a format Pillow cannot read)"
    if isinstance(error, FileNotFoundError):
        return f"{path}: no such file"
    return f"{path}: cannot be read as an image: {error}"


# -------------------------------------------------------------------------------------- command line
