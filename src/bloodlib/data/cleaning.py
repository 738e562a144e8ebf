"""The seed's cleaning rules as one pure, seeded function: labels.csv + images -> a manifest.

The manifest has one row per labelled image: its id, file, raw and clean label, and whether it was kept (or
why it was dropped). Every step is counted per class, so that the cleaning table in the report is computed
from the data, never typed in. The kept images are split afterwards, by :func:`bloodlib.data.splits.plan`, before
any oversampling.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

# The four classes the study keeps; BASOPHIL (3 images) is known but too rare to learn or to split.
CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
KNOWN_CATEGORIES = CLASSES + ("BASOPHIL",)
LABEL_COLUMNS = ("Image", "Category")
OTHER = "(no single label)"

# The reasons a row is dropped, in the order the steps run; the cleaning table follows this order.
STEPS = {
    "no_image": "drop label rows without an image",
    "empty_label": "drop empty labels",
    "double_label": "drop double labels",
    "unreadable": "drop unreadable images",
    "rare_class": "drop BASOPHIL (too rare to split)",
    "no_wbc_box": "drop images without a WBC box",
    "neutrophil_subsample": "delete 10% of neutrophils (seeded)",
}


@dataclasses.dataclass(frozen=True)
class CleaningParams:
    """Every choice of the cleaning, recorded with the run."""
    seed: int = 42
    keep_same_class_doubles: bool = False  # the seed drops every double; "NEUTROPHIL, NEUTROPHIL" may be kept
    drop_classes: tuple[str, ...] = ("BASOPHIL",)
    require_wbc_box: bool = True  # the same images in crop and full mode, so that the two are comparable
    neutrophil_drop_fraction: float = 0.10
    min_per_class: int = 5  # folder datasets: a class with fewer images is dropped (too small to split)


@dataclasses.dataclass
class Cleaning:
    """The manifest (one row per label row) and the per-step table of images per class."""
    manifest: pd.DataFrame
    table: pd.DataFrame
    params: CleaningParams

    @property
    def kept(self) -> pd.DataFrame:
        return self.manifest[self.manifest["kept"]].reset_index(drop=True)

    @property
    def classes(self) -> list[str]:
        return sorted(self.kept["label"].unique())

    def summary(self) -> dict:
        """What the listing held and what each step dropped, from the table: ``{"listed": n, "dropped": {step:
        images}}``, steps that dropped nothing left out."""
        totals = self.table["total"].astype(int)
        dropped = (totals.shift() - totals).iloc[1:].astype(int)
        return {"listed": int(totals.iloc[0]), "dropped": {str(step): int(n) for step, n in dropped.items() if n}}


def read_labels(path: str | Path) -> pd.DataFrame:
    """``labels.csv`` as (image_id, raw_label); a missing file or wrong columns is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found (expected dataset-master/labels.csv)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from err
    missing = [c for c in LABEL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected columns {list(LABEL_COLUMNS)}, "
                         f"found {list(frame.columns)}")
    ids = frame["Image"].str.strip()
    bad = ~ids.str.fullmatch(r"\d+")
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 2  # +1 header, +1 one-based
        raise ValueError(f"{path}: line {row}: Image must be an integer, got {frame['Image'].iloc[row - 2]!r}")
    if ids.duplicated().any():
        raise ValueError(f"{path}: image id(s) listed twice: {sorted(set(ids[ids.duplicated()]))[:5]}")
    return pd.DataFrame({"image_id": ids.astype(int), "raw_label": frame["Category"]})


def parse_label(raw: str, *, source: str = "labels.csv") -> tuple[str, ...]:
    """"NEUTROPHIL, EOSINOPHIL" -> ('NEUTROPHIL', 'EOSINOPHIL'); case and spacing do not matter."""
    parts = tuple(p.strip().upper() for p in re.split(r"[,;/]", raw or "") if p.strip())
    unknown = [p for p in parts if p not in KNOWN_CATEGORIES]
    if unknown:
        raise ValueError(f"{source}: unknown category {unknown[0]!r} in label {raw!r}; "
                         f"known categories are {list(KNOWN_CATEGORIES)}")
    return parts


def image_file(image_id: int) -> str:
    """The JPEG of a label row, relative to the data root."""
    return f"dataset-master/JPEGImages/BloodImage_{image_id:05d}.jpg"


