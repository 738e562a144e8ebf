"""``bloodlib predict``: users' images of any mode and size, bad files, text and JSON output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bloodlib import config, models
from bloodlib.__main__ import main
from bloodlib.models import checkpoints, inference
from bloodlib.models.inference import load_image
from bloodlib.data.synthetic import toy_imageset
from bloodlib.config import TrainConfig
from bloodlib.training.train import fit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A resnet18 trained a few steps on 16 x 21 'full' images (the 4:3 shape of a smear)."""
    data = toy_imageset((8, 8, 8, 8), size=(16, 21))
    config.seed_everything(0)
    model = models.create_model("resnet18", 4, pretrained="scratch")
    out = tmp_path_factory.mktemp("run")
    fit(model, data, data.indices("train"), data.indices("val"), TrainConfig(epochs=1, batch_size=8),
        out_dir=out, metadata={"mode": "full"}, device="cpu", progress=False)
    return out / "best.pt"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    paths = {name: folder / name for name in ("rgb.jpg", "grey.png", "rgba.png", "palette.png", "big.jpg", "x.jpg")}
    Image.fromarray(pixels).save(paths["rgb.jpg"])
    Image.fromarray(pixels).convert("L").save(paths["grey.png"])
    Image.fromarray(np.dstack([pixels, rng.integers(0, 256, (48, 64), dtype=np.uint8)]), "RGBA").save(paths["rgba.png"])
    Image.fromarray(pixels).convert("P").save(paths["palette.png"])
    Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(paths["big.jpg"])
    paths["x.jpg"].write_text("this is not an image\n")
    return paths


GOOD = ["rgb.jpg", "grey.png", "rgba.png", "palette.png", "big.jpg"]


