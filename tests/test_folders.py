"""Datasets beyond the 347 smears: dataset2-master (grouped by source smear) and folder-per-class / CSV lists."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bloodlib import config
from bloodlib.data import datasets, folders, images, sources
from bloodlib.data.cleaning import CleaningParams
from conftest import augment, data_root

CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
SMALL = CleaningParams()


def run_splits(result, tmp_path, folds=3) -> tuple[pd.DataFrame, list, str]:
    """The kept rows with the run's splits (bloodlib.data.splits.plan, as datasets.prepare makes them)."""
    return datasets.split(result.kept, config.resolve("smoke", output_dir=tmp_path / "out", folds=folds))


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kaggle_root() -> Path:
    root = data_root()
    if not (root / folders.KAGGLE_IMAGES / "TRAIN").is_dir():
        pytest.skip(f"dataset2-master not found under {root} (set BLOODLIB_DATA or provide ../shared/data/bccd)")
    return root


@pytest.fixture(scope="module")
def kaggle(kaggle_root):
    """The real dataset2-master cleaned once for the module (the index and groups are cached in the session's cache)."""
    return folders.clean_kaggle_augmented(kaggle_root, CleaningParams(), progress=False)


def make_folder(root: Path, smears: dict[str, list[Path]]) -> Path:
    for label, paths in smears.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copy(path, root / label / path.name)
    return root


# --- the dataset parameter ---------------------------------------------------------------------

def test_parse_dataset():
    assert sources.parse_dataset("bccd") == ("bccd", None)
    assert sources.parse_dataset(" Kaggle-Augmented ") == ("kaggle-augmented", None)
    assert sources.parse_dataset("folder:/data/cells") == ("folder", "/data/cells")
    assert sources.parse_dataset("csv:/data/list.csv") == ("csv", "/data/list.csv")
    assert sources.parse_dataset("folder:~/cells")[1] == str(Path("~/cells").expanduser())
    for bad in ("imagenet", "kaggle", "folder:", "csv", "", "bccd:/x"):
        with pytest.raises(ValueError, match="unknown dataset.*'kaggle-augmented'.*folder:"):
            sources.parse_dataset(bad)


# --- dataset2-master ---------------------------------------------------------------------------

def test_kaggle_splits_follow_the_folders(kaggle, tmp_path):
    m = kaggle.manifest
    assert set(m["split"]) == {"train", "test", "test_simple", ""}  # the dataset's own split
    kept, planned, how = run_splits(kaggle, tmp_path, folds=4)
    assert how == "holdout" and len(planned) == 1  # TEST is the test set, whatever `folds` says
    assert kept.loc[kept["subset"] == "TRAIN", "split"].isin(["train", "val"]).all()
    assert (kept.loc[kept["subset"] == "TEST", "split"] == "test").all()
    assert (kept.loc[kept["subset"] == "TEST_SIMPLE", "split"] == "test_simple").all()
    assert kept.groupby("subset").size().to_dict() == {"TRAIN": 9957, "TEST": 2487, "TEST_SIMPLE": 69}
    assert kept["id"].is_unique and set(kept["label"]) == set(CLASSES)
    # validation: about 1/7 of TRAIN, every class in it
    val = kept[kept["split"] == "val"]
    assert 0.08 < len(val) / 9957 < 0.22
    assert set(val["label"]) == set(CLASSES)
    # no annotated boxes: crop mode finds the WBC by its stain in nearly every image, else takes the centre
    assert (kept["wbc_boxes"] == 0).all() and (kept["box_source"] == "stain").mean() > 0.99
    assert (kept.loc[kept["box_source"] == "centre", "box"] == (40.0, 0.0, 280.0, 240.0)).all()
    sources = folders.box_sources(kaggle)
    assert sources["images"].sum() == len(kept) and sources.loc["WBC found by its stain", "images"] > 12_000


def test_kaggle_no_source_smear_in_two_splits(kaggle, tmp_path):
    kept, _, _ = run_splits(kaggle, tmp_path)
    train = set(kept.loc[kept["split"] == "train", "group"])
    val = set(kept.loc[kept["split"] == "val", "group"])
    assert train and val and not train & val
    # the groups are sources, not single files or whole classes (277 smears made TRAIN)
    n_train_groups = kept.loc[kept["subset"] == "TRAIN", "group"].nunique()
    assert 100 <= n_train_groups <= 600


