"""Several labs as one image set, lab-balanced training, leave-one-lab-out splits and a tiny LOLO run whose saved
predictions recompute every table (notebook 09 runs on the real labs under nbmake)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bloodlib import config, models
from bloodlib.models import checkpoints
from bloodlib.data.datasets import ImageSet
from bloodlib.data.synthetic import toy_imageset
from bloodlib.pipeline import publish, published_models
from bloodlib.study import lab_recipes, labs, lolo
from conftest import check_figure

SHARED = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
# each lab spells the cell types its own way (PBC lower case, DeepAPL CellaVision's folders), in one order, so that
# a type has one colour in every lab (toy_imageset's k-th colour); two labs have basophils too
SPELLINGS = {"atlas": ["eosinophil", "lymphocyte", "monocyte", "neutrophil"],
             "smears": ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL", "BASOPHIL"],
             "clinic": ["Eosinophils", "Lymphocyte", "Monocyte", "Segmented neutrophils", "Basophil"]}


def lab(spelling: list[str], counts: tuple[int, ...], tint: tuple[int, int, int], *, patients: int = 0,
        size: int = 16) -> ImageSet:
    """A synthetic lab: a colour per cell type, the lab's tint over it, the lab's spelling of the classes;
    ``patients``: cells grouped by patient, else no group column (each image its own group)."""
    data = toy_imageset(counts, size=size, seed=0)
    tinted = (data.images.int() + torch.tensor(tint).view(1, 3, 1, 1)).clamp(0, 255).to(torch.uint8)
    rows = data.rows.drop(columns=["fold"]).assign(label=[spelling[k] for k in data.labels.numpy()])
    if patients:
        rows["group"] = [f"P{i % patients}" for i in range(len(rows))]  # every lab numbers its patients from P0
    return ImageSet(tinted, data.labels, spelling, rows)


@pytest.fixture(scope="module")
def three_labs() -> dict[str, ImageSet]:
    return {"atlas": lab(SPELLINGS["atlas"], (30, 12, 10, 30), (30, 0, 0)),
            "smears": lab(SPELLINGS["smears"], (12, 4, 4, 20, 3), (0, 0, 0)),
            "clinic": lab(SPELLINGS["clinic"], (6, 24, 12, 16, 2), (0, 0, 40), patients=8)}


@pytest.fixture(scope="module")
def assembled(three_labs) -> labs.LabSet:
    return labs.assemble(three_labs, seed=0)


# ------------------------------------------------------------------------------------------------ assembly

def test_assembly_keeps_the_shared_classes_and_says_what_was_left_out(three_labs, assembled):
    data = assembled
    assert data.classes == SHARED and data.labs == ["atlas", "smears", "clinic"]
    kept = {"atlas": 82, "smears": 40, "clinic": 58}
    assert data.rows[labs.LAB].value_counts().to_dict() == kept and len(data) == sum(kept.values())
    left = data.left_out.set_index([labs.LAB, "class left out"])["images"].to_dict()
    assert left == {("smears", "BASOPHIL"): 3, ("clinic", "BASOPHIL"): 2}
    assert {lab: len(images) for lab, images in data.unlabelled.items()} == {"atlas": 0, "smears": 3, "clinic": 2}
    text = labs.left_out_text(data)
    assert "atlas: 82 images kept; left out: nothing" in text
    assert "clinic: 58 images kept; left out: BASOPHIL (2)" in text
    # one cell of the clinic, named its way, is the study's NEUTROPHIL, with its own pixels
    clinic = three_labs["clinic"]
    first = int(np.flatnonzero(clinic.rows["label"] == "Segmented neutrophils")[0])
    row = int(np.flatnonzero(data.rows["id"] == f"clinic:{clinic.rows['id'][first]}")[0])
    assert data.classes[int(data.labels[row])] == "NEUTROPHIL"
    assert data.rows["lab_label"][row] == "Segmented neutrophils"
    assert torch.equal(data.images[row], clinic.images[first])
    # ids and groups are the lab's, prefixed: two labs' patients P0 never merge; no group: each image its own
    assert data.rows["id"].is_unique
    assert set(data.rows.loc[data.rows[labs.LAB] == "clinic", "group"]) == {f"clinic:P{i}" for i in range(8)}
    smears = data.rows[data.rows[labs.LAB] == "smears"]
    assert list(smears["group"]) == list(smears["id"])


def test_assembly_refuses_what_cannot_be_compared(three_labs):
    with pytest.raises(ValueError, match="at least two"):
        labs.assemble({"atlas": three_labs["atlas"]})
    with pytest.raises(ValueError, match="differ in size"):
        labs.assemble({"atlas": three_labs["atlas"], "big": lab(SPELLINGS["atlas"], (4, 4, 4, 4), (0, 0, 0), size=24)})
    other = lab(["platelet", "erythroblast"], (4, 4), (0, 0, 0))
    with pytest.raises(ValueError, match="share no class: atlas: .*; other: platelet, erythroblast"):
        labs.assemble({"atlas": three_labs["atlas"], "other": other})
    with pytest.raises(ValueError, match="no lab 'nowhere'"):
        labs.held_out_split(labs.assemble(three_labs), "nowhere")


# ---------------------------------------------------------------------------------------- lab balance

def test_every_lab_weighs_the_same_per_epoch_and_classes_balance_within_a_lab(assembled):
    data = assembled
    everything = np.arange(len(data))
    positions = data.training_indices(everything)
    per_lab = pd.Series(data.lab_of(positions)).value_counts()
    assert per_lab.nunique() == 1  # exactly one weight per lab
    assert set(positions) == set(everything)  # every training image is seen at least once an epoch
    for lab_name in data.labs:
        mine = positions[data.lab_of(positions) == lab_name]
        per_class = np.bincount(data.labels.numpy()[mine], minlength=4)
        assert per_class.max() / per_class.min() < 2.5, (lab_name, per_class)  # within rounding of equal
    assert np.array_equal(positions, data.training_indices(everything))  # repeatable
    assert np.array_equal(data.training_indices(everything, oversample=False), everything)
    # a split's training part: only its positions, its labs alike
    split = labs.held_out_split(data, "clinic", seed=1)
    some = data.training_indices(split.train)
    assert set(some) <= set(split.train) and pd.Series(data.lab_of(some)).value_counts().nunique() == 1


# --------------------------------------------------------------------------------------------- splits

def test_a_held_out_lab_is_the_whole_test_part_and_groups_never_straddle(assembled):
    data = assembled
    groups = data.rows["group"].to_numpy()
    for held in data.labs:
        split = labs.held_out_split(data, held, seed=3)
        assert np.array_equal(np.sort(split.test), data.positions(held))
        assert held not in set(data.lab_of(split.train)) | set(data.lab_of(split.val))
        assert set(data.lab_of(split.val)) == set(data.labs) - {held}  # every training lab validates
        assert not set(groups[split.train]) & set(groups[split.val])
        assert len(split.train) + len(split.val) + len(split.test) == len(data)
        table = labs.split_table(data, split)
        assert table.loc[held, "test"] == len(split.test) and table.loc[held, ["train", "validation"]].sum() == 0
    alone = labs.single_lab_split(data, "clinic", seed=3)
    parts = [alone.train, alone.val, alone.test]
    assert all(set(data.lab_of(p)) == {"clinic"} for p in parts)
    assert sum(map(len, parts)) == len(data.positions("clinic"))
    assert all(not set(groups[a]) & set(groups[b]) for i, a in enumerate(parts) for b in parts[i + 1:])
    everywhere = labs.all_labs_split(data, seed=3)  # each lab's own parts, joined: the same test images
    assert np.array_equal(everywhere.test[data.lab_of(everywhere.test) == "clinic"], alone.test)
    assert set(data.lab_of(everywhere.val)) == set(data.labs)
    assert sorted(np.concatenate([everywhere.train, everywhere.val, everywhere.test])) == list(range(len(data)))


def test_cells_side_by_side_leave_a_blank_where_a_lab_has_too_few(three_labs):
    few = lab(SPELLINGS["smears"], (2, 2, 1, 2, 1), (0, 0, 0))  # a single monocyte
    fig = labs.side_by_side(labs.assemble({"atlas": three_labs["atlas"], "few": few}), per_class=2, seed=0)
    check_figure(fig)
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 4 * 2 * 2
    blank = [ax for ax in shown if (ax.get_images()[0].get_array() == 255).all()]
    assert [ax.get_title() for ax in blank] == ["few: monocyte"]


# ------------------------------------------------------------------------------------------- a LOLO run

def _tiny(num_classes: int, pretrained: bool) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
    model.normalization = {"mean": [0.5] * 3, "std": [0.25] * 3}
    return model


def test_methods_are_checked_before_any_training():
    assert lolo.checked_methods(["adabn", "none", "reinhard+adabn"]) == ["none", "adabn", "reinhard+adabn"]
    with pytest.raises(ValueError, match="unknown adaptation"):
        lolo.checked_methods(["none", "stainless"])
    with pytest.raises(ValueError, match="one stain normalisation"):
        lolo.checked_methods(["reinhard+macenko"])


def test_the_page_recipe_sits_below_what_the_caller_sets(tmp_path):
    smoke = config.resolve("smoke", None, tmp_path, dataset="labs", model="resnet18")
    recipe = config.DATASET_DEFAULTS[("smoke", "labs")]
    assert (smoke.image_size, smoke.train.epochs, smoke.mode) == (recipe["image_size"], recipe["epochs"], "crop")
    mine = config.resolve("smoke", None, tmp_path, dataset="labs", model="resnet18", image_size=48, epochs=None)
    assert mine.image_size == 48 and mine.train.epochs == recipe["epochs"]


def test_a_tiny_lolo_run_scores_every_lab_and_its_saved_predictions_recompute_every_number(
        assembled, tmp_path, monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "tiny", models.ModelSpec(_tiny, 8, ""))
    settings = config.resolve("smoke", output_dir=tmp_path, image_size=16, epochs=2, batch_size=16, bootstrap=50)
    both = "reinhard+adabn"  # one method of two steps: every path of the scoring, in few cells
    result = lolo.leave_one_lab_out(assembled, "tiny", settings, methods=[both], progress=False)
    held_out = [c for c in result.cells if c.images == lolo.HELD_OUT]
    assert [(c.trained_on, c.tested_on, c.method) for c in held_out][:2] == [
        ("smears+clinic", "atlas", "none"), ("smears+clinic", "atlas", both)]
    assert len(held_out) == 6 and len(result.cells) == 6 + 3 * (1 + 2 * 2) + 3
    everywhere = [c for c in result.cells if c.trained_on == "atlas+smears+clinic"]  # the published model
    assert [(c.tested_on, c.images, c.method) for c in everywhere] == [(lab, lolo.AT_HOME, "none")
                                                                       for lab in assembled.labs]
    for cell in everywhere:  # each lab's test part: the images that lab's own model is tested on
        alone = next(c for c in result.cells if c.trained_on == cell.tested_on == c.tested_on)
        assert np.array_equal(cell.evaluation.ids, alone.evaluation.ids)
    assert lolo.any_lab_checkpoint(result.folder) == result.folder / "atlas+smears+clinic" / "best.pt"
    assert lolo.any_lab_checkpoint(result.folder).is_file()
    (tmp_path / publish.MARKER).write_text(json.dumps({"run": "."}))  # as if this run were the published one
    assert published_models.resolve("any-lab", tmp_path) == lolo.any_lab_checkpoint(result.folder)
    for cell in held_out:  # the whole held-out lab, every time
        assert len(cell.evaluation.ids) == (assembled.rows[labs.LAB] == cell.tested_on).sum()
    trained = lolo.training_table(result)
    for name in ("smears+clinic", "atlas+clinic", "atlas+smears"):
        assert trained.loc[name, "positions per epoch"].nunique() == 1  # lab-balanced epochs, as fit trained them
    rounds = ("smears+clinic", "atlas+clinic", "atlas+smears")
    share = max(trained.loc[name, "positions per epoch"].max() for name in rounds)
    for lab in assembled.labs:  # a lab alone gets the steps a LOLO round gave each lab, not its own few
        assert trained.loc[lab, "positions per epoch"].tolist() == [share]
    assert (trained.loc["atlas+smears+clinic", "positions per epoch"] >= share).all()
    assert (result.folder / "atlas+smears" / "best.pt").is_file()
    record = json.loads((result.folder / lolo.RECORD).read_text())
    assert record["settings"]["image_size"] == 16 and record["methods"] == ["none", both]
    assert record["left_out"][0] == {labs.LAB: "smears", "class left out": "BASOPHIL", "images": 3}

    table = lolo.scores(result.cells, n=50, seed=0)
    again = lolo.scores(lolo.load_cells(result.folder), n=50, seed=0)
    key = ["trained on", "tested on", "method", "images"]
    pd.testing.assert_frame_equal(table.sort_values(key).reset_index(drop=True),
                                  again.sort_values(key).reset_index(drop=True), check_exact=False, rtol=1e-9)
    assert lolo.conclusion(result.cells, table) == lolo.conclusion(lolo.load_cells(result.folder), again)

    shown = lolo.display_lolo(table)
    assert list(shown.index.get_level_values("held out").unique()) == assembled.labs
    assert shown.loc[("atlas", both), "macro-F1"].startswith(f"{table.loc[1, 'macro_f1']:.3f} [")
    matrices = lolo.matrices(table)
    assert list(matrices) == ["none", both]
    none = matrices["none"]
    assert list(none.index) == ["atlas", "smears", "clinic", "smears+clinic", "atlas+clinic", "atlas+smears",
                                "atlas+smears+clinic"]
    assert np.isfinite(none.loc["atlas+smears+clinic"]).all()
    assert list(none.columns) == assembled.labs and none.loc["smears+clinic"].isna().sum() == 2
    assert np.isfinite(np.diag(none.loc[assembled.labs, assembled.labs].to_numpy())).all()
    assert np.allclose(np.diag(matrices[both].iloc[:3]), np.diag(none.iloc[:3]))  # diagonal: its own test part
    check_figure(lolo.heatmap(table))
    recall = lolo.display_recall(lolo.per_class_recall(result.cells))
    assert list(recall.columns) == SHARED and len(recall) == 6
    text = lolo.conclusion(result.cells, table)
    assert text.count("held out**") == 3 and "McNemar's test on their errors: p = " in text
    assert "Averaged over the 3 held-out labs" in text
    assert "study's target" in text  # met or not, said with the numbers
    assert text.count("the best test-time method") + text.count("no test-time method helps") == 3
    rounds = table[(table["images"] == lolo.HELD_OUT)]
    assert "**not met**: 1 of 2" in lolo.travels_text(pd.DataFrame({
        "tested on": ["a", "b", "a"], "method": ["none", "none", "reinhard"], "macro_f1": [0.9, 0.5, 0.2]}))
    assert lolo.travels_text(rounds.assign(macro_f1=0.9)).startswith("Every held-out lab reaches")
    assert "**Trained on every lab** (atlas+smears+clinic" in text and text.count("(trained on it alone: ") == 3


def test_a_model_name_resolves_in_the_published_report_or_says_what_is_missing(tmp_path):
    existing = tmp_path / "mine.pt"
    existing.write_bytes(b"")
    assert published_models.resolve(existing, tmp_path) == existing  # a file is taken as it is
    with pytest.raises(FileNotFoundError, match="no such checkpoint file, and not a model name .*any-lab"):
        published_models.resolve(tmp_path / "missing.pt", tmp_path)
    with pytest.raises(FileNotFoundError, match="no complete run was promoted"):
        published_models.resolve("any-lab", tmp_path)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (tmp_path / publish.MARKER).write_text(json.dumps({"run": "runs/r1"}))
    with pytest.raises(FileNotFoundError, match="no leave-one-lab-out results"):
        published_models.resolve("any-lab", tmp_path)
    record = run / lolo.FOLDER / "resnet18" / lolo.RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({lolo.ANY_LAB: None}))
    with pytest.raises(FileNotFoundError, match="trained no model on every lab"):
        published_models.resolve("any-lab", tmp_path)
    record.write_text(json.dumps({lolo.ANY_LAB: "bccd+pbc+deepapl/best.pt"}))
    with pytest.raises(FileNotFoundError, match="leaves checkpoints out; `make report` trains it"):
        published_models.resolve("any-lab", tmp_path)


def test_recipes_are_compared_on_the_same_held_out_images(assembled, tmp_path, monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "tiny", models.ModelSpec(_tiny, 8, ""))
    folders = {}
    for name, jitter, colour in (("plain", 0.0, "rgb"), ("hed", 0.05, "lab")):
        settings = config.resolve("smoke", output_dir=tmp_path / name, image_size=16, epochs=1, batch_size=16,
                                  bootstrap=50, stain_jitter=jitter, input_colour=colour)
        folders[name] = lolo.leave_one_lab_out(assembled, "tiny", settings, single_lab=False, all_labs=False,
                                               methods=["adabn"], progress=False).folder
    table = lab_recipes.compare({"plain": tmp_path / "plain", "hed": folders["hed"]}, n=50)
    assert len(table) == 2 * 3 * 2 and list(table["stain_jitter"].unique()) == [0.0, 0.05]
    assert list(table["input_colour"].unique()) == ["rgb", "lab"]
    # the recipe's input colour is the saved model's: what evaluate and predict read it with
    assert {checkpoints.read_checkpoint(path)["metadata"]["normalization"].get("colour", "rgb")
            for path in folders["hed"].glob("*/best.pt")} == {"lab"}
    assert set(table["model"]) == {"tiny"}
    assert table.loc[table["recipe"] == "plain", "mcnemar_p"].isna().all()
    hed = table[table["recipe"] == "hed"]
    assert hed["mcnemar_p"].between(0, 1).all()
    plain = table[table["recipe"] == "plain"].set_index(["held out", "method"])["macro_f1"]
    change = hed.set_index(["held out", "method"])["macro_f1_change"]
    assert np.allclose(change, hed.set_index(["held out", "method"])["macro_f1"] - plain.loc[change.index])
    best, means = lab_recipes.chosen(table)
    assert best == means.idxmax() and list(means.index) == ["plain", "hed"]
    shown = lab_recipes.display_recipes(table)
    assert list(shown.columns) == ["plain", "hed", "hed: change", "hed: McNemar p"] and len(shown) == 6
    hed_recipe = config.TrainConfig(stain_jitter=0.05, input_colour="lab")
    sentence = lab_recipes.recipe_sentence(table, "tiny", hed_recipe)
    assert f"**{best}**" in sentence and ("this run trained it" in sentence) == (best == "hed")
    assert "(tiny, stain_jitter=0.05, input_colour=lab)" in sentence and "(tiny, stain_jitter=0, input_colour=rgb)" in sentence
    assert ("this run trained other, stain_jitter=0.05, input_colour=lab instead"
            in lab_recipes.recipe_sentence(table, "other", hed_recipe))
    assert "No recipe comparison" in lab_recipes.recipe_sentence(None, "tiny", config.TrainConfig())
    # standardised CIELAB input takes Reinhard's means and spreads out again: the page says so, for that recipe only
    assert "undoes most of what Reinhard" in sentence
    assert "Reinhard" not in lab_recipes.recipe_sentence(table, "tiny", config.TrainConfig())
    # a table written before input_colour existed reads as RGB
    table.drop(columns="input_colour").to_csv(tmp_path / "old.csv", index=False)
    monkeypatch.setattr(lab_recipes, "RECIPE_TABLE", Path("old.csv"))
    assert set(lab_recipes.read_recipes(tmp_path)["input_colour"]) == {"rgb"}
    with pytest.raises(FileNotFoundError, match="no leave-one-lab-out run"):
        lab_recipes.lolo_folder(tmp_path / "nothing")
