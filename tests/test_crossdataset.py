"""``bloodlib.evaluation.crossdataset`` and ``bloodlib evaluate``: a checkpoint scored on another dataset, with other class
spellings and other classes; AdaBN and stain normalisation; real BCCD (and PBC) images where present."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bloodlib.models import checkpoints
from bloodlib import config, evaluation, models
from bloodlib.evaluation import crossdataset
from bloodlib.data import datasets
from bloodlib.__main__ import main
from bloodlib.data.classes import canonical
from bloodlib.config import TrainConfig
from bloodlib.training.train import fit

from conftest import REPO

PBC = REPO.parent / "shared" / "data" / "pbc" / "PBC_dataset_normal_DIB"
# the cell's colour per class, the same in both labs: the model has something to recognise
COLOURS = {"EOSINOPHIL": (200, 80, 90), "LYMPHOCYTE": (70, 40, 170), "MONOCYTE": (130, 110, 200),
           "NEUTROPHIL": (150, 60, 140), "PLATELET": (90, 160, 80),
           "ERYTHROBLAST": (60, 30, 90), "BASOPHIL": (40, 20, 120)}
SOURCE_CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
TARGET_CLASSES = ("eosinophil", "lymphocyte", "neutrophil", "platelet")  # another spelling, MONOCYTE missing
PER_CLASS = 6


def smear_folder(root: Path, names, *, tint=(0, 0, 0), seed: int = 0) -> Path:
    """A folder-per-class dataset of 48 x 48 'smears': a light noisy field with one cell of its class's colour."""
    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            field = np.clip(rng.normal(225, 12, (48, 48, 3)) + tint, 0, 255).astype(np.uint8)
            image = Image.fromarray(field)
            x, y = rng.integers(8, 24, 2)
            colour = tuple(int(np.clip(c + t, 0, 255)) for c, t in zip(COLOURS[canonical(name)], tint))
            ImageDraw.Draw(image).ellipse((x, y, x + 18, y + 18), fill=colour)
            image.save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict:
    """A resnet18 trained two epochs on the upper-case source folder, and the lower-case target folder
    (another tint, no MONOCYTE, an extra PLATELET class)."""
    root = tmp_path_factory.mktemp("lab")
    source = smear_folder(root / "source", SOURCE_CLASSES)
    target = smear_folder(root / "target", TARGET_CLASSES, tint=(-25, 10, 15), seed=1)
    settings = config.resolve("smoke", None, root / "out", dataset=f"folder:{source}", mode="crop", image_size=32)
    prepared = datasets.prepare(settings, progress=False)
    split = prepared.splits[0]
    config.seed_everything(0)
    model = models.create_model("resnet18", len(prepared.data.classes), pretrained="scratch")
    fit(model, prepared.data, split.train, split.val, TrainConfig(epochs=2, batch_size=8), out_dir=root / "run",
        metadata={"mode": "crop", "crop_margin": settings.crop_margin, "dataset": settings.dataset},
        device="cpu", progress=False)
    return {"checkpoint": root / "run" / checkpoints.BEST, "source": source, "target": target, "out": root / "out"}


def target_settings(lab, **overrides) -> config.Settings:
    return config.resolve("smoke", None, lab["out"], dataset=f"folder:{lab['target']}", **overrides)


@pytest.fixture
def cli_env(lab, monkeypatch):
    monkeypatch.setenv(config.ENV_PROFILE, "smoke")
    monkeypatch.setenv(config.ENV_OUTPUT, str(lab["out"]))


# --- the library ---------------------------------------------------------------------------------------