def clean(labels: pd.DataFrame, files: Iterable[str], *, unreadable: Iterable[str] = (),
          wbc_boxes: Mapping[str, int] | None = None, params: CleaningParams = CleaningParams(),
          source: str = "labels.csv") -> Cleaning:
    """Apply the seed's rules in order; the kept images are split later (:func:`bloodlib.data.splits.plan`).

    ``files`` are the image files that exist (relative to the data root), ``unreadable`` those that fail
    to decode, ``wbc_boxes`` the number of WBC boxes per file (``None``: no box rule). Nothing is read
    from disk here: the same inputs and seed give the same manifest.
    """
    files, unreadable = set(files), set(unreadable)
    manifest = labels.copy()
    manifest["file"] = manifest["image_id"].map(image_file)
    manifest["id"] = manifest["file"].map(lambda f: Path(f).stem)
    parsed = [parse_label(raw, source=f"{source}, image {i}") for i, raw in
              zip(manifest["image_id"], manifest["raw_label"])]
    manifest["label"] = [_clean_label(p, params.keep_same_class_doubles) for p in parsed]
    manifest["reason"] = ""
    rows = [("label rows in labels.csv", manifest["label"].copy())]  # (step, labels of the images still kept)

    def drop(reason: str, mask) -> None:
        mask = np.asarray(mask, bool) & (manifest["reason"] == "").to_numpy()
        manifest.loc[mask, "reason"] = reason
        rows.append((STEPS[reason], manifest.loc[manifest["reason"] == "", "label"]))

    drop("no_image", ~manifest["file"].isin(files))
    drop("empty_label", [len(p) == 0 for p in parsed])
    drop("double_label", manifest["label"] == "")  # what is left without a single label is a double
    drop("unreadable", manifest["file"].isin(unreadable))
    drop("rare_class", manifest["label"].isin(params.drop_classes))
    if wbc_boxes is not None and params.require_wbc_box:
        drop("no_wbc_box", [wbc_boxes.get(f, 0) == 0 for f in manifest["file"]])
    drop("neutrophil_subsample", _subsample(manifest, "NEUTROPHIL", params.neutrophil_drop_fraction, params.seed))
    manifest["kept"] = manifest["reason"] == ""
    if not manifest["kept"].any():
        raise ValueError(f"{source}: no image is left after cleaning")
    manifest["group"] = manifest["image_id"].astype(str)  # one smear, one cell: its own group
    manifest["split"] = ""  # BCCD brings no split of its own
    table = step_table(rows, first=KNOWN_CATEGORIES)
    return Cleaning(manifest=manifest, table=table, params=params)


def _clean_label(parts: tuple[str, ...], keep_same_class_doubles: bool) -> str:
    if len(parts) == 1 or (keep_same_class_doubles and len(parts) > 1 and len(set(parts)) == 1):
        return parts[0]
    return ""


def step_table(rows: list[tuple[str, pd.Series]], first: Iterable[str] = ()) -> pd.DataFrame:
    """Images per class after each step (the report's cleaning table), from (step, labels of the images still
    kept) pairs. Columns: the classes of ``first`` in that order, the other classes by name, :data:`OTHER` (an
    empty label: no single class), and the total."""
    counts = [labels.replace("", OTHER).value_counts().to_dict() for _, labels in rows]
    table = pd.DataFrame(counts, index=[step for step, _ in rows]).fillna(0).astype(int)
    classes = [c for c in first if c in table.columns]
    classes += sorted(set(table.columns) - {*classes, OTHER})
    table = table[classes + [OTHER] * (OTHER in table.columns)]
    table["total"] = table.sum(axis=1)
    table.index.name = "step"
    return table


def _subsample(manifest: pd.DataFrame, label: str, fraction: float, seed: int) -> np.ndarray:
    """A seeded choice of ``fraction`` of the kept images of ``label`` (the seed's 10% of neutrophils)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"neutrophil_drop_fraction must be in [0, 1), got {fraction}")
    candidates = np.flatnonzero(((manifest["reason"] == "") & (manifest["label"] == label)).to_numpy())
    chosen = np.random.default_rng(seed).choice(candidates, size=int(round(fraction * len(candidates))),
                                                replace=False)
    mask = np.zeros(len(manifest), bool)
    mask[chosen] = True
    return mask


def check_readable(paths: Mapping[str, Path], opener: Callable[[Path], object]) -> list[str]:
    """The keys of ``paths`` whose file fails to decode with ``opener`` (a truncated or corrupt JPEG)."""
    bad = []
    for key, path in paths.items():
        try:
            opener(path)
        except Exception:  # any decoding failure means the same to the study: the image is unusable
            bad.append(key)
    return bad
