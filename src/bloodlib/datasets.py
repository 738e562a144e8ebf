"""The decoded images of one dataset as uint8 tensors, with their labels and splits.

Training, evaluation and the figures all read an :class:`ImageSet`: images are decoded and resized
once (see :mod:`bloodlib.images`), so no epoch and no notebook decodes a JPEG again.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import cleaning, config, fileio, images
from .images import load_cached


@dataclasses.dataclass
class ImageSet:
    """Images (uint8, N x 3 x H x W), integer labels and the manifest rows they come from."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    rows: pd.DataFrame  # the kept manifest rows, in the order of ``images``: id, file, label, split, fold, repeat, group

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 N x 3 x H x W, got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels) or len(self.images) != len(self.rows):
            raise ValueError("images, labels and rows differ in length")
        self.rows = self.rows.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def indices(self, split: str) -> np.ndarray:
        """Positions of one split ('train', 'val' or 'test'), in manifest order."""
        return np.flatnonzero(self.rows["split"].to_numpy() == split)

    def training_indices(self, train: np.ndarray, oversample: bool = True) -> np.ndarray:
        """Train positions with each rare class repeated ``round(largest / class count)`` times: the
        seed's "train the less-amount classes multiple times". Factors come from ``train`` alone, so the
        same rule serves the fixed split and every cross-validation fold; validation and test positions
        are never passed through here."""
        train = np.asarray(train)
        if not oversample:
            return train
        factors = repeat_factors(self.labels.numpy()[train])
        return np.repeat(train, factors[self.labels.numpy()[train]])


def repeat_factors(labels: np.ndarray, num_classes: int = 0) -> np.ndarray:
    """Per class index, how many times each training image is repeated (1 for the largest class)."""
    counts = np.bincount(labels, minlength=num_classes)
    present = counts > 0
    factors = np.ones_like(counts)
    factors[present] = np.maximum(1, np.rint(counts[present].max() / counts[present])).astype(int)
    return factors


@dataclasses.dataclass
class Prepared:
    """Everything a notebook needs about the data: where it is, how it was cleaned, the decoded images."""
    settings: "config.Settings"
    root: Path
    cleaning: cleaning.Cleaning
    data: ImageSet
    boxes: pd.DataFrame | None  # every WBC box (for the box statistics), None without BCCD_Dataset


