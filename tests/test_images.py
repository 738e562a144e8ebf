"""WBC crops and the decoded-image cache."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloodlib import images


@pytest.mark.parametrize("box", [(0, 0, 50, 40), (600, 440, 640, 480), (260, 177, 491, 376), (0, 0, 640, 480)])
def test_square_stays_inside_the_smear(box):
    left, top, right, bottom = images.square_around(box, 640, 480, margin=0.15)
    assert right - left == bottom - top  # square
    assert 0 <= left and right <= 640 and 0 <= top and bottom <= 480
    # the box's centre is inside the square
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert left <= cx <= right and top <= cy <= bottom


def test_two_boxes_the_one_nearest_the_centre_wins():
    boxes = pd.DataFrame({"xmin": [10, 300], "ymin": [10, 220], "xmax": [110, 340], "ymax": [110, 260]})
    boxes["box_width"] = boxes["xmax"] - boxes["xmin"]
    boxes["box_height"] = boxes["ymax"] - boxes["ymin"]
    assert images.choose_box(boxes) == (300, 220, 340, 260)
    assert images.choose_box(boxes.iloc[:0]) is None


def test_real_crops_and_full_smears(bccd_root, bccd_manifest):
    result, _ = bccd_manifest
    rows = result.kept.head(5)
    crops = images.load_cached(rows, bccd_root, "crop", 64, progress=False)
    full = images.load_cached(rows, bccd_root, "full", 48, progress=False)
    assert crops.shape == (5, 3, 64, 64) and crops.dtype == np.uint8
    assert full.shape == (5, 3, 48, 64)
    assert crops.std() > 10  # real pixels, not a blank


def test_cache_is_read_back_without_decoding(bccd_root, bccd_manifest, tmp_path, monkeypatch):
    rows = bccd_manifest[0].kept.head(4)
    first = images.load_cached(rows, bccd_root, "crop", 32, cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("crop-32-*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a JPEG although the cache holds it")

    monkeypatch.setattr(images, "decode", no_decoding)
    np.testing.assert_array_equal(images.load_cached(rows, bccd_root, "crop", 32, cache=tmp_path), first)


def test_damaged_cache_is_rebuilt(bccd_root, bccd_manifest, tmp_path):
    rows = bccd_manifest[0].kept.head(3)
    first = images.load_cached(rows, bccd_root, "full", 24, cache=tmp_path, progress=False)
    (cached,) = tmp_path.glob("full-24-*.npy")
    cached.write_bytes(b"not an array")
    np.testing.assert_array_equal(images.load_cached(rows, bccd_root, "full", 24, cache=tmp_path, progress=False), first)
    assert not list(tmp_path.glob("*.tmp"))


def test_crop_without_box_is_a_clear_error(bccd_root):
    path = bccd_root / "dataset-master" / "JPEGImages" / "BloodImage_00000.jpg"
    with pytest.raises(ValueError, match="BloodImage_00000.jpg: crop mode needs a WBC box"):
        images.load_one(path, "crop", 32, box=None)


def test_malformed_annotation_names_the_file(tmp_path):
    bad = tmp_path / "BloodImage_00001.xml"
    bad.write_text("<annotation><object><name>WBC</name>")
    with pytest.raises(ValueError, match="BloodImage_00001.xml: not a valid Pascal-VOC"):
        images.read_voc(bad)
