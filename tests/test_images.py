"""WBC crops and the decoded-image cache."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloodlib.data import images


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


def test_stain_box_finds_the_wbc_of_every_annotated_smear(bccd_root):
    """The stain rule (for datasets without boxes) against the VOC WBC boxes of the real smears."""
    from PIL import Image

    boxes = images.wbc_boxes(bccd_root)
    found, ratios = 0, []
    for file, truth in boxes.groupby("file"):
        with Image.open(bccd_root / file) as image:
            box = images.stain_box(image)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        found += ((truth["xmin"] <= cx) & (cx <= truth["xmax"]) & (truth["ymin"] <= cy) & (cy <= truth["ymax"])).any()
        if len(truth) == 1:  # its size stands in for the VOC box's
            ratios.append((box[2] - box[0]) / max(truth["box_width"].iloc[0], truth["box_height"].iloc[0]))
    assert found == boxes["file"].nunique() == 358
    assert 0.9 < np.median(ratios) < 1.1


def test_stain_box_of_a_synthetic_cell():
    """A purple disc off-centre among pink discs is found; an image without purple has no box."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (230, 225, 228))
    draw = ImageDraw.Draw(image)
    for x, y in ((40, 40), (60, 180), (160, 120)):
        draw.ellipse((x - 18, y - 18, x + 18, y + 18), fill=(225, 160, 170))  # red cells: pink
    draw.ellipse((230, 50, 290, 110), fill=(120, 70, 190))  # the nucleus: purple, centre (260, 80)
    draw.ellipse((100, 200, 106, 206), fill=(120, 70, 190))  # a platelet: purple but small
    box = images.stain_box(image)
    assert box is not None and abs((box[0] + box[2]) / 2 - 260) < 3 and abs((box[1] + box[3]) / 2 - 80) < 3
    assert 60 * 1.2 < box[2] - box[0] < 60 * 1.4  # box_per_blob times the blob
    assert images.stain_box(Image.new("RGB", (320, 240), (225, 160, 170))) is None


def test_crop_without_box_is_a_clear_error(bccd_root):
    path = bccd_root / "dataset-master" / "JPEGImages" / "BloodImage_00000.jpg"
    with pytest.raises(ValueError, match="BloodImage_00000.jpg: crop mode needs a WBC box"):
        images.load_one(path, "crop", 32, box=None)


def test_malformed_annotation_names_the_file(tmp_path):
    bad = tmp_path / "BloodImage_00001.xml"
    bad.write_text("<annotation><object><name>WBC</name>")
    with pytest.raises(ValueError, match="BloodImage_00001.xml: not a valid Pascal-VOC"):
        images.read_voc(bad)


def test_large_arrays_stream_from_disk_with_the_same_interface(bccd_root, bccd_manifest, tmp_path, monkeypatch):
    import torch

    from bloodlib import config
    from bloodlib.training import train
    from bloodlib.data.datasets import ImageSet

    rows = bccd_manifest[0].kept.head(12)
    in_memory = images.load_cached(rows, bccd_root, "crop", 32, cache=tmp_path / "a", progress=False, stream=False)
    streamed = images.load_cached(rows, bccd_root, "crop", 32, cache=tmp_path / "b", progress=False, stream=True)
    assert isinstance(streamed, np.memmap) and not isinstance(in_memory, np.memmap)
    np.testing.assert_array_equal(streamed, in_memory)
    cached = images.load_cached(rows, bccd_root, "crop", 32, cache=tmp_path / "b", progress=False, stream=True)
    assert isinstance(cached, np.memmap)  # read back from the cache, still on disk
    # what ImageSet and the training loop see is an ordinary tensor: gathering, augmenting, training all work
    classes = sorted(rows["label"].unique())
    labels = torch.tensor(rows["label"].map({c: i for i, c in enumerate(classes)}).to_numpy())
    data = ImageSet(images=torch.from_numpy(cached), labels=labels, classes=classes,
                    rows=rows.assign(split=["train"] * 8 + ["val"] * 4))
    from bloodlib.models import create_model
    model = create_model("resnet18", len(classes), pretrained="scratch")
    fit = train.fit(model, data, data.indices("train"), data.indices("val"), config.TrainConfig(epochs=1, batch_size=4),
                    device="cpu", progress=False)
    assert fit.kept_epoch == 1
    (npy,) = (tmp_path / "b").glob("*.npy")
    np.testing.assert_array_equal(np.load(npy), in_memory)  # training never wrote into the cache file


def test_should_stream_follows_the_environment_then_the_memory(monkeypatch):
    monkeypatch.setenv("BLOODLIB_STREAM", "1")
    assert images.should_stream(10)
    monkeypatch.setenv("BLOODLIB_STREAM", "0")
    assert not images.should_stream(10 ** 15)
    monkeypatch.delenv("BLOODLIB_STREAM")
    assert images.should_stream(10 ** 15) and not images.should_stream(10 ** 6)


@pytest.mark.parametrize("size, region", [((640, 480), (0, 0, 640, 480)), ((320, 240), (0, 0, 320, 240)),
                                          ((400, 400), (0, 50, 400, 350)), ((800, 300), (200, 0, 600, 300))])
def test_full_mode_crops_other_shapes_to_four_by_three(size, region):
    assert images.centre_aspect(*size, 4 / 3) == region


def test_full_mode_of_a_square_image_is_not_squashed(tmp_path):
    from PIL import Image

    pixels = np.zeros((90, 90, 3), np.uint8)
    pixels[:12] = 255  # a white band along the top: outside the centred 4:3 region (rows 11-78)
    pixels[40:50, 40:50] = 255  # a 10 x 10 square in the centre
    Image.fromarray(pixels).save(tmp_path / "square.png")
    full = images.load_one(tmp_path / "square.png", "full", 30)
    assert full.shape == (30, 40, 3)
    assert full[0, :, 0].mean() < 128  # the top band was cropped away, not squeezed in
    square = full[:, :, 0] > 128
    rows, cols = square.any(1).sum(), square.any(0).sum()
    assert abs(int(rows) - int(cols)) <= 1  # the square stays square
