"""Numbers a reviewer can trust on a tiny, imbalanced test set.

A test set of a few dozen cells makes every point estimate noisy, so each headline figure comes with a 95%
*stratified* bootstrap percentile interval (test images resampled with replacement within each true class,
so that every class keeps its count and its per-class terms stay defined). Where test images are augmented
copies of fewer source smears (kaggle-augmented's TEST: 2,487 images of 71 smears), whole source groups are
drawn instead (a cluster bootstrap): copies of one smear are right or wrong together, and an interval that
counted them as independent images would be several times too narrow. Cross-validation folds give a
second view: mean and a t-interval over folds. Two models are compared on the *same* test images with
McNemar's test (paired per image) and, over folds, with a paired t-test.

Everything is computed with :mod:`sklearn.metrics` except the bootstrap, which is vectorised over resamples
(a resample is a row of per-image weights) and checked against sklearn in the tests.
Results are saved per run (``predictions.csv`` + ``metrics.json``) and loaded back by the comparison notebook.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score)

from . import fileio

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
# How each metric is named wherever a reader sees it: tables, figures, the report.
METRIC_LABELS = {"loss": "loss", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "macro_f1": "macro-F1", "roc_auc": "ROC-AUC"}
PREDICTIONS = "predictions.csv"
METRICS = "metrics.json"
EXACT_BELOW = 25  # McNemar: exact binomial test when there are fewer discordant pairs than this


# --------------------------------------------------------------------------------------------- inputs
def _labels(y_true, classes: Sequence[str]) -> np.ndarray:
    """Integer labels from integers or class names."""
    y = np.asarray(y_true)
    if y.dtype.kind in "OUS":
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(y.tolist()) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
        y = np.array([index[v] for v in y.tolist()], dtype=int)
    y = y.astype(int)
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise ValueError(f"labels must lie in 0..{len(classes) - 1}, got {y.min()}..{y.max()}")
    return y


def _inputs(y_true, y_prob, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    y_prob = np.asarray(y_prob, dtype=float)
    y = _labels(y_true, classes)
    if y_prob.ndim != 2 or y_prob.shape != (len(y), len(classes)):
        raise ValueError(f"y_prob must be (n_samples, n_classes) = ({len(y)}, {len(classes)}), got {y_prob.shape}")
    return y, y_prob


# ------------------------------------------------------------------------------------- point metrics
def roc_auc_per_class(y_true, y_prob, classes: Sequence[str]) -> np.ndarray:
    """One-vs-rest ROC-AUC of each class; NaN for a class absent from ``y_true`` (or the only one present)."""
    y, y_prob = _inputs(y_true, y_prob, classes)
    auc = np.full(len(classes), np.nan)
    for k in range(len(classes)):
        positive = y == k
        if 0 < positive.sum() < len(y):
            auc[k] = roc_auc_score(positive, y_prob[:, k])
    return auc


def auc_note(y_true, classes: Sequence[str]) -> str | None:
    """Why the macro ROC-AUC leaves classes out (None when it does not)."""
    y = _labels(y_true, classes)
    missing = [c for k, c in enumerate(classes) if not (y == k).any()]
    if not missing:
        return None
    return f"roc_auc: {', '.join(missing)} absent from the test labels; its AUC is NaN and the macro mean skips it"


def metrics(y_true, y_prob, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and macro one-vs-rest ROC-AUC; predictions are argmax(y_prob).

    Macro-F1 averages over the classes present in the labels or the predictions (sklearn's default);
    balanced accuracy over the classes present in the labels; ROC-AUC over the classes it is defined for
    (a class missing from ``y_true`` gives NaN with a warning instead of sklearn's error).
    """
    y, y_prob = _inputs(y_true, y_prob, classes)
    pred = y_prob.argmax(axis=1)
    note = auc_note(y, classes)
    if note:
        warnings.warn(note, stacklevel=2)
    auc = roc_auc_per_class(y, y_prob, classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": expected with rare classes
        return {
            "accuracy": float(accuracy_score(y, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "roc_auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
        }


def per_class_table(y_true, y_prob, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1, support and one-vs-rest AUC per class (index: class names)."""
    y, y_prob = _inputs(y_true, y_prob, classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, y_prob.argmax(axis=1), labels=range(len(classes)), zero_division=0)
    table = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support,
                          "auc": roc_auc_per_class(y, y_prob, classes)}, index=pd.Index(classes, name="class"))
    return table


def confusion_tables(y_true, y_prob, classes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Confusion matrix as counts and row-normalised (each true class sums to 1; an absent class to 0)."""
    y, y_prob = _inputs(y_true, y_prob, classes)
    pred = y_prob.argmax(axis=1)
    tables = []
    for normalize in (None, "true"):
        with np.errstate(all="ignore"):
            cm = confusion_matrix(y, pred, labels=range(len(classes)), normalize=normalize)
        tables.append(pd.DataFrame(cm, index=pd.Index(classes, name="true"),
                                   columns=pd.Index(classes, name="predicted")))
    return tables[0], tables[1]


def most_confident_mistakes(y_true, y_prob, ids, classes: Sequence[str], k: int = 8, groups=None) -> pd.DataFrame:
    """The ``k`` wrong predictions the model was surest of: the images worth looking at first.

    With ``groups`` (the source smear of augmented copies) at most one image per group is shown, its most
    confident mistake: otherwise one misread smear can fill the table with copies of itself.
    """
    y, y_prob = _inputs(y_true, y_prob, classes)
    pred = y_prob.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-y_prob[wrong, pred[wrong]], kind="stable")]
    if groups is not None:
        _, first = np.unique(np.asarray(groups).astype(str)[order], return_index=True)
        order = order[np.sort(first)]  # each group's first (most confident) mistake, still by confidence
    order = order[:k]
    return pd.DataFrame({
        "position": order,
        "id": np.asarray(ids)[order],
        "true": [classes[i] for i in y[order]],
        "predicted": [classes[i] for i in pred[order]],
        "confidence": y_prob[order, pred[order]],
        "p_true": y_prob[order, y[order]],
    })


def errors_by_group(y_true, y_prob, groups, classes: Sequence[str]) -> pd.DataFrame:
    """Per source group with at least one error: its class, images, accuracy, the most frequent wrong answer
    and the group's share of all the test set's errors; the groups with the most errors first. A sentence
    saying how concentrated the errors are is in ``attrs["summary"]``.

    On a test set of augmented copies a few misread smears can hold most of the errors: this says how many.
    """
    y, y_prob = _inputs(y_true, y_prob, classes)
    pred = y_prob.argmax(axis=1)
    frame = pd.DataFrame({"group": np.asarray(groups).astype(str), "true": np.asarray(classes)[y],
                          "predicted": np.asarray(classes)[pred]})
    wrong = frame[pred != y]
    table = wrong.groupby("group").agg(true=("true", "first"), errors=("predicted", "size"),
                                       mostly_predicted_as=("predicted", lambda p: p.mode().iloc[0]))
    table.insert(1, "images", frame.groupby("group").size().reindex(table.index))
    table["accuracy"] = 1 - table["errors"] / table["images"]
    table["share_of_errors"] = table["errors"] / max(len(wrong), 1)
    table = (table.reset_index().sort_values(["errors", "group"], ascending=[False, True], ignore_index=True)
             [["group", "true", "images", "errors", "accuracy", "mostly_predicted_as", "share_of_errors"]])
    table.attrs["summary"] = (f"{len(table)} of {frame['group'].nunique()} source groups hold all {len(wrong)} "
                              f"errors; the three with the most hold {table['share_of_errors'].head(3).sum():.0%}.")
    return table


# ------------------------------------------------------------------------------------------ bootstrap
def shares_groups(groups) -> bool:
    """Whether some images share a source group (copies of one smear); None or one group per image: no."""
    return groups is not None and len(pd.unique(np.asarray(groups).astype(str))) < len(groups)


def resample_weights(y_true, *, n: int = 2000, seed: int = 0, stratified: bool = True,
                     groups=None) -> np.ndarray:
    """(n, n_samples) counts: how often each test image is drawn in each bootstrap resample.

    Stratified: each true class is resampled within itself, keeping its size. Plain: all images together.
    ``groups`` (one id per image, e.g. the source smear of augmented copies): whole groups are drawn (a
    cluster bootstrap, stratified by each group's class), because copies of one smear are not independent
    evidence; without groups every image is its own group.
    """
    y = np.asarray(y_true)
    # groups numbered in order of appearance: one group per image draws exactly what no groups draws
    unit = np.arange(len(y)) if groups is None else pd.factorize(np.asarray(groups).astype(str))[0]
    n_units = int(unit.max()) + 1 if len(unit) else 0
    unit_class = np.zeros(n_units, dtype=y.dtype)
    unit_class[unit] = y  # a group's class: its images' (the last one's, were they to differ)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(unit_class == c) for c in np.unique(unit_class)] if stratified else [np.arange(n_units)]
    offsets = np.arange(n)[:, None] * n_units  # row r of the result is the slice [r*U, (r+1)*U) of the bincount
    counts = np.zeros(n * n_units)
    for members in strata:
        draws = members[rng.integers(0, len(members), size=(n, len(members)))]
        counts += np.bincount((offsets + draws).ravel(), minlength=n * n_units)
    return counts.reshape(n, n_units)[:, unit]


def _weighted_auc(weights: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of ``score`` for every row of ``weights`` (ties count one half)."""
    _, rank = np.unique(score, return_inverse=True)  # dense rank of each score
    onehot = np.zeros((len(score), rank.max() + 1))
    onehot[np.arange(len(score)), rank] = 1
    neg_w = weights * ~positive
    pos_w = weights * positive
    neg_per_rank = neg_w @ onehot  # weighted negatives at each distinct score
    below = np.cumsum(neg_per_rank, axis=1) - neg_per_rank  # weighted negatives strictly below
    wins = below[:, rank] + 0.5 * neg_per_rank[:, rank]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos_w * wins).sum(axis=1) / (pos_w.sum(axis=1) * neg_w.sum(axis=1))


def weighted_metrics(weights: np.ndarray, y_true, y_prob, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """The headline metrics for every row of ``weights`` at once (same definitions as :func:`metrics`)."""
    y, y_prob = _inputs(y_true, y_prob, classes)
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
    y, y_prob = _inputs(y_true, y_prob, classes)
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
    table.attrs["method"] = (f"{'stratified' if stratified else 'plain'} bootstrap of {unit}, n={n}, "
                             f"seed={seed}, {100 * (1 - alpha):g}% percentile interval")
    return table


# -------------------------------------------------------------------------------------------- folds
def fold_summary(per_fold: pd.DataFrame, *, alpha: float = 0.05, test_train_ratio: float | None = None
                 ) -> pd.DataFrame:
    """Mean, std and t-interval over folds of every headline column of ``per_fold`` (one row per fold).

    Folds share training images, so the plain t-interval is optimistic; pass ``test_train_ratio``
    (n_test / n_train of a fold) for the Nadeau-Bengio corrected variance (1/k + n_test/n_train) * s^2.
    """
    columns = [c for c in HEADLINE if c in per_fold.columns]
    values = per_fold[columns].astype(float)
    k = values.notna().sum()
    mean, std = values.mean(), values.std(ddof=1)
    factor = 1 / k + (test_train_ratio or 0.0)
    half = stats.t.ppf(1 - alpha / 2, k - 1) * np.sqrt(factor) * std
    table = pd.DataFrame({"mean": mean, "std": std, "low": mean - half, "high": mean + half, "folds": k})
    table.index.name = "metric"
    table.attrs["method"] = (f"{100 * (1 - alpha):g}% t-interval over folds"
                             + (" (Nadeau-Bengio corrected)" if test_train_ratio else ""))
    return table


def test_train_ratio(ev: Evaluation) -> float | None:
    """n_test / n_train of a fold, for the Nadeau-Bengio correction (None without folds). Saved by
    ``experiment.run_model``; older results fall back to 1 / (k - 1) for k folds."""
    if ev.fold is None:
        return None
    saved = ev.extra.get("test_train_ratio")
    return float(saved) if saved else 1 / max(1, len(np.unique(ev.fold)) - 1)


def fold_metrics(ev: Evaluation) -> pd.DataFrame:
    """Headline metrics of each (repeat, fold) of a cross-validated evaluation: one row per fold."""
    if ev.fold is None:
        raise ValueError(f"evaluation {ev.model!r} has no fold ids: it is not a cross-validation run")
    frame = pd.DataFrame({"repeat": _repeats(ev), "fold": ev.fold})
    rows = []
    for (repeat, fold), part in frame.groupby(["repeat", "fold"], sort=True):
        idx = part.index.to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows.append({"repeat": repeat, "fold": fold, "n": len(idx),
                         **metrics(ev.y_true[idx], ev.y_prob[idx], ev.classes)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- paired tests
def mcnemar(y_true, pred_a, pred_b) -> dict:
    """McNemar's test of two models' errors on the same images.

    n01: images A gets wrong and B right; n10: A right and B wrong. Exact two-sided binomial test when
    n01 + n10 < 25 (statistic: min(n01, n10)), else the chi-square statistic with continuity correction,
    (|n01 - n10| - 1)^2 / (n01 + n10), on one degree of freedom.
    """
    y, a, b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == b.shape):
        raise ValueError(f"y_true, pred_a and pred_b differ in shape: {y.shape}, {a.shape}, {b.shape}")
    right_a, right_b = a == y, b == y
    n01, n10 = int((~right_a & right_b).sum()), int((right_a & ~right_b).sum())
    discordant = n01 + n10
    if discordant < EXACT_BELOW:
        method = "exact binomial"
        statistic = float(min(n01, n10))
        p_value = 1.0 if discordant == 0 else float(stats.binomtest(n01, discordant, 0.5).pvalue)
    else:
        method = "chi-square with continuity correction"
        statistic = (abs(n01 - n10) - 1) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, df=1))
    return {"n01": n01, "n10": n10, "statistic": float(statistic), "p_value": min(p_value, 1.0), "method": method}


def grouped_paired_test(y_true, pred_a, pred_b, groups, *, n: int = 20_000, seed: int = 0) -> dict:
    """McNemar's question (do A and B differ in accuracy on the same images?) when the images come in groups
    that are right or wrong together, such as augmented copies of one smear: a paired sign-flip permutation
    test over groups.

    Per group, d = (images A gets right) - (images B gets right). Were the two models exchangeable, each
    group's d would be as likely to have the other sign, so the sum of d is compared with its values under
    every sign pattern of the groups with d != 0: all of them when there are at most 16, else ``n`` random
    ones (seeded; p = (1 + hits) / (1 + n)). Two-sided. n01/n10 count images, as in :func:`mcnemar`.
    """
    y, a, b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == b.shape == np.shape(groups)):
        raise ValueError(f"y_true, pred_a, pred_b and groups differ in shape: {y.shape}, {a.shape}, {b.shape}, "
                         f"{np.shape(groups)}")
    right_a, right_b = a == y, b == y
    codes, names = pd.factorize(np.asarray(groups).astype(str))
    d = np.bincount(codes, weights=right_a.astype(float) - right_b, minlength=len(names))
    d = d[d != 0]
    observed = abs(d.sum())
    if len(d) == 0:
        p_value, how = 1.0, "no group differs"
    elif len(d) <= 16:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        p_value, how = float(np.mean(np.abs(signs @ d) >= observed - 1e-9)), "exact"
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, len(d)))
        p_value, how = float((1 + np.sum(np.abs(signs @ d) >= observed - 1e-9)) / (1 + n)), f"{n} random patterns"
    return {"n01": int((~right_a & right_b).sum()), "n10": int((right_a & ~right_b).sum()),
            "statistic": float(observed), "p_value": min(p_value, 1.0),
            "method": f"sign-flip permutation over {len(names)} source groups ({how})"}


def paired_fold_test(scores_a, scores_b, *, test_train_ratio: float | None = None) -> dict:
    """Paired t-test of two models' per-fold scores (same folds, same order; Series are aligned by index).

    ``test_train_ratio`` switches to the Nadeau-Bengio corrected resampled t-test (folds overlap in training data).
    """
    if isinstance(scores_a, pd.Series) and isinstance(scores_b, pd.Series):
        scores_a, scores_b = scores_a.align(scores_b, join="inner")
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two equal-length score vectors of at least 2 folds, got {a.shape} and {b.shape}")
    d = a - b
    k = len(d)
    sd = d.std(ddof=1)
    factor = 1 / k + (test_train_ratio or 0.0)
    if sd == 0:  # every fold differs by the same amount: t is 0/0 (no difference) or +-inf
        statistic, p_value = (0.0, 1.0) if d.mean() == 0 else (math.copysign(math.inf, d.mean()), 0.0)
    else:
        statistic = float(d.mean() / (sd * math.sqrt(factor)))
        p_value = float(2 * stats.t.sf(abs(statistic), k - 1))
    method = ("corrected resampled t-test over folds (Nadeau-Bengio)" if test_train_ratio
              else "paired t-test over folds")
    return {"mean_difference": float(d.mean()), "statistic": statistic, "p_value": p_value, "folds": k,
            "method": method}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (several pairwise tests on the same test set)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# ----------------------------------------------------------------------------------- saved results
@dataclasses.dataclass
class Evaluation:
    """One model's test predictions and what is known about how it was made."""
    model: str
    classes: list[str]
    y_true: np.ndarray  # int class index per test row
    y_prob: np.ndarray  # (rows, classes) probabilities
    ids: np.ndarray  # image id per row
    fold: np.ndarray | None = None  # cross-validation fold per row (None: a single fixed test split)
    repeat: np.ndarray | None = None  # repetition of the k-fold per row
    groups: np.ndarray | None = None  # source group per row (augmented copies of one smear share one)
    train_seconds: float | None = None
    params: int | None = None
    flops: float | None = None  # per image, forward pass
    throughput: float | None = None  # inference images per second
    pretrained_source: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.classes = list(self.classes)
        self.y_true, self.y_prob = _inputs(self.y_true, self.y_prob, self.classes)
        self.ids = np.asarray(self.ids).astype(str)
        if len(self.ids) != len(self.y_true):
            raise ValueError(f"{self.model}: {len(self.ids)} ids for {len(self.y_true)} predictions")
        for name, kind in (("fold", int), ("repeat", int), ("groups", str)):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value).astype(kind)
                if len(value) != len(self.y_true):
                    raise ValueError(f"{self.model}: {len(value)} {name} ids for {len(self.y_true)} predictions")
                setattr(self, name, value)

    @property
    def y_pred(self) -> np.ndarray:
        return self.y_prob.argmax(axis=1)

    def metadata(self) -> dict:
        return {"train_seconds": self.train_seconds, "params": self.params, "flops": self.flops,
                "throughput": self.throughput, "pretrained_source": self.pretrained_source, "extra": self.extra}

    def first_repeat(self) -> np.ndarray:
        """Row positions that hold each test image once (repeated k-fold predicts every image once per repeat)."""
        if self.repeat is None:
            return np.arange(len(self.y_true))
        return np.flatnonzero(self.repeat == self.repeat.min())


def _jsonable(value):
    """NaN/inf -> null and numpy scalars -> Python, so that metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluation_ci(ev: Evaluation, *, n: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`bootstrap_ci` of an evaluation (each test image once), drawing whole source groups where the
    evaluation has them (augmented copies of one smear count as one piece of evidence)."""
    rows = ev.first_repeat()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bootstrap_ci(ev.y_true[rows], ev.y_prob[rows], ev.classes, n=n, seed=seed, alpha=alpha,
                            groups=None if ev.groups is None else ev.groups[rows])


def summarize(ev: Evaluation, *, n: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Everything metrics.json holds: headline numbers with CIs, per-class table, confusion counts, folds."""
    rows = ev.first_repeat()
    y, prob = ev.y_true[rows], ev.y_prob[rows]
    ci = evaluation_ci(ev, n=n, seed=seed, alpha=alpha)
    counts, _ = confusion_tables(y, prob, ev.classes)
    summary = {
        "model": ev.model, "classes": ev.classes, "n_test": int(len(rows)),
        "headline": ci["value"].to_dict(),
        "ci": ci[["low", "high"]].to_dict(orient="index"), "ci_method": ci.attrs["method"],
        "per_class": per_class_table(y, prob, ev.classes).to_dict(orient="index"),
        "confusion": counts.to_numpy().tolist(),
        "notes": [note for note in [auc_note(y, ev.classes)] if note],
        "metadata": ev.metadata(),
    }
    if ev.fold is not None:
        per_fold = fold_metrics(ev)
        summary["per_fold"] = per_fold.to_dict(orient="records")
        summary["fold_summary"] = fold_summary(per_fold, alpha=alpha,
                                               test_train_ratio=test_train_ratio(ev)).to_dict(orient="index")
    return summary


def save_evaluation(ev: Evaluation, folder: str | os.PathLike, *, n: int = 2000, seed: int = 0,
                    alpha: float = 0.05) -> Path:
    """Write ``folder/predictions.csv`` (id, true, pred, prob_<class>..., fold, repeat, group) and
    ``folder/metrics.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"id": ev.ids, "true": np.asarray(ev.classes)[ev.y_true],
                          "pred": np.asarray(ev.classes)[ev.y_pred]})
    for k, name in enumerate(ev.classes):
        table[f"prob_{name}"] = ev.y_prob[:, k]
    if ev.fold is not None:
        table["fold"] = ev.fold
    if ev.repeat is not None:
        table["repeat"] = ev.repeat
    if ev.groups is not None:
        table["group"] = ev.groups
    fileio.write_text(folder / PREDICTIONS, table.to_csv(index=False, float_format="%.17g"))
    summary = summarize(ev, n=n, seed=seed, alpha=alpha)
    fileio.write_text(folder / METRICS, json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")
    return folder


def load_evaluation(folder: str | os.PathLike) -> Evaluation:
    """Read back what :func:`save_evaluation` wrote."""
    folder = Path(folder)
    metrics_path, predictions_path = folder / METRICS, folder / PREDICTIONS
    for path in (metrics_path, predictions_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {folder} a saved evaluation?")
    try:
        summary = json.loads(metrics_path.read_text(encoding="utf-8"))
        classes, model = summary["classes"], summary["model"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{metrics_path}: not a bloodlib metrics file ({e})") from None
    table = pd.read_csv(predictions_path, dtype={"id": str, "true": str, "pred": str, "group": str},
                        keep_default_na=False)  # an id or group named "NA" stays a string
    needed = ["id", "true", *[f"prob_{c}" for c in classes]]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{predictions_path}: missing column(s) {missing}")
    meta = summary.get("metadata") or {}
    try:
        y_true = _labels(table["true"].to_numpy(), classes)
    except ValueError as e:
        raise ValueError(f"{predictions_path}: {e}") from None
    return Evaluation(
        model=model, classes=classes, y_true=y_true,
        y_prob=table[[f"prob_{c}" for c in classes]].to_numpy(float), ids=table["id"].to_numpy(),
        fold=table["fold"].to_numpy() if "fold" in table else None,
        repeat=table["repeat"].to_numpy() if "repeat" in table else None,
        groups=table["group"].to_numpy() if "group" in table else None,
        train_seconds=meta.get("train_seconds"), params=meta.get("params"), flops=meta.get("flops"),
        throughput=meta.get("throughput"), pretrained_source=meta.get("pretrained_source"),
        extra=meta.get("extra") or {})


def load_all(root: str | os.PathLike) -> dict[str, Evaluation]:
    """Every evaluation saved under ``root`` (any depth), keyed by its folder relative to ``root``
    (two runs of one architecture, e.g. pretrained and from scratch, stay apart)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of evaluations")
    return {path.parent.relative_to(root).as_posix(): load_evaluation(path.parent)
            for path in sorted(root.rglob(METRICS))}


# -------------------------------------------------------------------------------------- comparisons
def comparison_table(evals: dict[str, Evaluation], *, n: int = 2000, seed: int = 0, alpha: float = 0.05
                     ) -> pd.DataFrame:
    """One row per model: headline metrics with bootstrap CIs (columns m, m_low, m_high), cost figures."""
    rows = {}
    for name, ev in evals.items():
        idx = ev.first_repeat()
        ci = evaluation_ci(ev, n=n, seed=seed, alpha=alpha)
        row = {}
        for m in HEADLINE:
            row.update({m: ci.at[m, "value"], f"{m}_low": ci.at[m, "low"], f"{m}_high": ci.at[m, "high"]})
        row.update(n_test=len(idx), params=ev.params, flops=ev.flops, train_seconds=ev.train_seconds,
                   throughput=ev.throughput, pretrained_source=ev.pretrained_source)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


def _aligned(a: Evaluation, b: Evaluation, name_a: str, name_b: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """y_true, pred_a, pred_b and the source groups (A's; None without) on the same test images, matched by
    id; refuse different test sets.

    Repeated k-fold predicts each image once per repeat: only the first repeat is used, so that every image
    counts once (McNemar assumes independent pairs).
    """
    if list(a.classes) != list(b.classes):
        raise ValueError(f"{name_a} and {name_b} use different classes: {a.classes} vs {b.classes}")
    rows_a, rows_b = a.first_repeat(), b.first_repeat()
    keys = []
    for ev, rows, name in ((a, rows_a, name_a), (b, rows_b, name_b)):
        key = pd.Index(ev.ids[rows])
        if key.has_duplicates:
            raise ValueError(f"{name}: test id {key[key.duplicated()][0]!r} appears twice")
        keys.append(key)
    only_a, only_b = keys[0].difference(keys[1]), keys[1].difference(keys[0])
    if len(only_a) or len(only_b):
        raise ValueError(f"{name_a} and {name_b} were not tested on the same images: {len(only_a)} id(s) only "
                         f"in {name_a} (e.g. {list(only_a[:3])}), {len(only_b)} only in {name_b} "
                         f"(e.g. {list(only_b[:3])})")
    order_b = rows_b[keys[1].get_indexer(keys[0])]
    if not np.array_equal(a.y_true[rows_a], b.y_true[order_b]):
        raise ValueError(f"{name_a} and {name_b} disagree on the true label of the same test image(s)")
    groups = None if a.groups is None else a.groups[rows_a]
    return a.y_true[rows_a], a.y_pred[rows_a], b.y_pred[order_b], groups


def pairwise_mcnemar(evals: dict[str, Evaluation]) -> pd.DataFrame:
    """McNemar's test for every pair of models (same test images required), with Holm-adjusted p-values;
    where the test images are copies of fewer source smears, :func:`grouped_paired_test` instead (McNemar
    would count every copy as independent evidence)."""
    rows = []
    for name_a, name_b in itertools.combinations(evals, 2):
        y, pred_a, pred_b, groups = _aligned(evals[name_a], evals[name_b], name_a, name_b)
        test = grouped_paired_test(y, pred_a, pred_b, groups) if shares_groups(groups) else mcnemar(y, pred_a, pred_b)
        rows.append({"model_a": name_a, "model_b": name_b,
                     "accuracy_a": float((pred_a == y).mean()), "accuracy_b": float((pred_b == y).mean()),
                     **test})
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "accuracy_a", "accuracy_b", "n01", "n10",
                                        "statistic", "p_value", "method"])
    table["p_holm"] = holm(table["p_value"]) if len(table) else []
    return table


def _repeats(ev: Evaluation) -> np.ndarray:
    return ev.repeat if ev.repeat is not None else np.zeros(len(ev.ids), dtype=int)


def pairwise_fold_tests(evals: dict[str, Evaluation], metric: str = "macro_f1") -> pd.DataFrame:
    """The corrected resampled t-test (Nadeau and Bengio, 2003) over folds of ``metric`` for every pair of
    cross-validated models (same folds required): folds share training images, so the plain paired t-test
    over folds would overstate significance."""
    per_fold = {}
    for name, ev in evals.items():
        scores = fold_metrics(ev)
        per_fold[name] = scores.set_index(["repeat", "fold"])[metric]
    rows = []
    for name_a, name_b in itertools.combinations(evals, 2):
        a, b = evals[name_a], evals[name_b]
        _aligned(a, b, name_a, name_b)  # same test images ...
        fold_of = [pd.Series(ev.fold, index=[f"{i}#{r}" for i, r in zip(ev.ids, _repeats(ev))]).sort_index()
                   for ev in (a, b)]
        if not fold_of[0].equals(fold_of[1]):  # ... in the same folds
            raise ValueError(f"{name_a} and {name_b} were cross-validated on different folds")
        rows.append({"model_a": name_a, "model_b": name_b, "metric": metric,
                     **paired_fold_test(per_fold[name_a], per_fold[name_b], test_train_ratio=test_train_ratio(a))})
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "metric", "mean_difference", "statistic", "p_value",
                                        "folds", "method"])
    table["p_holm"] = holm(table["p_value"]) if len(table) else []
    return table
