"""The seed's cleaning rules, the split before oversampling, and bad labels files."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib.data import cleaning, datasets
from bloodlib.data.cleaning import CleaningParams, clean, parse_label, read_labels
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


def test_every_kept_image_tested_once_per_repeat_by_the_run_splits(bccd_root, tmp_path):
    """prepare() splits the cleaned images once; the manifest it writes records the fold of every kept image."""
    from bloodlib import config

    settings = config.resolve("smoke", data_dir=bccd_root, output_dir=tmp_path, image_size=16, folds=4, repeats=2)
    prepared = datasets.prepare(settings, progress=False)
    assert prepared.protocol == "cv" and len(prepared.splits) == 8
    manifest = datasets.manifest(prepared)
    kept = manifest[manifest["kept"]]
    assert kept["file"].is_unique and kept["group"].is_unique
    for column in ("test_fold_r1", "test_fold_r2"):
        assert kept[column].between(0, 3).all() and (manifest.loc[~manifest["kept"], column] == -1).all()
        assert (pd.crosstab(kept["label"], kept[column]) > 0).all().all()  # stratified: every class in every fold


def test_same_seed_same_manifest(bccd_root, bccd_manifest):
    result, _ = bccd_manifest
    again, _ = datasets.clean_bccd(bccd_root, CleaningParams())
    pd.testing.assert_frame_equal(result.manifest, again.manifest)
    other, _ = datasets.clean_bccd(bccd_root, CleaningParams(seed=7))
    assert not other.manifest["kept"].equals(result.manifest["kept"])  # another 10% of the neutrophils


def test_crop_rule_counts(bccd_manifest):
    result, boxes = bccd_manifest
    counts = datasets.box_rule_counts(result.manifest)
    assert counts.sum() == 347  # every single-label image that reached the box rule
    assert counts["no WBC box (dropped)"] == (result.manifest["reason"] == "no_wbc_box").sum()
    assert len(boxes) == 372  # the README's count of WBC boxes in BCCD_Dataset


def test_oversampling_touches_the_training_part_only(bccd_manifest, tmp_path):
    from bloodlib import config

    result, _ = bccd_manifest
    kept = result.kept
    classes = sorted(kept["label"].unique())
    labels = kept["label"].map(classes.index).to_numpy()
    settings = config.resolve("smoke", output_dir=tmp_path, folds=4)
    rows, planned, _ = datasets.split(kept, settings)
    data = datasets.ImageSet(images=torch.zeros((len(kept), 3, 2, 2), dtype=torch.uint8),
                             labels=torch.tensor(labels), classes=classes, rows=rows)
    for split in planned:
        repeated = data.training_indices(split.train)
        assert set(repeated) == set(split.train)  # only training positions, every one of them
        assert not set(repeated) & (set(split.val) | set(split.test))
        counts = np.bincount(labels[repeated])
        assert counts.max() / counts.min() < 2  # rare classes repeated up to about the largest
    table = datasets.oversampling_table(data, planned)
    assert list(table.index.names) == ["split", "class"] and len(table) == 4 * len(classes)
    first = table.loc[planned[0].name]
    assert first["training images"].sum() == len(planned[0].train)
    assert first["training images per epoch"].sum() == len(data.training_indices(planned[0].train))


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
    result, _ = datasets.clean_bccd(tmp_path, CleaningParams(neutrophil_drop_fraction=0))
    row = result.manifest.set_index("image_id").loc[3]
    assert not row["kept"] and row["reason"] == "unreadable"
    assert result.table.loc[cleaning.STEPS["unreadable"], "total"] == len(labels) - 1


def test_doubles_dropped_or_kept_when_same_class(tmp_path):
    labels = synthetic_labels()
    labels.update({100: "NEUTROPHIL, NEUTROPHIL", 101: "NEUTROPHIL,EOSINOPHIL", 102: ""})
    make_bccd(tmp_path, labels)
    seed_rule, _ = datasets.clean_bccd(tmp_path, CleaningParams(neutrophil_drop_fraction=0))
    reasons = seed_rule.manifest.set_index("image_id")["reason"]
    assert reasons[100] == reasons[101] == "double_label" and reasons[102] == "empty_label"
    kept_same, _ = datasets.clean_bccd(
        tmp_path, CleaningParams(neutrophil_drop_fraction=0, keep_same_class_doubles=True))
    row = kept_same.manifest.set_index("image_id").loc[100]
    assert row["kept"] and row["label"] == "NEUTROPHIL"


def test_class_too_small_to_split_is_named(tmp_path):
    from bloodlib import config

    labels = synthetic_labels()
    labels = {i: c for i, c in labels.items() if c != "MONOCYTE" or i % 8 < 2}  # 2 monocytes
    make_bccd(tmp_path, labels)
    result, _ = datasets.clean_bccd(tmp_path, CleaningParams(neutrophil_drop_fraction=0))
    settings = config.resolve("smoke", output_dir=tmp_path / "out", folds=3)
    with pytest.raises(ValueError, match=r"too small to split into 3 parts: \{'MONOCYTE': 2\}"):
        datasets.split(result.kept, settings)


def test_raw_data_is_never_modified(tmp_path):
    root = make_bccd(tmp_path / "data", synthetic_labels(), boxes={i: [("WBC", 10, 10, 30, 30)] for i in range(32)})

    def snapshot():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    before = snapshot()
    datasets.clean_bccd(root, CleaningParams())
    assert snapshot() == before


def test_prepare_hands_torch_arrays_it_may_own(bccd_root, tmp_path):
    """pandas' copy-on-write hands out read-only arrays; prepare() copies the labels, so no notebook shows torch's
    'NumPy array is not writable' warning."""
    import warnings

    from bloodlib import config

    settings = config.resolve("smoke", data_dir=bccd_root, output_dir=tmp_path, image_size=16)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writable.*")
        prepared = datasets.prepare(settings, progress=False)
    assert prepared.data.labels.dtype == torch.long
