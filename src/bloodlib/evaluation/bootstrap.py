"""Bootstrap intervals of the headline metrics on a small, imbalanced test set.

Test images are resampled with replacement within each true class (a stratified bootstrap, so that every
class keeps its count); where they are augmented copies of fewer source smears, whole source groups are
drawn instead (a cluster bootstrap): copies of one smear are right or wrong together. The resamples are
vectorised (a resample is a row of per-image weights) and checked against sklearn in the tests."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bloodlib.evaluation.point import HEADLINE, checked_inputs, metrics


def shares_groups(groups) -> bool:
    """Whether some images share a source group (copies of one smear); None or one group per image: no."""
    return groups is not None and len(pd.unique(np.asarray(groups).astype(str))) < len(groups)


def mixed_groups(y_true, groups) -> bool:
    """Whether some group holds images of more than one class (a patient's cells, unlike a smear's copies)."""
    if groups is None:
        return False
    return bool((pd.DataFrame({"g": np.asarray(groups), "y": np.asarray(y_true)}).groupby("g")["y"].nunique() > 1).any())


def resample_weights(y_true, *, n: int = 2000, seed: int = 0, stratified: bool = True,
                     groups=None) -> np.ndarray:
    """(n, n_samples) counts: how often each test image is drawn in each bootstrap resample.

    Stratified: each true class is resampled within itself, keeping its size. Plain: all images together.
    ``groups`` (one id per image, e.g. the source smear of augmented copies): whole groups are drawn (a
    cluster bootstrap, stratified by each group's class), because copies of one smear are not independent
    evidence; without groups every image is its own group. Groups that hold several classes (a patient's cells)
    are drawn without strata: a plain cluster bootstrap.
    """
    y = np.asarray(y_true)
    # groups numbered in order of appearance: one group per image draws exactly what no groups draws
    unit = np.arange(len(y)) if groups is None else pd.factorize(np.asarray(groups).astype(str))[0]
    n_units = int(unit.max()) + 1 if len(unit) else 0
    unit_class = np.zeros(n_units, dtype=y.dtype)
    unit_class[unit] = y  # a group's class: its images' (checked below that they agree)
    rng = np.random.default_rng(seed)
    stratified = stratified and not mixed_groups(y, unit)  # a patient with cells of several classes has no one class
    strata = [np.flatnonzero(unit_class == c) for c in np.unique(unit_class)] if stratified else [np.arange(n_units)]
    offsets = np.arange(n)[:, None] * n_units  # row r of the result is the slice [r*U, (r+1)*U) of the bincount
    counts = np.zeros(n * n_units)
    for members in strata:
        draws = members[rng.integers(0, len(members), size=(n, len(members)))]
        counts += np.bincount((offsets + draws).ravel(), minlength=n * n_units)
    return counts.reshape(n, n_units)[:, unit]


def _weighted_auc(weights: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of ``score`` for every row of ``weights`` (ties count one half).

    The images are sorted once by score; each resample's weighted positives and negatives are summed per
    distinct score (``reduceat``), so the cost is (resamples x images), not (resamples x images x scores)."""
    order = np.argsort(score, kind="stable")
    starts = np.flatnonzero(np.r_[True, score[order][1:] != score[order][:-1]])  # where a distinct score starts
    sorted_weights = weights[:, order]
    negatives = sorted_weights * ~positive[order]
    neg_per_score = np.add.reduceat(negatives, starts, axis=1)
    pos_per_score = np.add.reduceat(sorted_weights - negatives, starts, axis=1)
    below = np.cumsum(neg_per_score, axis=1) - neg_per_score  # weighted negatives strictly below
    wins = (pos_per_score * (below + 0.5 * neg_per_score)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (pos_per_score.sum(axis=1) * neg_per_score.sum(axis=1))


def weighted_metrics(weights: np.ndarray, y_true, y_prob, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The headline metrics for every row of ``weights`` at once (same definitions as :func:`metrics`)."""
    y, y_prob = checked_inputs(y_true, y_prob, classes)
    k = len(classes)
    pred = y_prob.argmax(axis=1)
    cells = np.zeros((len(y), k * k))
    cells[np.arange(len(y)), y * k + pred] = 1
    cm = (weights @ cells).reshape(len(weights), k, k)  # (resample, true, predicted)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
        auc = np.stack([_weighted_auc(weights, y == c, y_prob[:, c]) for c in range(k)], axis=1)
        auc_macro = np.nanmean(np.where(np.isfinite(auc), auc, np.nan), axis=1)
    return {
        "accuracy": tp.sum(axis=1) / weights.sum(axis=1),
        "balanced_accuracy": np.nanmean(recall, axis=1),
        "macro_f1": np.nanmean(f1, axis=1),
        "roc_auc": auc_macro,
    }


def bootstrap_ci(y_true, y_prob, classes: Sequence[str], *, n: int = 2000, seed: int = 0, alpha: float = 0.05,
                 stratified: bool = True, groups=None) -> pd.DataFrame:
    """Point estimate and percentile bootstrap interval of each headline metric.

    Index: metric; columns: value (on the whole test set), low, high. ``attrs["method"]`` says how.
    ``groups``: resample whole groups of images (:func:`resample_weights`); a group per image is the same
    as none.
    """
    y, y_prob = checked_inputs(y_true, y_prob, classes)
    point = metrics(y, y_prob, classes)
    groups = groups if shares_groups(groups) else None  # a group per image is the plain image bootstrap
    weights = resample_weights(y, n=n, seed=seed, stratified=stratified, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN AUC rows when no class is defined
        samples = weighted_metrics(weights, y, y_prob, classes)
        rows = {m: (point[m], *np.nanpercentile(samples[m], [100 * alpha / 2, 100 * (1 - alpha / 2)]))
                for m in HEADLINE}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["value", "low", "high"])
    table.index.name = "metric"
    unit = "test images" if groups is None else f"the {len(pd.unique(groups))} source groups of the test images"
    stratified = stratified and not mixed_groups(y, groups)
    table.attrs["method"] = (f"{'stratified' if stratified else 'plain'} bootstrap of {unit}, n={n}, "
                             f"seed={seed}, {100 * (1 - alpha):g}% percentile interval")
    return table