def prepare(settings: "config.Settings", *, params: cleaning.CleaningParams | None = None,
            progress: bool = True) -> Prepared:
    """Find the data, clean it, split it and load the decoded images of the kept rows (cached).

    ``settings.dataset`` picks the data: ``"bccd"`` (the smears and labels.csv), ``"kaggle-augmented"``
    (dataset2-master), ``"folder:/path"`` or ``"csv:/path/list.csv"`` (see :mod:`bloodlib.folders`).
    Deterministic for a given data folder and seed: every notebook calls this and gets the same manifest,
    so a notebook can also be run on its own.
    """
    from . import folders

    params = params or cleaning.CleaningParams(seed=settings.seed, folds=max(2, settings.folds))
    kind, path = folders.parse_dataset(settings.dataset)
    boxes = None
    if kind == "bccd":
        root = locate(settings)
        result, boxes = clean_bccd(root, params)
    elif kind == "kaggle-augmented":
        root = locate(settings, require_boxes=False)
        if not (root / folders.KAGGLE_IMAGES).is_dir():
            raise FileNotFoundError(f"{root}: no {folders.KAGGLE_IMAGES}/ (the kaggle-augmented dataset is part "
                                    f"of the Kaggle download paultimothymooney/blood-cells)")
        result = folders.clean_kaggle_augmented(root, params, progress=progress)
    else:
        result, root = folders.clean_folder(Path(path), params, progress=progress)
    kept = result.kept
    pixels = load_cached(kept, root, settings.mode, settings.image_size, margin=settings.crop_margin,
                         cache=config.cache_dir() / "images", progress=progress)
    classes = sorted(kept["label"].unique())
    labels = torch.tensor(kept["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(), dtype=torch.long)
    data = ImageSet(images=torch.from_numpy(pixels), labels=labels, classes=classes, rows=kept)
    return Prepared(settings=settings, root=root, cleaning=result, data=data, boxes=boxes)


def clean_bccd(root: Path, params: cleaning.CleaningParams) -> tuple[cleaning.Cleaning, pd.DataFrame | None]:
    """The seed's cleaning on a BCCD data root, with the WBC box of each kept image chosen."""
    root = Path(root)
    labels_csv = root / "dataset-master" / "labels.csv"
    labels = cleaning.read_labels(labels_csv)
    files = {f"dataset-master/JPEGImages/{p.name}" for p in (root / "dataset-master" / "JPEGImages").glob("*.jpg")}
    listed = sorted(files & set(labels["image_id"].map(cleaning.image_file)))
    unreadable = unreadable_files(root, listed)
    boxes = images.wbc_boxes(root) if images.has_boxes(root) else None
    box_counts = boxes.groupby("file").size().to_dict() if boxes is not None else None
    result = cleaning.clean(labels, files, unreadable=unreadable, wbc_boxes=box_counts, params=params,
                            source=str(labels_csv))
    manifest = result.manifest
    manifest["wbc_boxes"] = manifest["file"].map(box_counts or {}).fillna(0).astype(int)
    by_file = dict(list(boxes.groupby("file"))) if boxes is not None else {}
    manifest["box"] = [images.choose_box(by_file[f]) if f in by_file else None for f in manifest["file"]]
    return result, boxes


def unreadable_files(root: Path, files: list[str]) -> list[str]:
    """Files that fail to decode, remembered per (name, size, mtime) so each JPEG is checked only once."""
    key = images.cache_key(pd.DataFrame({"file": files}), root, "check", 0, 0)
    record = config.cache_dir() / "images" / f"unreadable-{key}.json"
    if record.is_file():
        return json.loads(record.read_text())
    bad = cleaning.check_readable({f: Path(root) / f for f in files}, images.decode)
    fileio.write_json(record, bad)
    return bad


def box_rule_counts(manifest: pd.DataFrame) -> pd.Series:
    """Of the single-label images that reach the box rule, how many had 0, 1 or 2+ WBC boxes."""
    reached = manifest[manifest["reason"].isin(["", "no_wbc_box", "neutrophil_subsample"])]
    cases = reached["wbc_boxes"].clip(upper=2).map({0: "no WBC box (dropped)", 1: "one WBC box",
                                                       2: "two or more WBC boxes (nearest the centre)"})
    return cases.value_counts().rename("images")


def locate(settings: "config.Settings", source: str = "auto", *, require_boxes: bool | None = None) -> Path:
    """The data root for these settings: a named folder is used as it is; ``source`` may force a download."""
    from . import acquire

    named = settings.data_dir if source in ("auto", "local") else None
    boxes = settings.mode == "crop" if require_boxes is None else require_boxes
    return acquire.find_data(named, source=source, require_boxes=boxes)


def write_data_record(root: Path, output_dir: Path) -> dict:
    """Fingerprint the data a run used (``data/data_manifest.csv``) and sum it up in ``data/data_record.json``."""
    from . import acquire

    manifest = acquire.data_manifest(root)
    record = {
        "root": str(Path(root).resolve()),
        "sources": acquire.read_sources(root) or "local folder",
        "files": len(manifest),
        "bytes": int(manifest["bytes"].sum()),
        "checksum": acquire.manifest_checksum(manifest),
        "layout": acquire.verify_layout(root),
    }
    folder = Path(output_dir) / "data"
    acquire.write_manifest(manifest, folder / "data_manifest.csv")
    fileio.write_json(folder / "data_record.json", record)
    return record


def save_cleaning(prepared: Prepared) -> Path:
    """The cleaning manifest and table under ``output_dir/data`` for the later notebooks and the report."""
    folder = prepared.settings.output_dir / "data"
    fileio.write_csv(folder / "manifest.csv", prepared.cleaning.manifest)
    fileio.write_csv(folder / "cleaning_table.csv", prepared.cleaning.table, index=True)
    fileio.write_json(folder / "cleaning_params.json", dataclasses.asdict(prepared.cleaning.params))
    return folder


def class_balance(result: cleaning.Cleaning) -> pd.DataFrame:
    """Images per class before the study's own steps and after cleaning (the seed's "distribution after
    cleaning" figure). For BCCD "before" is every single-label image with a readable file; for other datasets
    the first row of the cleaning table (every listed file)."""
    table = result.table
    before_step = cleaning.STEPS["unreadable"] if cleaning.STEPS["unreadable"] in table.index else table.index[0]
    classes = [c for c in table.columns if c not in ("total", cleaning.OTHER)]
    before = table.loc[before_step, classes]
    after = result.kept["label"].value_counts().reindex(classes, fill_value=0)
    return pd.DataFrame({"before": before, "after": after, "after (share)": (after / after.sum()).round(3)})


def oversampling_table(data: ImageSet) -> pd.DataFrame:
    """Per class: the repeat factor of the training split and the training images one epoch then sees."""
    train = data.indices("train")
    labels = data.labels.numpy()
    n = len(data.classes)
    return pd.DataFrame({"training images": np.bincount(labels[train], minlength=n),
                         "repeat factor": repeat_factors(labels[train], n),
                         "training images per epoch": np.bincount(labels[data.training_indices(train)], minlength=n)},
                        index=data.classes)


def size_table(prepared: Prepared) -> pd.DataFrame:
    """Image sizes from the file headers of the kept images, beside the WBC box sizes where there are boxes."""
    kept = prepared.cleaning.kept
    sizes = images.image_sizes([prepared.root / f for f in kept["file"]])
    if prepared.boxes is None:
        return sizes
    boxes = prepared.boxes[prepared.boxes["file"].isin(kept["file"])]
    return pd.concat([sizes, boxes[["box_width", "box_height"]].reset_index(drop=True)], axis=1)
