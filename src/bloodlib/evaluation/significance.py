"""Fold-level summaries and paired tests: two models on the same test images (McNemar, or a paired cluster
bootstrap where images are copies of fewer smears) and over the same folds (the corrected resampled
t-test of Nadeau and Bengio, since folds share training images); Holm's adjustment for several pairs."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bloodlib.evaluation.point import HEADLINE

EXACT_BELOW = 25  # McNemar: exact binomial test when there are fewer discordant pairs than this




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


SCIENTIFIC_BELOW = 1e-3  # smaller p-values are written as 3.8e-14: rounded to decimals they would read 0.0


def format_p(p: float | None, digits: int = 2, *, alpha: float = 0.05) -> str:
    """A p-value as a reader wants it: ``digits`` significant digits, as a decimal from 0.001 up ("0.26",
    "0.031", "1"), in scientific notation below ("3.8e-14"); "< 1e-300" for a p that underflowed to 0, and "–"
    for none (NaN, None). A digit is added while rounding would carry p across ``alpha`` (0.0496 is written
    "0.0496", not "0.05"), so the text never contradicts a significance call made on the number."""
    if p is None or math.isnan(p):
        return "–"
    if not 0 <= p <= 1:
        raise ValueError(f"a p-value lies in [0, 1], got {p}")
    if p == 0:
        return "< 1e-300"
    while True:
        if p >= SCIENTIFIC_BELOW:
            text = f"{p:.{digits}g}"
        else:
            mantissa, exponent = f"{p:.{digits - 1}e}".split("e")
            text = f"{mantissa}e{int(exponent)}"
        if (float(text) < alpha) == (p < alpha) or digits >= 6:
            return text
        digits += 1