def test_scores_the_shared_classes_and_says_what_was_left_out(lab):
    ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab), device="cpu")
    assert details.classes == ["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"] == ev.classes
    assert details.model_only == ["MONOCYTE"]
    assert details.dataset_left_out["images"].to_dict() == {"PLATELET": PER_CLASS}
    assert details.n_selected == 4 * PER_CLASS and details.n_images == 3 * PER_CLASS == len(ev.y_true)
    assert details.images_left_out == PER_CLASS
    assert (details.mode, details.image_size, details.trained_on) == ("crop", (32, 32), f"folder:{lab['source']}")
    assert details.before is None and details.adapt == []
    # the model's outputs restricted to the shared classes: probabilities over three classes
    assert ev.y_prob.shape == (3 * PER_CLASS, 3) and np.allclose(ev.y_prob.sum(1), 1, atol=1e-5)
    assert sorted(np.bincount(ev.y_true)) == [PER_CLASS] * 3
    assert all(i.split("/")[0] in ("eosinophil", "lymphocyte", "neutrophil") for i in ev.ids)
    # every tool of bloodlib.evaluation applies unchanged
    ci = evaluation.evaluation_ci(ev, n=100)
    assert set(evaluation.HEADLINE) <= set(ci.index)
    assert (ci["low"] <= ci["value"] + 1e-9).all() and (ci["value"] <= ci["high"] + 1e-9).all()
    assert list(evaluation.per_class_table(ev.y_true, ev.y_prob, ev.classes)["support"]) == [PER_CLASS] * 3
    counts, _ = evaluation.confusion_tables(ev.y_true, ev.y_prob, ev.classes)
    assert counts.to_numpy().sum() == 3 * PER_CLASS


def test_an_image_without_a_stained_cell_is_scored_and_said(lab, tmp_path):
    target = tmp_path / "target"
    shutil.copytree(lab["target"], target)
    blank = next(p for p in sorted(target.iterdir()) if p.is_dir())
    Image.new("RGB", (48, 48), (228, 226, 224)).save(blank / "no-cell.png")  # a field with no white cell
    ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], config.resolve("smoke", None, lab["out"],
                                                   dataset=f"folder:{target}"), device="cpu")
    assert "no-cell.png" in " ".join(map(str, ev.ids))
    # the toy cells of some classes are not purple either: each image cut to its centre is counted
    (note,) = [note for note in details.notes if "show no stained cell" in note]
    assert int(note.split()[0]) >= 1 and f"of the {len(ev.ids)} images scored" in note


def test_restricted_probabilities_are_the_softmax_of_the_shared_logits(lab):
    """The same numbers as the whole model's logits, with the unshared column (MONOCYTE) dropped."""
    from bloodlib.models.inference import predict_logits

    ev, _ = crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab), device="cpu")
    model = checkpoints.load_model(lab["checkpoint"])
    prepared = datasets.prepare(target_settings(lab, mode="crop", image_size=32), progress=False)
    positions = [prepared.data.rows["id"].tolist().index(i) for i in ev.ids]
    logits = predict_logits(model, prepared.data.images[torch.as_tensor(positions)])
    expected = torch.softmax(logits[:, [0, 1, 3]], 1).numpy()  # EOSINOPHIL, LYMPHOCYTE, NEUTROPHIL
    assert np.allclose(ev.y_prob, expected, atol=1e-5)


def test_the_test_part_of_one_split(lab):
    ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab),
                                                   split="fold 2/2, repeat 1", device="cpu")
    prepared = datasets.prepare(target_settings(lab, mode="crop", image_size=32), progress=False)
    test = prepared.splits[1].test
    assert details.split == "fold 2/2, repeat 1" and details.n_selected == len(test)
    assert set(ev.ids) <= set(prepared.data.rows["id"].to_numpy()[test])
    with pytest.raises(ValueError, match=r"no split 'holdout'.*fold 1/2, repeat 1"):
        crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab), split="holdout", device="cpu")


def test_another_mode_or_size_than_the_checkpoints_is_refused(lab):
    with pytest.raises(ValueError, match="trained on mode 'crop'"):
        crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab, mode="full"), device="cpu")
    with pytest.raises(ValueError, match="trained on image_size 32"):
        crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab, image_size=48), device="cpu")
    with pytest.raises(ValueError, match="unknown adaptation"):
        crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab), adapt="tta", device="cpu")


def test_no_shared_class_names_both_lists(lab, tmp_path):
    other = smear_folder(tmp_path / "other", ("platelet", "erythroblast"))
    settings = config.resolve("smoke", None, lab["out"], dataset=f"folder:{other}")
    with pytest.raises(ValueError, match=r"share no class") as error:
        crossdataset.evaluate_checkpoint(lab["checkpoint"], settings, device="cpu")
    assert "MONOCYTE" in str(error.value) and "platelet" in str(error.value)


