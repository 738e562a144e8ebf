"""Point metrics of one model's test predictions: accuracy, balanced accuracy, macro-F1, ROC-AUC, per-class
tables, confusion matrices, and where the errors are (computed with :mod:`sklearn.metrics`)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score)

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
# How each metric is named wherever a reader sees it: tables, figures, the report.
METRIC_LABELS = {"loss": "loss", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "macro_f1": "macro-F1", "roc_auc": "ROC-AUC"}


def label_indices(y_true, classes: Sequence[str]) -> np.ndarray:
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


def checked_inputs(y_true, y_prob, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    y_prob = np.asarray(y_prob, dtype=float)
    y = label_indices(y_true, classes)
    if y_prob.ndim != 2 or y_prob.shape != (len(y), len(classes)):
        raise ValueError(f"y_prob must be (n_samples, n_classes) = ({len(y)}, {len(classes)}), got {y_prob.shape}")
    return y, y_prob


# ------------------------------------------------------------------------------------- point metrics
def roc_auc_per_class(y_true, y_prob, classes: Sequence[str]) -> np.ndarray:
    """One-vs-rest ROC-AUC of each class; NaN for a class absent from ``y_true`` (or the only one present)."""
    y, y_prob = checked_inputs(y_true, y_prob, classes)
    auc = np.full(len(classes), np.nan)
    for k in range(len(classes)):
        positive = y == k
        if 0 < positive.sum() < len(y):
            auc[k] = roc_auc_score(positive, y_prob[:, k])
    return auc


def auc_note(y_true, classes: Sequence[str]) -> str | None:
    """Why the macro ROC-AUC leaves classes out (None when it does not)."""
    y = label_indices(y_true, classes)
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
    y, y_prob = checked_inputs(y_true, y_prob, classes)
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
    y, y_prob = checked_inputs(y_true, y_prob, classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, y_prob.argmax(axis=1), labels=range(len(classes)), zero_division=0)
    table = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support,
                          "auc": roc_auc_per_class(y, y_prob, classes)}, index=pd.Index(classes, name="class"))
    return table


def confusion_tables(y_true, y_prob, classes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Confusion matrix as counts and row-normalised (each true class sums to 1; an absent class to 0)."""
    y, y_prob = checked_inputs(y_true, y_prob, classes)
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
    y, y_prob = checked_inputs(y_true, y_prob, classes)
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
    y, y_prob = checked_inputs(y_true, y_prob, classes)
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
