"""The seed's cleaning rules, the split before oversampling, and bad labels files."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib import cleaning, datasets
from bloodlib.cleaning import CleaningParams, clean, parse_label, read_labels
from conftest import make_bccd


# --- the real data -------------------------------------------------------------------------------

def test_table_matches_the_data(bccd_manifest):
    result, _ = bccd_manifest
    table = result.table
    singles = table.loc[cleaning.STEPS["unreadable"]]
    assert singles[["NEUTROPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "BASOPHIL"]].tolist() == [206, 88, 33, 20, 3]
    assert table.loc[cleaning.STEPS["rare_class"], "total"] == 347
    assert table.loc[cleaning.STEPS["rare_class"], "BASOPHIL"] == 0
    # the table is computed from the manifest: its last row is what was kept
    kept = result.kept["label"].value_counts()
    last = table.iloc[-1]
    assert all(last[c] == kept[c] for c in kept.index)
    assert last["total"] == len(result.kept)


def test_neutrophil_subsample_removes_ten_percent(bccd_manifest):
    result, _ = bccd_manifest
    before = result.table.loc[cleaning.STEPS["no_wbc_box"], "NEUTROPHIL"]
    after = result.table.loc[cleaning.STEPS["neutrophil_subsample"], "NEUTROPHIL"]
    assert before - after == round(0.1 * before)


def test_every_kept_image_in_exactly_one_split(bccd_manifest):
    result, _ = bccd_manifest
    kept = result.kept
    assert set(kept["split"]) == {"train", "val", "test"}
    assert kept["file"].is_unique and kept["group"].is_unique
    assert (result.manifest.loc[~result.manifest["kept"], "split"] == "").all()
    # stratified: every class is in every split
    assert (pd.crosstab(kept["label"], kept["split"]) > 0).all().all()
    # every kept image is in exactly one fold
    assert kept["fold"].between(0, result.params.folds - 1).all()


def test_same_seed_same_manifest(bccd_root, bccd_manifest):
    result, _ = bccd_manifest
    again, _ = datasets.clean_bccd(bccd_root, CleaningParams())
    pd.testing.assert_frame_equal(result.manifest, again.manifest)
    other, _ = datasets.clean_bccd(bccd_root, CleaningParams(seed=7))
    assert not other.manifest["split"].equals(result.manifest["split"])


def test_crop_rule_counts(bccd_manifest):
    result, boxes = bccd_manifest
    counts = datasets.box_rule_counts(result.manifest)
    assert counts.sum() == 347  # every single-label image that reached the box rule
    assert counts["no WBC box (dropped)"] == (result.manifest["reason"] == "no_wbc_box").sum()
    assert len(boxes) == 372  # the README's count of WBC boxes in BCCD_Dataset


def test_oversampling_touches_the_training_split_only(bccd_manifest):
    result, _ = bccd_manifest
    kept = result.kept
    classes = sorted(kept["label"].unique())
    labels = torch.tensor(kept["label"].map(classes.index).to_numpy())
    data = datasets.ImageSet(images=torch.zeros((len(kept), 3, 2, 2), dtype=torch.uint8), labels=labels,
                             classes=classes, rows=kept)
    train, val, test = (data.indices(s) for s in ("train", "val", "test"))
    repeated = data.training_indices(train)
    assert set(repeated) == set(train)  # only training positions, every one of them
    assert not set(repeated) & (set(val) | set(test))
    counts = np.bincount(data.labels.numpy()[repeated])
    assert counts.max() / counts.min() < 2  # rare classes repeated up to about the largest
    assert len(np.unique(val)) == len(val) and len(np.unique(test)) == len(test)


# --- label parsing and bad input -----------------------------------------------------------------

@pytest.mark.parametrize("raw, parts", [
    ("NEUTROPHIL", ("NEUTROPHIL",)),
    (" neutrophil ", ("NEUTROPHIL",)),
    ("NEUTROPHIL,NEUTROPHIL", ("NEUTROPHIL", "NEUTROPHIL")),
    ("NEUTROPHIL, EOSINOPHIL", ("NEUTROPHIL", "EOSINOPHIL")),
    ("", ()),
])
def test_parse_label(raw, parts):
    assert parse_label(raw) == parts


def test_unknown_category_names_file_and_value(tmp_path):
    make_bccd(tmp_path, {0: "NEUTROPHIL", 1: "PLATELET"})
    labels = read_labels(tmp_path / "dataset-master" / "labels.csv")
    with pytest.raises(ValueError, match=r"labels\.csv.*image 1.*'PLATELET'"):
        clean(labels, ["dataset-master/JPEGImages/BloodImage_00000.jpg"], source="labels.csv")


def test_missing_labels_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        read_labels(tmp_path / "labels.csv")


def test_wrong_columns_named(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,class\n1,NEUTROPHIL\n")
    with pytest.raises(ValueError, match=r"labels\.csv: missing column.*'Image'.*found \['id', 'class'\]"):
        read_labels(path)


def test_non_integer_image_id(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(",Image,Category\n,1,NEUTROPHIL\n,x2,MONOCYTE\n")
    with pytest.raises(ValueError, match=r"line 3: Image must be an integer"):
        read_labels(path)


def synthetic_labels(per_class: int = 8) -> dict[int, str]:
    labels, i = {}, 0
    for name in cleaning.CLASSES:
        for _ in range(per_class):
            labels[i] = name
            i += 1
    return labels


def test_truncated_jpeg_is_dropped_and_listed(tmp_path):
    labels = synthetic_labels()
    make_bccd(tmp_path, labels)
    victim = tmp_path / "dataset-master" / "JPEGImages" / "BloodImage_00003.jpg"
    victim.write_bytes(victim.read_bytes()[:200])
    result, _ = datasets.clean_bccd(tmp_path, CleaningParams(folds=3, neutrophil_drop_fraction=0))
    row = result.manifest.set_index("image_id").loc[3]
    assert not row["kept"] and row["reason"] == "unreadable"
    assert result.table.loc[cleaning.STEPS["unreadable"], "total"] == len(labels) - 1


def test_doubles_dropped_or_kept_when_same_class(tmp_path):
    labels = synthetic_labels()
    labels.update({100: "NEUTROPHIL, NEUTROPHIL", 101: "NEUTROPHIL,EOSINOPHIL", 102: ""})
    make_bccd(tmp_path, labels)
    seed_rule, _ = datasets.clean_bccd(tmp_path, CleaningParams(folds=3, neutrophil_drop_fraction=0))
    reasons = seed_rule.manifest.set_index("image_id")["reason"]
    assert reasons[100] == reasons[101] == "double_label" and reasons[102] == "empty_label"
    kept_same, _ = datasets.clean_bccd(
        tmp_path, CleaningParams(folds=3, neutrophil_drop_fraction=0, keep_same_class_doubles=True))
    row = kept_same.manifest.set_index("image_id").loc[100]
    assert row["kept"] and row["label"] == "NEUTROPHIL"


def test_class_too_small_to_split_is_named(tmp_path):
    labels = synthetic_labels()
    labels = {i: c for i, c in labels.items() if c != "MONOCYTE" or i % 8 < 2}  # 2 monocytes
    make_bccd(tmp_path, labels)
    with pytest.raises(ValueError, match=r"too small to split.*'MONOCYTE': 2"):
        datasets.clean_bccd(tmp_path, CleaningParams(folds=3, neutrophil_drop_fraction=0))


def test_raw_data_is_never_modified(tmp_path, monkeypatch):
    monkeypatch.setattr("bloodlib.config.cache_dir", lambda: tmp_path / "cache")
    root = make_bccd(tmp_path / "data", synthetic_labels(), boxes={i: [("WBC", 10, 10, 30, 30)] for i in range(32)})

    def snapshot():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    before = snapshot()
    datasets.clean_bccd(root, CleaningParams(folds=3))
    assert snapshot() == before