def test_kaggle_exact_duplicates(kaggle):
    """TEST_SIMPLE/EOSINOPHIL holds two pairs of byte-identical files: the second copy of each is dropped."""
    m = kaggle.manifest
    dropped = m[m["reason"] != ""]
    assert (dropped["reason"] == "duplicate").all()
    pairs = dict(zip(dropped["file"].map(lambda f: Path(f).name), dropped["duplicate_of"].map(lambda f: Path(f).name)))
    assert pairs == {"_4_8814.jpeg": "_0_5239.jpeg", "_6_7701.jpeg": "_1_5031.jpeg"}
    assert set(dropped["subset"]) == {"TEST_SIMPLE"} and set(dropped["raw_label"]) == {"EOSINOPHIL"}
    assert len(dropped) == 2  # nothing else is left out
    table = kaggle.table
    assert table.loc["files found", "total"] == 12515
    assert table.loc[folders.STEPS["duplicate"], "total"] == 12513
    assert table.iloc[-1]["total"] == len(kaggle.kept)


def test_folder_of_augmented_copies_grouped_by_similarity(tmp_path, smears):
    """group_by="similarity": the copies of one smear stay in one group, so in one part of every split."""
    rng = np.random.default_rng(1)
    root = tmp_path / "cells"
    for label in ("EOSINOPHIL", "NEUTROPHIL"):
        (root / label).mkdir(parents=True)
        for source, smear in enumerate(smears[label][:5]):
            for copy, image in enumerate(augment(smear, 6, rng)):
                image.save(root / label / f"s{source}_{copy}.jpeg", quality=90)
    result, _ = folders.clean_folder(root, SMALL, group_by="similarity", cache=tmp_path / "index", progress=False)
    kept, planned, _ = run_splits(result, tmp_path)
    kept = kept.assign(source=lambda f: f["label"] + f["file"].str.extract(r"/s(\d)_", expand=False))
    assert kept.groupby("source")["group"].nunique().max() == 1  # no smear split over groups
    assert kept.groupby("source")["test_fold_r1"].nunique().max() == 1
    source = kept["source"].to_numpy()
    for split in planned:
        parts = [set(source[p]) for p in (split.train, split.val, split.test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]


# --- folder-per-class and CSV datasets ----------------------------------------------------------

def test_folder_dataset(tmp_path, smears):
    root = make_folder(tmp_path / "cells", smears)
    (root / "MONOCYTE" / "x.jpg").write_text("Bud1 desktop services store")  # a .DS_Store saved as .jpg
    (root / "MONOCYTE" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    data = smears["NEUTROPHIL"][1].read_bytes()
    (root / "NEUTROPHIL" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    shutil.copy(smears["LYMPHOCYTE"][0], root / "LYMPHOCYTE" / "copy_of_first.jpg")  # same bytes, same class
    (root / ".ipynb_checkpoints").mkdir()  # not a class

    result, data_root_ = folders.clean_folder(root, SMALL, cache=tmp_path / "index", progress=False)
    assert data_root_ == root.resolve()
    m = result.manifest.set_index("file")
    assert m.loc["MONOCYTE/x.jpg", "reason"] == "not_an_image"
    assert m.loc["MONOCYTE/.DS_Store", "reason"] == "not_an_image"
    assert m.loc["NEUTROPHIL/truncated.jpg", "reason"] == "unreadable"
    assert m.loc["LYMPHOCYTE/copy_of_first.jpg", "reason"] == "duplicate"
    assert m.loc["LYMPHOCYTE/copy_of_first.jpg", "duplicate_of"] == f"LYMPHOCYTE/{smears['LYMPHOCYTE'][0].name}"
    kept = result.kept
    assert len(kept) == 24 and result.classes == CLASSES
    assert (result.manifest["split"] == "").all()  # a folder brings no split of its own: cross-validation
    folds, _, how = run_splits(result, tmp_path)
    assert how == "cv" and (pd.crosstab(folds["label"], folds["test_fold_r1"]) > 0).all().all()  # stratified
    assert kept["group"].is_unique
    # no annotated boxes: crop mode centres on the WBC found by its stain, which lies inside the VOC WBC box
    assert (kept["box_source"] == "stain").all()
    voc = images.wbc_boxes(data_root())
    for file, box in zip(kept["file"], kept["box"]):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        truth = voc[voc["file"] == f"dataset-master/JPEGImages/{Path(file).name}"]
        assert ((truth["xmin"] <= cx) & (cx <= truth["xmax"]) & (truth["ymin"] <= cy) & (cy <= truth["ymax"])).any(), file
    # the table counts every step, from the files found to what is kept
    table = result.table
    assert table.loc["files found", "total"] == 28
    assert table.loc[folders.STEPS["not_an_image"], "MONOCYTE"] == 6
    assert table.iloc[-1]["total"] == 24
    # decoding goes through the image cache as for BCCD
    crops = images.load_cached(kept.head(2), data_root_, "crop", 32, progress=False)
    assert crops.shape == (2, 3, 32, 32) and crops.std() > 5


def test_copies_under_two_classes_are_all_dropped(tmp_path, smears):
    root = make_folder(tmp_path / "cells", smears)
    shutil.copy(smears["EOSINOPHIL"][0], root / "NEUTROPHIL" / "looks_like_a_neutrophil.jpg")
    result, _ = folders.clean_folder(root, SMALL, cache=tmp_path / "index", progress=False)
    m = result.manifest.set_index("file")
    both = [f"EOSINOPHIL/{smears['EOSINOPHIL'][0].name}", "NEUTROPHIL/looks_like_a_neutrophil.jpg"]
    assert (m.loc[both, "reason"] == "conflicting_duplicate").all() and not m.loc[both, "kept"].any()
    assert result.table.loc[folders.STEPS["conflicting_duplicate"], "total"] == 24 + 1 - 2


def test_duplicates_kept_apart_never_straddle_splits(tmp_path):
    """Byte-identical files in one class share a group whatever the split, via the content hash."""
    rng = np.random.default_rng(1)
    root = tmp_path / "cells"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    for i in (0, 1):  # two more copies of a-0.png
        shutil.copy(root / "a" / "0.png", root / "a" / f"copy{i}.png")
    result, _ = folders.clean_folder(root, SMALL, cache=tmp_path / "index", progress=False)
    assert result.kept["sha256"].is_unique and len(result.kept) == 24  # the copies are dropped, the first kept
    kept, _, _ = run_splits(result, tmp_path, folds=1)
    assert kept.groupby("group")["split"].nunique().max() == 1


def test_csv_dataset(tmp_path, smears):
    make_folder(tmp_path / "images", smears)
    rows = [(f"images/{label}/{p.name}", label) for label, paths in smears.items() for p in paths]
    outside = tmp_path / "elsewhere" / "extra.jpg"
    outside.parent.mkdir()
    shutil.copy(smears["MONOCYTE"][0], outside)
    rows += [(str(outside), "MONOCYTE"),  # absolute, outside the CSV's folder; same bytes as a listed MONOCYTE
             ("images/missing.jpg", "LYMPHOCYTE"), (f"images/EOSINOPHIL/{smears['EOSINOPHIL'][1].name}", "")]
    lists = tmp_path / "lists"
    lists.mkdir()
    csv = lists / "cells.csv"
    pd.DataFrame(rows, columns=["path", "label"]).assign(path=lambda f: ["../" + p if not p.startswith("/") else p
                                                                         for p in f["path"]]).to_csv(csv, index=False)
    result, root = folders.clean_folder(csv, SMALL, cache=tmp_path / "index", progress=False)
    assert root == tmp_path.resolve()  # the folder holding every listed file
    m = result.manifest.set_index("id")
    assert m.loc["images/missing.jpg", "reason"] == "missing_file"
    assert m.loc["elsewhere/extra.jpg", "reason"] == "duplicate"
    eos = f"images/EOSINOPHIL/{smears['EOSINOPHIL'][1].name}"
    assert m.loc[f"{eos}#2", "reason"] == "empty_label"  # listed twice: the second time without a label
    assert len(result.kept) == 24 and (result.kept["file"].map(lambda f: (root / f).is_file())).all()


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        folders.clean_folder(tmp_path / "nowhere", cache=False)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="flat: no class folders"):
        folders.clean_folder(tmp_path / "flat", cache=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.jpg,x\n")
    with pytest.raises(ValueError, match="bad.csv: expected columns 'path,label'"):
        folders.clean_folder(bad, cache=False)
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(one / "only" / f"{i}.png")
    with pytest.raises(ValueError, match="1 class"):
        folders.clean_folder(one, SMALL, cache=False, progress=False)
    with pytest.raises(FileNotFoundError, match="dataset2-master"):
        folders.clean_kaggle_augmented(tmp_path, cache=False)


def test_crop_mode_falls_back_to_the_centre_without_a_stained_cell(tmp_path):
    """Images with no purple blob (not a stained smear) keep the centred square, and the manifest says so."""
    root = tmp_path / "plain"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            grey = rng.integers(100, 200, (60, 80, 1), dtype=np.uint8).repeat(3, axis=2)
            Image.fromarray(grey).save(root / label / f"{i}.png")
    kept = folders.clean_folder(root, SMALL, cache=False, progress=False)[0].kept
    assert (kept["box_source"] == "centre").all()
    assert set(kept["box"]) == {(10.0, 0.0, 70.0, 60.0)}  # the centred square of 80 x 60
