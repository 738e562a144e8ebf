"""Batch augmentation: dtype and shape kept, repeatable, geometry and colour each within their ranges."""
from __future__ import annotations

import torch

from bloodlib.training.augment import augment_batch


def test_augment_batch_keeps_dtype_and_shape_and_is_identity_when_disabled():
    images = torch.randint(0, 256, (6, 3, 20, 28), dtype=torch.uint8)
    assert augment_batch(images, enabled=False) is images
    out = augment_batch(images, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape and not torch.equal(out, images)
    again = augment_batch(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator decides everything
    floats = augment_batch(images.float() / 255, torch.Generator().manual_seed(0))
    assert floats.dtype == torch.float32 and floats.shape == images.shape


def test_rotations_fill_corners_with_the_image_not_black():
    flat = torch.full((4, 3, 16, 24), 150, dtype=torch.uint8)
    out = augment_batch(flat, torch.Generator().manual_seed(0), brightness=0, contrast=0, saturation=0, hue=0)
    assert (out.int() - 150).abs().max() <= 1


def test_colour_jitter_moves_colours_but_not_pixels():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, torch.Generator().manual_seed(0), flip=False, rotate=False)
    assert out.shape == images.shape and not torch.equal(out, images)
    assert (out.float() - images.float()).abs().mean() < 60


def _bright_square(n: int = 64, side: int = 32, half: int = 6) -> torch.Tensor:
    images = torch.zeros(n, 3, side, side, dtype=torch.uint8)
    images[:, :, side // 2 - half:side // 2 + half, side // 2 - half:side // 2 + half] = 255
    return images


def _no_colour(**geometry) -> dict:
    return dict(flip=False, rotate=False, brightness=0, contrast=0, saturation=0, hue=0, **geometry)


def test_zoom_scales_the_cell_within_its_range():
    images = _bright_square()
    zoomed = augment_batch(images, torch.Generator().manual_seed(0), **_no_colour(zoom=0.25))
    ratio = (zoomed.float().mean((1, 2, 3)) / images.float().mean((1, 2, 3)))  # area of the square: zoom squared
    assert ratio.min() >= 1 / 1.25 ** 2 - 0.1 and ratio.max() <= 1.25 ** 2 + 0.1
    assert ratio.min() < 0.85 and ratio.max() > 1.15  # both ways


def test_shift_moves_the_cell_by_at_most_its_fraction_of_the_side():
    images, side = _bright_square(), 32
    shifted = augment_batch(images, torch.Generator().manual_seed(0), **_no_colour(shift=0.125)).float()
    coords = torch.arange(side, dtype=torch.float32)
    weight = shifted[:, 0].sum((1, 2))
    cx = (shifted[:, 0].sum(1) * coords).sum(1) / weight
    cy = (shifted[:, 0].sum(2) * coords).sum(1) / weight
    centre = (side - 1) / 2
    offsets = torch.stack([cx - centre, cy - centre])
    assert offsets.abs().max() <= 0.125 * side + 0.5 and offsets.abs().max() > 0.06 * side
    assert torch.allclose(shifted.mean((1, 2, 3)), images.float().mean((1, 2, 3)), rtol=0.05)  # moved, not scaled


def test_zoom_and_shift_off_draw_nothing_extra():
    # a run without them repeats one from before they existed: same random stream, same batch
    images = torch.randint(0, 256, (6, 3, 20, 28), dtype=torch.uint8)
    plain = augment_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(plain, augment_batch(images, torch.Generator().manual_seed(3), zoom=0.0, shift=0.0))