def test_text_output_one_line_per_good_image_and_an_error_for_the_bad_one(checkpoint, images, capsys):
    code = main(["predict", *map(str, images.values()), "--checkpoint", str(checkpoint), "--device", "cpu"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert code == 1
    assert [line.split(":")[0] for line in lines] == [str(images[name]) for name in GOOD]
    assert all("CLASS_" in line and "CLASS_3=" in line for line in lines)
    assert f"{images['x.jpg']}: not an image" in err


def test_json_output_parses(checkpoint, images, capsys):
    code = main(["predict", str(images["rgb.jpg"]), str(images["x.jpg"]), str(images["big.jpg"]),
                 "--checkpoint", str(checkpoint), "--json", "--device", "cpu"])
    out, err = capsys.readouterr()
    results = json.loads(out)
    assert code == 1 and [Path(r["file"]).name for r in results] == ["rgb.jpg", "x.jpg", "big.jpg"]
    good = [r for r in results if "error" not in r]
    assert len(good) == 2 and all(r["class"] in r["probabilities"] for r in good)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in good)
    assert "x.jpg" in results[1]["error"] and "x.jpg" in err


def test_all_good_images_exit_0(checkpoint, images, capsys):
    assert main(["predict", str(images["grey.png"]), "-c", str(checkpoint), "--device", "cpu"]) == 0


def test_unusable_checkpoint_or_mode_exit_2(checkpoint, images, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("{}")
    assert main(["predict", str(images["rgb.jpg"]), "-c", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert main(["predict", str(images["rgb.jpg"]), "-c", str(checkpoint), "--mode", "crop"]) == 2
    assert "trained on 'full' images" in capsys.readouterr().err


def test_conversion_matches_the_training_cache(images, tmp_path):
    """RGB of any mode; full: the whole image resized; crop without a stained cell: the centred square resized."""
    for name in GOOD:
        image = load_image(images[name], (12, 16), "full")
        assert image.dtype == torch.uint8 and image.shape == (3, 12, 16)
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the centred 40 x 40 square is white, the sides black
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert load_image(tmp_path / "wide.png", (10, 10), "crop").min() == 255
    expected = np.asarray(Image.fromarray(wide).resize((20, 10), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(load_image(tmp_path / "wide.png", (10, 20), "full").numpy(), expected)



def test_crop_checkpoints_centre_on_the_stained_cell(tmp_path):
    """A user's smear with its WBC in a corner: the crop is the square around the purple cell, as in training."""
    from PIL import ImageDraw

    from bloodlib.data import images as images_

    smear = Image.new("RGB", (320, 240), (230, 225, 228))
    ImageDraw.Draw(smear).ellipse((230, 20, 290, 80), fill=(120, 70, 190))
    smear.save(tmp_path / "corner.png")
    crop = load_image(tmp_path / "corner.png", (16, 16), "crop").numpy().astype(int)
    purple = (crop[2] - crop[1] > 50).mean()
    assert purple > 0.2  # the cell fills the crop; the centred square would hold none of it
    box = images_.square_around(images_.stain_box(smear), 320, 240, images_.CROP_MARGIN)
    expected = np.asarray(smear.crop(box).resize((16, 16), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(crop, expected)


def test_transparency_is_laid_over_white(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png", (4, 4), "full").min() == 255


def test_python_dash_m_runs_the_command(checkpoint, images):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "bloodlib", "predict", str(images["rgb.jpg"]), "-c", str(checkpoint),
                           "--json", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["class"].startswith("CLASS_")


def test_help_says_how_crop_checkpoints_frame_images(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and "centred square" in help_text and "--checkpoint" in help_text
    with pytest.raises(SystemExit) as exit_:
        main([])  # no subcommand: a usage error
    assert exit_.value.code == 2


# ------------------------------------------------------------------------------------- the input colour

def _smear_like(n: int = 4, size: int = 24) -> torch.Tensor:
    """uint8 images with structure in every channel: a purple blob on a pink field, some noise."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    blob = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2)[None, None]
    base = np.where(blob, np.array([110, 60, 150])[None, :, None, None], np.array([225, 170, 180])[None, :, None, None])
    return torch.as_tensor(np.clip(base + rng.normal(0, 12, (n, 3, size, size)), 0, 255).astype(np.uint8))


def test_lab_input_is_each_images_standardised_cielab():
    images = _smear_like()
    x = inference.normalize(images, {"mean": [0.5] * 3, "std": [0.5] * 3, "colour": "lab"})
    assert x.shape == images.shape and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-4)
    assert torch.allclose(x.std(dim=(2, 3)), torch.ones(4, 3), atol=1e-3)
    # a flat image divides by nothing: its input stays finite
    assert torch.isfinite(inference.normalize(torch.full((1, 3, 8, 8), 200, dtype=torch.uint8), {"colour": "lab"})).all()


def test_lab_input_takes_a_labs_overall_colour_and_contrast_out():
    """An image recoloured by a shift and a scale per LAB channel (Reinhard's model of another lab's stain) reaches
    the network almost as the original does; in RGB it does not."""
    import kornia

    images = _smear_like()
    lab = kornia.color.rgb_to_lab(images.float() / 255)
    scale, shift = torch.tensor([0.85, 1.2, 0.9]).view(1, 3, 1, 1), torch.tensor([8.0, 6.0, -7.0]).view(1, 3, 1, 1)
    recoloured = (kornia.color.lab_to_rgb(lab * scale + shift).clamp(0, 1) * 255).round().to(torch.uint8)
    assert (recoloured.float() - images.float()).abs().mean() > 5  # another look indeed: 5 grey levels on average
    as_lab, as_rgb = {"colour": "lab"}, {"mean": [0.5] * 3, "std": [0.25] * 3}
    lab_gap = (inference.normalize(recoloured, as_lab) - inference.normalize(images, as_lab)).abs().mean()
    rgb_gap = (inference.normalize(recoloured, as_rgb) - inference.normalize(images, as_rgb)).abs().mean()
    assert lab_gap < 0.1 < rgb_gap


def test_input_colour_is_part_of_the_recipe_and_of_the_saved_model():
    assert inference.with_input_colour({"mean": [0.1] * 3, "std": [1] * 3, "colour": "lab"}, "rgb") == {
        "mean": [0.1] * 3, "std": [1] * 3}  # RGB models save what they saved before the choice existed
    assert inference.with_input_colour({"mean": [0.1] * 3, "std": [1] * 3}, "lab")["colour"] == "lab"
    with pytest.raises(ValueError, match="input_colour must be one of"):
        TrainConfig(input_colour="hsv")
    with pytest.raises(ValueError, match="unknown input colour 'hsv'"):
        inference.normalize(_smear_like(), {"colour": "hsv"})


def test_a_lab_checkpoint_predicts_through_its_own_input_colour(tmp_path, images, capsys):
    data = toy_imageset((8, 8, 8, 8), size=(16, 21))
    config.seed_everything(0)
    model = models.create_model("resnet18", 4, pretrained="scratch")
    fit(model, data, data.indices("train"), data.indices("val"), TrainConfig(epochs=1, batch_size=8, input_colour="lab"),
        out_dir=tmp_path, metadata={"mode": "full"}, device="cpu", progress=False)
    loaded = checkpoints.load_model(tmp_path / "best.pt")
    assert loaded.normalization["colour"] == "lab" == loaded.checkpoint_metadata["train_config"]["input_colour"]
    batch = data.images[:6]
    assert np.allclose(inference.predict_proba(loaded, batch), inference.predict_proba(model, batch), atol=1e-5)
    assert main(["predict", str(images["rgb.jpg"]), "--checkpoint", str(tmp_path / "best.pt")]) == 0
