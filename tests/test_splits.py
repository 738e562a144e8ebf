"""One function makes every split: k-fold (repeated, grouped, stratified), the dataset's own test set, holdout;
the manifest records them, and the models are tested on exactly those folds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloodlib import config, evaluation
from bloodlib.data import datasets, splits
from bloodlib.study import experiment


def labels_and_groups(n_per_class=(24, 16, 14, 40), groups_of=1):
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(n_per_class)])
    return labels, np.array([f"g{i // groups_of}" for i in range(len(labels))])


def test_every_image_tested_once_per_repeat_by_a_model_that_never_saw_it():
    labels, groups = labels_and_groups()
    planned = splits.plan(labels, groups, folds=3, repeats=2, seed=1)
    assert len(planned) == 6 and splits.protocol(np.full(len(labels), ""), 3) == "cv"
    for repeat in (0, 1):
        tested = np.concatenate([s.test for s in planned if s.repeat == repeat])
        assert sorted(tested) == list(range(len(labels)))
    for s in planned:
        assert not set(s.test) & (set(s.train) | set(s.val))
        assert not set(s.train) & set(s.val)
        assert len(set(labels[s.val])) == 4  # stratified: every class selects the epoch
    first, second = ([s.fold for s in planned if s.repeat == r] for r in (0, 1))
    assert first == second == [0, 1, 2]
    assert not all(np.array_equal(a.test, b.test) for a, b in zip(planned[:3], planned[3:]))  # other shuffles


@pytest.mark.parametrize("folds", [1, 3])
def test_groups_never_straddle_a_boundary(folds):
    labels, groups = labels_and_groups((24, 16, 12, 40), groups_of=4)
    for s in splits.plan(labels, groups, folds=folds, seed=0):
        parts = [set(groups[p]) for p in (s.train, s.val, s.test)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]


def test_one_fold_is_a_stratified_holdout():
    labels, groups = labels_and_groups((40, 40, 40, 80))
    (split,) = splits.plan(labels, groups, folds=1, seed=0)
    assert split.name == "holdout"
    assert len(split.train) + len(split.val) + len(split.test) == len(labels)
    assert abs(len(split.test) / len(labels) - splits.TEST_FRACTION) < 0.03
    for part in (split.train, split.val, split.test):
        assert set(labels[part]) == {0, 1, 2, 3}


def test_the_datasets_own_test_set_means_holdout():
    labels, groups = labels_and_groups()
    own = np.array(["train"] * 60 + ["test"] * 25 + ["test_simple"] * 9, dtype=object)
    assert splits.protocol(own, folds=5) == "holdout"
    (split,) = splits.plan(labels, groups, own, folds=5)
    assert set(split.test) == set(np.flatnonzero(own == "test"))
    assert set(split.train) | set(split.val) == set(np.flatnonzero(own == "train"))
    assert list(splits.further_sets(own)) == ["test_simple"]


def test_a_class_too_small_to_split_is_a_clear_error():
    labels, groups = labels_and_groups((20, 2, 20, 20))
    with pytest.raises(ValueError, match=r"too small to split into 3 parts: \{1: 2\}"):
        splits.plan(labels, groups, folds=3)


def test_the_table_counts_every_part():
    labels, groups = labels_and_groups()
    planned = splits.plan(labels, groups, folds=2)
    table = splits.table(planned, labels, list("ABCD"))
    assert list(table.index.get_level_values("part")[:3]) == ["train", "validation", "test"]
    tested = table.xs("test", level="part")
    assert tested["total"].sum() == len(labels) and list(tested[list("ABCD")].sum()) == [24, 16, 14, 40]


def test_the_manifest_records_the_folds_the_models_were_tested_on(tmp_path):
    """What notebook 02 shows and writes (manifest.csv) is what the training notebooks tested on."""
    from test_experiment import synthetic_set

    data = synthetic_set()
    data.rows["split"] = ""
    settings = config.resolve(profile="smoke", output_dir=tmp_path, epochs=1, folds=3, repeats=2, image_size=32,
                              bootstrap=20)
    rows, planned, how = datasets.split(data.rows, settings)
    data.rows = rows
    cleaning_result = type("Cleaning", (), {"manifest": rows.assign(kept=True)})()
    prepared = datasets.Prepared(settings=settings, root=tmp_path, cleaning=cleaning_result, data=data, boxes=None,
                                 splits=planned, protocol=how)
    manifest = datasets.manifest(prepared)
    assert {"test_fold_r1", "test_fold_r2"} <= set(manifest.columns)

    experiment.run_model(prepared, "resnet18", pretrained="scratch", progress=False)
    tested = evaluation.load_evaluation(tmp_path / "models" / "resnet18")
    predicted = pd.DataFrame({"id": tested.ids, "repeat": tested.repeat, "fold": tested.fold})
    for repeat in (0, 1):
        used = predicted[predicted["repeat"] == repeat].set_index("id")["fold"].sort_index()
        recorded = manifest.set_index("id")[f"test_fold_r{repeat + 1}"].sort_index()
        pd.testing.assert_series_equal(used, recorded, check_names=False, check_dtype=False)