# --- adaptation ----------------------------------------------------------------------------------------

def running_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_adabn_changes_a_copy_and_leaves_the_model_untouched(lab):
    model = checkpoints.load_model(lab["checkpoint"])
    before = running_stats(model)
    target = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    adapted, layers = crossdataset.adabn(model, target, batch_size=4)
    assert layers == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 0
    assert adapted is not model and not adapted.training
    after = running_stats(adapted)
    assert all(torch.equal(before[k], v) for k, v in running_stats(model).items())  # the original as it was
    assert any(not torch.allclose(before[k], after[k]) for k in before)
    first = next(m for m in adapted.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert first.momentum == next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).momentum
    assert int(first.num_batches_tracked) == 3  # 10 images in batches of about 4: 4, 3, 3


def test_adabn_is_the_plain_average_over_the_target_images():
    """One BatchNorm layer after the input: its running mean is the target images' mean per channel."""
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    net.normalization = {"mean": [0, 0, 0], "std": [1, 1, 1]}
    images = torch.randint(0, 255, (9, 3, 8, 8), dtype=torch.uint8)
    adapted, layers = crossdataset.adabn(net.eval(), images, batch_size=3)
    assert layers == 1
    assert torch.allclose(adapted[0].running_mean, (images.float() / 255).mean((0, 2, 3)), atol=1e-6)
    assert torch.equal(net[0].running_mean, torch.zeros(3))


def test_adabn_scored_before_and_after_on_the_same_images(lab):
    ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab), adapt="adabn",
                                                   device="cpu")
    assert details.adapt == ["adabn"] and details.notes == []
    before = details.before
    assert list(before.ids) == list(ev.ids) and np.array_equal(before.y_true, ev.y_true)
    assert not np.allclose(before.y_prob, ev.y_prob)  # the statistics changed, so did the outputs
    assert ev.extra["adapt"] == ["adabn"] and before.extra["adapt"] == []


def test_a_model_without_batchnorm_says_so(lab, tmp_path):
    config.seed_everything(0)
    alexnet = models.create_model("alexnet", 4, pretrained="scratch")
    path = checkpoints.save_checkpoint(tmp_path / "alexnet.pt", alexnet, {
        "model": "alexnet", "classes": list(SOURCE_CLASSES), "image_size": [32, 32], "mode": "crop",
        "normalization": alexnet.normalization, "dataset": f"folder:{lab['source']}"})
    ev, details = crossdataset.evaluate_checkpoint(path, target_settings(lab), adapt="adabn", device="cpu")
    assert details.notes == ["adabn: alexnet has no BatchNorm layer; the model is left as it is"]
    assert np.allclose(details.before.y_prob, ev.y_prob)


def test_reinhard_moves_each_image_to_the_reference_colours():
    from torchstain.torch.utils.rgb2lab import rgb2lab

    rng = np.random.default_rng(0)
    reference = torch.from_numpy(rng.normal((200, 150, 190), 20, (6, 16, 16, 3)).clip(0, 255).astype(np.uint8)
                                 ).permute(0, 3, 1, 2).contiguous()
    target = torch.from_numpy(rng.normal((150, 190, 120), 30, (4, 16, 16, 3)).clip(0, 255).astype(np.uint8)
                              ).permute(0, 3, 1, 2).contiguous()
    grey = torch.full((1, 3, 16, 16), 128, dtype=torch.uint8)
    fitted = crossdataset.stain_normalizer("reinhard", reference)
    out, unchanged = crossdataset.stain_normalize(torch.cat([target, grey]), fitted, "reinhard")
    assert out.dtype == torch.uint8 and out.shape == (5, 3, 16, 16) and unchanged == 1
    assert torch.equal(out[4], grey[0])  # nothing to normalise: left as it was, and counted

    def lab_mean(pixels):
        return rgb2lab(torch.cat(list(pixels), 2).float() / 255).mean((1, 2))

    goal = lab_mean(reference)
    assert (lab_mean(out[:4]) - goal).abs().max() < 0.25 * (lab_mean(target) - goal).abs().max()


