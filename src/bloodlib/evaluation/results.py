"""One model's saved test predictions (:class:`Evaluation`): ``predictions.csv`` + ``metrics.json`` per run,
written by the training notebooks and read back by the comparison."""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bloodlib.evaluation.bootstrap import bootstrap_ci
from bloodlib.evaluation.point import auc_note, checked_inputs, confusion_tables, label_indices, per_class_table
from bloodlib.evaluation.point import metrics
from bloodlib.evaluation.significance import fold_summary
from bloodlib.utils import fileio

PREDICTIONS = "predictions.csv"
COMPRESSED = PREDICTIONS + ".gz"  # the same table gzipped: what an evaluation of many thousand images writes
METRICS = "metrics.json"


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
        self.y_true, self.y_prob = checked_inputs(self.y_true, self.y_prob, self.classes)
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


def jsonable(value):
    """NaN/inf -> null and numpy scalars -> Python, so that metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def repeat_ids(ev: Evaluation) -> np.ndarray:
    """The repetition of the k-fold each row belongs to (all 0 without repeats)."""
    return ev.repeat if ev.repeat is not None else np.zeros(len(ev.ids), dtype=int)



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
    frame = pd.DataFrame({"repeat": repeat_ids(ev), "fold": ev.fold})
    rows = []
    for (repeat, fold), part in frame.groupby(["repeat", "fold"], sort=True):
        idx = part.index.to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows.append({"repeat": repeat, "fold": fold, "n": len(idx),
                         **metrics(ev.y_true[idx], ev.y_prob[idx], ev.classes)})
    return pd.DataFrame(rows)


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
                    alpha: float = 0.05, compress: bool = False) -> Path:
    """Write ``folder/predictions.csv`` (id, true, pred, prob_<class>..., fold, repeat, group) and
    ``folder/metrics.json``; with ``compress``, ``predictions.csv.gz`` instead (byte for byte the same on every
    run: no time stamp). Probabilities are written with the digits their type holds (9 for float32, 17 else), so
    that they read back as the same numbers."""
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
    digits = 9 if np.asarray(ev.y_prob).dtype == np.float32 else 17
    text = table.to_csv(index=False, float_format=f"%.{digits}g")
    if compress:
        with fileio.atomic_path(folder / COMPRESSED) as tmp:
            tmp.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
        (folder / PREDICTIONS).unlink(missing_ok=True)
    else:
        fileio.write_text(folder / PREDICTIONS, text)
        (folder / COMPRESSED).unlink(missing_ok=True)
    summary = summarize(ev, n=n, seed=seed, alpha=alpha)
    fileio.write_text(folder / METRICS, json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")
    return folder


def load_evaluation(folder: str | os.PathLike) -> Evaluation:
    """Read back what :func:`save_evaluation` wrote."""
    folder = Path(folder)
    metrics_path, predictions_path = folder / METRICS, folder / PREDICTIONS
    if not predictions_path.is_file() and (folder / COMPRESSED).is_file():
        predictions_path = folder / COMPRESSED  # pandas reads it by its name
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
        y_true = label_indices(table["true"].to_numpy(), classes)
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
