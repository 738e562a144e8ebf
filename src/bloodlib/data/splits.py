"""Every split of the study, made by one function: :func:`plan`.

Which images train, which choose the epoch (validation) and which test a model is decided here and nowhere
else; the manifest, notebook 02's tables and the training notebooks all show the list :func:`plan` returns,
and :func:`bloodlib.study.experiment.run_model` trains on that same list. Three protocols:

- **the dataset's own test set** (``kaggle-augmented``: TEST): a grouped, stratified validation part of the
  dataset's training images selects the epoch; further sets of the dataset (TEST_SIMPLE) are scored apart;
- **k-fold cross-validation**, repeated ``repeats`` times with other shuffles (``folds > 1``, the default):
  every image is tested once per repeat by a model that never saw it, and inside each fold a grouped,
  stratified validation part of the training folds (never the test fold) selects the epoch;
- **a holdout split** (``folds == 1``): stratified train / validation / test parts.

Every split is stratified by class and grouped: copies of one source image (augmented copies, byte-identical
files) share a group, and a group never straddles a boundary. Splitting happens before any oversampling,
which repeats training positions only (:meth:`bloodlib.data.datasets.ImageSet.training_indices`).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

VAL_FRACTION = 0.15  # of the training images, to choose the epoch
TEST_FRACTION = 0.15  # of all images, for the holdout protocol only


@dataclasses.dataclass(frozen=True)
class Split:
    """One training run: positions (into the kept manifest rows) that train, validate and test."""
    name: str  # "fold 1/5, repeat 1" or "holdout"
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fold: int = 0
    repeat: int = 0


def protocol(own_split: pd.Series | np.ndarray, folds: int) -> str:
    """``"holdout"`` where the dataset brings its own test set or ``folds == 1``, else ``"cv"``."""
    if (np.asarray(own_split) == "test").any() or folds < 2:
        return "holdout"
    return "cv"


def plan(labels, groups, own_split=None, *, folds: int, repeats: int = 1, seed: int = 42,
         val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION) -> list[Split]:
    """The splits every model of a run is trained and tested on.

    ``labels`` and ``groups`` are one entry per kept image; ``own_split`` the dataset's own assignment
    ("train", "test", a further set such as "test_simple", or "" where it has none). Deterministic for the
    same inputs and seed.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    own_split = np.full(len(labels), "", dtype=object) if own_split is None else np.asarray(own_split, dtype=object)
    if protocol(own_split, folds) == "holdout":
        if (own_split == "test").any():  # the dataset's own test set
            pool, test = np.flatnonzero(own_split == "train"), np.flatnonzero(own_split == "test")
            _check_classes(labels[pool], groups[pool], 2)
            val_share = val_fraction
        else:
            pool = np.flatnonzero(own_split == "")
            _check_classes(labels[pool], groups[pool], 3)  # one source image each for train, validation, test
            pool, test = _part(pool, labels, groups, test_fraction, seed)
            val_share = val_fraction / (1 - test_fraction)
        train, val = _part(pool, labels, groups, val_share, seed)
        return [Split("holdout", train, val, test)]
    _check_classes(labels, groups, folds)
    splits = []
    for repeat in range(repeats):
        outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        for fold, (rest, test) in enumerate(outer.split(labels, labels, groups)):
            train, val = _part(rest, labels, groups, val_fraction, seed + 1000 * repeat + fold)
            splits.append(Split(f"fold {fold + 1}/{folds}, repeat {repeat + 1}", train, val, test, fold, repeat))
    return splits


def further_sets(own_split) -> dict[str, np.ndarray]:
    """Positions of the dataset's further test sets (kaggle-augmented's "test_simple"), scored apart."""
    own_split = np.asarray(own_split, dtype=object)
    return {name: np.flatnonzero(own_split == name) for name in sorted(set(own_split) - {"", "train", "val", "test"})}


def _part(positions: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified, grouped ``fraction`` of ``positions`` (about 1 / round(1 / fraction); larger where the
    largest class has fewer groups than round(1 / fraction)): (rest, part)."""
    groups_per_class = pd.Series(groups[positions]).groupby(labels[positions]).nunique()
    parts = max(2, min(round(1 / fraction), int(groups_per_class.max())))
    splitter = StratifiedGroupKFold(n_splits=parts, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer groups than splits is still split as well as can be
        warnings.simplefilter("ignore", UserWarning)
        rest, part = next(splitter.split(positions, labels[positions], groups[positions]))
    return positions[rest], positions[part]


def _check_classes(labels: np.ndarray, groups: np.ndarray, folds: int) -> None:
    """Every class needs at least ``folds`` groups (source images) to appear in every test fold."""
    per_class = pd.Series(groups).groupby(pd.Series(labels)).nunique()
    if len(per_class) < 2:
        raise ValueError(f"{len(per_class)} class(es) to split ({list(per_class.index)}): a classifier needs at least 2")
    small = per_class[per_class < folds]
    if len(small):
        raise ValueError(f"class(es) too small to split into {folds} parts: {small.to_dict()} source images; "
                         f"lower `folds` or drop those classes")


# ------------------------------------------------------------------------------------ what the pages show

def assignment(splits: list[Split], n: int) -> pd.DataFrame:
    """One row per kept image: for cross-validation the fold it was tested in, per repeat (``test_fold_r1``,
    ...); for a holdout its part (``holdout``: train, val, test, or "" for images the split does not use)."""
    if splits and splits[0].name == "holdout":
        part = np.full(n, "", dtype=object)
        for name, positions in (("train", splits[0].train), ("val", splits[0].val), ("test", splits[0].test)):
            part[positions] = name
        return pd.DataFrame({"holdout": part})
    columns = {}
    for split in splits:
        column = columns.setdefault(f"test_fold_r{split.repeat + 1}", np.full(n, -1))
        column[split.test] = split.fold
    return pd.DataFrame(columns)


def table(splits: list[Split], labels, classes: list[str]) -> pd.DataFrame:
    """Images per class in each split's training, validation and test part (rows: split and part)."""
    labels = np.asarray(labels)
    rows = {}
    for split in splits:
        for part, positions in (("train", split.train), ("validation", split.val), ("test", split.test)):
            rows[(split.name, part)] = np.bincount(labels[positions], minlength=len(classes))
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=classes)
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["split", "part"])
    frame["total"] = frame.sum(axis=1)
    return frame
