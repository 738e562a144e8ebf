"""Several models side by side: headline metrics with intervals, and every pair tested on the same images
(McNemar) and over the same folds (corrected resampled t-test), Holm-adjusted."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from bloodlib.evaluation.bootstrap import shares_groups
from bloodlib.evaluation.point import HEADLINE
from bloodlib.evaluation.results import Evaluation, evaluation_ci, fold_metrics, repeat_ids, test_train_ratio
from bloodlib.evaluation.significance import grouped_paired_test, holm, mcnemar, paired_fold_test


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
        fold_of = [pd.Series(ev.fold, index=[f"{i}#{r}" for i, r in zip(ev.ids, repeat_ids(ev))]).sort_index()
                   for ev in (a, b)]
        if not fold_of[0].equals(fold_of[1]):  # ... in the same folds
            raise ValueError(f"{name_a} and {name_b} were cross-validated on different folds")
        rows.append({"model_a": name_a, "model_b": name_b, "metric": metric,
                     **paired_fold_test(per_fold[name_a], per_fold[name_b], test_train_ratio=test_train_ratio(a))})
    table = pd.DataFrame(rows, columns=["model_a", "model_b", "metric", "mean_difference", "statistic", "p_value",
                                        "folds", "method"])
    table["p_holm"] = holm(table["p_value"]) if len(table) else []
    return table
