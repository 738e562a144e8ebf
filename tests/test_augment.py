"""Batch augmentation: dtype and shape kept, repeatable, geometry, colour and stain each within their ranges."""
from __future__ import annotations

import pytest
import torch

from bloodlib.training.augment import augment_batch, stain_jitter


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


# ------------------------------------------------------------------------------- stain (HED) jitter

def _two_colour_cells(n: int = 8, side: int = 16) -> torch.Tensor:
    """A purple disc on a pale pink background: a cell's two stains, and a shape to keep."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    disc = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 4) ** 2
    image = torch.empty(3, side, side, dtype=torch.uint8)
    for channel, (inside, outside) in enumerate(zip((110, 60, 160), (235, 215, 225))):
        image[channel] = torch.where(disc, inside, outside)
    return image.expand(n, -1, -1, -1).contiguous()


def test_stain_jitter_off_draws_nothing_and_changes_nothing():
    images = torch.randint(0, 256, (6, 3, 20, 28), dtype=torch.uint8)
    assert torch.equal(augment_batch(images, torch.Generator().manual_seed(3)),
                       augment_batch(images, torch.Generator().manual_seed(3), stain=0.0))
    cells = _two_colour_cells()
    n = len(cells)
    unchanged = stain_jitter(cells.float() / 255, 0.2, scale=torch.ones(n, 3), shift=torch.zeros(n, 3))
    assert (unchanged * 255 - cells.float()).abs().max() < 1e-3  # RGB -> HED -> RGB is the identity


def test_stain_jitter_stays_in_range_is_repeatable_and_moves_colours_per_image():
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    images[0] = 0  # black and white pixels: the logarithm's floor and zero density
    images[1] = 255
    out = augment_batch(images, torch.Generator().manual_seed(0), stain=0.9, **_no_colour())
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, augment_batch(images, torch.Generator().manual_seed(0), stain=0.9, **_no_colour()))
    assert not torch.equal(out, augment_batch(images, torch.Generator().manual_seed(1), stain=0.9, **_no_colour()))
    floats = stain_jitter(images.float() / 255, 0.9, torch.Generator().manual_seed(0))
    assert torch.isfinite(floats).all() and floats.min() >= 0 and floats.max() <= 1
    cells = _two_colour_cells()
    jittered = augment_batch(cells, torch.Generator().manual_seed(0), stain=0.2, **_no_colour()).float()
    mean_colours = jittered.mean((2, 3))
    assert (mean_colours - cells.float().mean((2, 3))).abs().max() > 5  # the stain moved
    assert torch.cdist(mean_colours, mean_colours).max() > 5  # and differently in each image
    with pytest.raises(ValueError, match="stain jitter strength"):
        stain_jitter(cells.float() / 255, 1.0)


def test_stain_jitter_changes_colours_not_geometry():
    """A colour map, pixel by pixel: pixels of one colour stay one colour, so the disc keeps its place and shape."""
    cells = _two_colour_cells()
    out = augment_batch(cells, torch.Generator().manual_seed(0), stain=0.2, **_no_colour())
    disc = cells[:, 0] == 110
    for image, inside in zip(out, disc):
        colours = image.flatten(1).T  # pixels x 3
        inside_colours, outside_colours = colours[inside.flatten()], colours[~inside.flatten()]
        assert (inside_colours == inside_colours[0]).all() and (outside_colours == outside_colours[0]).all()
        assert not torch.equal(inside_colours[0], outside_colours[0])