def test_macenko_and_reinhard_through_evaluate_checkpoint(lab):
    """The reference is the checkpoint's own training dataset (its metadata names it)."""
    for method in ("reinhard", "macenko"):
        ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab),
                                                       adapt=["adabn", method], device="cpu")
        assert details.adapt == [method, "adabn"]  # stain first: AdaBN sees the images the model will
        assert details.reference == f"folder:{lab['source']}: {4 * PER_CLASS} of its {4 * PER_CLASS} images"
        assert ev.y_prob.shape == details.before.y_prob.shape and not np.allclose(ev.y_prob, details.before.y_prob)
    with pytest.raises(ValueError, match="one stain normalisation at a time"):
        crossdataset.evaluate_checkpoint(lab["checkpoint"], target_settings(lab), adapt=["reinhard", "macenko"])


# --- the command ---------------------------------------------------------------------------------------

def test_command_text(lab, cli_env, capsys):
    code = main(["evaluate", "--checkpoint", str(lab["checkpoint"]), "--dataset", f"folder:{lab['target']}",
                 "--device", "cpu", "--bootstrap", "100"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"dataset: folder:{lab['target']} (all images): {3 * PER_CLASS} images scored of {4 * PER_CLASS}" in out
    assert "shared classes: EOSINOPHIL, LYMPHOCYTE, NEUTROPHIL" in out
    assert f"dataset classes the model lacks: PLATELET ({PER_CLASS} images)" in out
    assert "model classes the dataset lacks: MONOCYTE" in out
    for label in ("accuracy", "balanced accuracy", "macro-F1"):
        assert any(line.strip().startswith(label) and "95% CI [" in line for line in out.splitlines()), label
    assert "recall per class: EOSINOPHIL" in out and f"(n={PER_CLASS})" in out
    assert "stratified bootstrap of test images, n=100" in out
    assert f"cleaning: {4 * PER_CLASS} listed; nothing dropped" in out


def test_every_image_of_a_class_too_small_to_split_is_scored_and_the_cleaning_said(lab, cli_env, tmp_path, capsys):
    """Scoring needs no split: a lab's few monocytes are scored, not dropped as too small to split (training would
    drop them); what the cleaning did drop (a byte-identical copy) is said."""
    target = tmp_path / "target"
    shutil.copytree(lab["target"], target)
    smear_folder(tmp_path / "few", ["MONOCYTE"], seed=3)
    (target / "monocyte").mkdir()
    for path in sorted((tmp_path / "few" / "MONOCYTE").iterdir())[:2]:
        shutil.copy(path, target / "monocyte" / path.name)
    shutil.copy(target / "eosinophil" / "0.png", target / "eosinophil" / "copy.png")
    ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], config.resolve("smoke", None, lab["out"],
                                                   dataset=f"folder:{target}"), device="cpu")
    assert "MONOCYTE" in details.classes and sorted(np.bincount(ev.y_true)) == [2] + [PER_CLASS] * 3
    assert details.model_only == []
    assert details.cleaning == {"listed": 4 * PER_CLASS + 3, "dropped": {"drop byte-identical copies (first kept)": 1}}
    # the test part of a split is the split training made: there the class too small to split is dropped, and said
    _, in_split = crossdataset.evaluate_checkpoint(lab["checkpoint"], config.resolve(
        "smoke", None, lab["out"], dataset=f"folder:{target}", folds=2), split="fold 1/2, repeat 1", device="cpu")
    assert "MONOCYTE" not in in_split.classes
    assert in_split.cleaning["dropped"] == {"drop byte-identical copies (first kept)": 1,
                                            "drop classes too small to split": 2}
    assert main(["evaluate", "-c", str(lab["checkpoint"]), "--dataset", f"folder:{target}", "--device", "cpu",
                 "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert f"cleaning: {4 * PER_CLASS + 3} listed; drop byte-identical copies (first kept): 1" in out
    assert "recall per class: EOSINOPHIL" in out and "MONOCYTE" in out and "(n=2)" in out


def test_command_json_with_adabn(lab, cli_env, capsys):
    code = main(["evaluate", "-c", str(lab["checkpoint"]), "--dataset", f"folder:{lab['target']}", "--adapt", "adabn",
                 "--json", "--device", "cpu", "--bootstrap", "100"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["shared_classes"] == ["EOSINOPHIL", "LYMPHOCYTE", "NEUTROPHIL"]
    assert report["left_out"] == {"model_classes": ["MONOCYTE"], "dataset_classes": {"PLATELET": PER_CLASS},
                                  "images": PER_CLASS}
    assert report["n_images"] == 3 * PER_CLASS and report["adapt"] == ["adabn"]
    for scores in (report, report["before"]):
        for m in crossdataset.SHOWN:
            assert scores[m]["low"] <= scores[m]["value"] <= scores[m]["high"]
        assert set(scores["per_class"]) == set(report["shared_classes"])
    change = report["change"]
    assert change["accuracy"] == pytest.approx(report["accuracy"]["value"] - report["before"]["accuracy"]["value"])
    assert 0 <= change["p_value"] <= 1 and change["method"]


def test_command_errors(lab, cli_env, tmp_path, capsys):
    other = smear_folder(tmp_path / "other", ("platelet", "basophil"))
    assert main(["evaluate", "-c", str(lab["checkpoint"]), "--dataset", f"folder:{other}", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "share no class" in err and "'MONOCYTE'" in err and "'basophil'" in err
    missing = tmp_path / "missing.pt"
    assert main(["evaluate", "-c", str(missing), "--dataset", f"folder:{lab['target']}"]) == 2
    assert f"{missing}: no such checkpoint file, and not a model name (any-lab: " in capsys.readouterr().err
    foreign = tmp_path / "notes.pt"
    foreign.write_text("not a checkpoint")
    assert main(["evaluate", "-c", str(foreign), "--dataset", f"folder:{lab['target']}", "--device", "cpu"]) == 2
    assert f"{foreign} is not a checkpoint" in capsys.readouterr().err
    assert main(["evaluate", "-c", str(lab["checkpoint"]), "--dataset", f"folder:{tmp_path / 'nowhere'}",
                 "--device", "cpu"]) == 1
    assert "nowhere" in capsys.readouterr().err


# --- real data -----------------------------------------------------------------------------------------

def test_a_checkpoint_scored_on_the_bccd_smears(lab, bccd_root):
    """Mode and size from the checkpoint's metadata (crop, 32 px): the WBC crops of the cleaned smears."""
    settings = config.resolve("smoke", bccd_root, lab["out"], dataset="bccd")
    ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], settings, device="cpu")
    assert (details.mode, details.image_size) == ("crop", (32, 32))
    assert details.classes == sorted(SOURCE_CLASSES) and details.model_only == [] and details.images_left_out == 0
    prepared = datasets.prepare(config.resolve("smoke", bccd_root, lab["out"], dataset="bccd", image_size=32),
                                progress=False)
    assert details.n_images == len(prepared.data) > 300
    ci = evaluation.evaluation_ci(ev, n=200)
    assert np.isfinite(ci.loc[list(crossdataset.SHOWN), ["value", "low", "high"]].to_numpy()).all()


def test_pbc_class_names_meet_the_models(lab, tmp_path):
    """A CSV list of a few real PBC cells per class: four classes shared, four left out and counted."""
    if not PBC.is_dir():
        pytest.skip(f"PBC data not found at {PBC}")
    rows = ["path,label"]
    for folder in sorted(p for p in PBC.iterdir() if p.is_dir()):
        rows += [f"{path},{folder.name}" for path in sorted(folder.glob("[!.]*.jpg"))[:PER_CLASS]]  # not .DS_*
    (tmp_path / "pbc.csv").write_text("\n".join(rows) + "\n")
    settings = config.resolve("smoke", None, lab["out"], dataset=f"csv:{tmp_path / 'pbc.csv'}")
    ev, details = crossdataset.evaluate_checkpoint(lab["checkpoint"], settings, adapt="reinhard", device="cpu")
    assert details.classes == sorted(SOURCE_CLASSES)
    assert set(details.dataset_left_out.index) == {"BASOPHIL", "ERYTHROBLAST", "IMMATURE_GRANULOCYTE", "PLATELET"}
    assert details.n_images == 4 * PER_CLASS and details.images_left_out == 4 * PER_CLASS
    assert details.notes == []  # every real cell has colours to normalise
