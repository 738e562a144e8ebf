"""The decoded images of one dataset as uint8 tensors, with their labels and splits.

Training, evaluation and the figures all read an :class:`ImageSet`: images are decoded and resized
once (see :mod:`bloodlib.data.images`), so no epoch and no notebook decodes a JPEG again.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bloodlib.data import acquire, cleaning, deepapl, fingerprint, folders, images, layout, splits
from bloodlib import config
from bloodlib.utils import fileio, paths
from bloodlib.data.images import load_cached
from bloodlib.data.sources import HOMES, PARTS, parse_dataset


@dataclasses.dataclass
class ImageSet:
    """Images (uint8, N x 3 x H x W), integer labels and the manifest rows they come from."""
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    rows: pd.DataFrame  # the kept manifest rows, in the order of ``images``: id, file, label, split, group, ...

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
        """Positions whose ``split`` is ``split`` ('train', 'val', 'test', 'test_simple'), in manifest order."""
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
    """Everything a notebook needs about the data: where it is, how it was cleaned, the decoded images and
    the splits every model of the run is trained and tested on."""
    settings: "config.Settings"
    root: Path
    cleaning: cleaning.Cleaning
    data: ImageSet
    boxes: pd.DataFrame | None  # every WBC box (for the box statistics), None without BCCD_Dataset
    splits: list[splits.Split]
    protocol: str  # "cv" or "holdout" (splits.protocol)


# The smoke profile cleans and trains on a seeded subset (seeded by the run's seed), taken from the listing before
# anything is read: every code path on real images in seconds. PBC's 17,092 files: stratified by class
# (folders.subset_files); DeepAPL's 7,007: whole patients, every class in at least 4 of them
# (deepapl.subset_patients). Tied to the profile rather than a notebook parameter: the full profile always reads
# every file.
SMOKE_SUBSETS: dict[str, int] = {"pbc": 400, "deepapl": 400}
SUBSET_RULES = {"pbc": "a seeded, stratified subset", "deepapl": "a seeded subset of whole patients"}


def max_images(settings: "config.Settings") -> int | None:
    """How many files of its dataset a run reads (a subset, :data:`SMOKE_SUBSETS`), None for all of them."""
    kind, _ = parse_dataset(settings.dataset)
    return SMOKE_SUBSETS.get(kind) if settings.profile == "smoke" else None


def prepare(settings: "config.Settings", *, params: cleaning.CleaningParams | None = None,
            progress: bool = True, split_parts: bool = True) -> Prepared:
    """Find the data, clean it, load the decoded images of the kept rows (cached) and split them.

    ``settings.dataset`` picks the data: ``"bccd"`` (the smears and labels.csv), ``"kaggle-augmented"``
    (dataset2-master), ``"pbc"`` (the PBC atlas), ``"deepapl"`` (DeepAPL's normal white cells, grouped by
    patient; both with the smoke profile a subset, :func:`max_images`), ``"folder:/path"`` or
    ``"csv:/path/list.csv"`` (see :mod:`bloodlib.data.folders`).
    Deterministic for a given data folder and seed: every notebook calls this and gets the same manifest and
    the same splits (:func:`bloodlib.data.splits.plan`), so a notebook can also be run on its own. The kept rows
    record the splits: ``split`` (holdout: train, val, test, or a further test set) and, for
    cross-validation, ``test_fold_r1``, ... (the fold each image is tested in, per repeat).
    ``split_parts=False``: no splits (``splits`` empty, protocol ``"none"``), for scoring every image of a
    dataset; without a split no class is too small, so by default the cleaning keeps every class.
    """
    params = params or cleaning.CleaningParams(seed=settings.seed, **({} if split_parts else {"min_per_class": 1}))
    kind, path = parse_dataset(settings.dataset)
    boxes = None
    if kind == "bccd":
        root = locate(settings)
        result, boxes = clean_bccd(root, params)
    elif kind == "kaggle-augmented":
        root = locate(settings)  # verifies dataset2-master's layout
        result = folders.clean_kaggle_augmented(root, params, progress=progress)
    elif kind == "pbc":
        result, root = folders.clean_pbc(locate(settings), params, max_images=max_images(settings),
                                         progress=progress)
    elif kind == "deepapl":
        result, root = deepapl.clean_deepapl(locate(settings), params, max_images=max_images(settings),
                                             progress=progress)
    else:
        result, root = folders.clean_folder(Path(path), params, progress=progress)
    classes = sorted(result.kept["label"].unique())
    # a copy: pandas' copy-on-write hands out read-only arrays, which torch warns about and cannot own
    labels = result.kept["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64, copy=True)
    if split_parts:
        kept, planned, how = split(result.kept, settings)
    else:
        kept, planned, how = result.kept.reset_index(drop=True), [], "none"
    pixels = load_cached(kept, root, settings.mode, settings.image_size, margin=settings.crop_margin,
                         cache=config.cache_dir() / "images", progress=progress)
    data = ImageSet(images=torch.from_numpy(pixels), labels=torch.as_tensor(labels, dtype=torch.long),
                    classes=classes, rows=kept)
    return Prepared(settings=settings, root=root, cleaning=result, data=data, boxes=boxes, splits=planned,
                    protocol=how)


def split(rows: pd.DataFrame, settings: "config.Settings") -> tuple[pd.DataFrame, list[splits.Split], str]:
    """The run's splits of the kept ``rows`` (:func:`bloodlib.data.splits.plan`), and the rows recording them:
    ``split`` (holdout: train, val, test; the dataset's further test sets as they are) or, for
    cross-validation, ``test_fold_r1``, ... (the fold each image is tested in, per repeat)."""
    rows = rows.reset_index(drop=True)
    how = splits.protocol(rows["split"], settings.folds)
    planned = splits.plan(rows["label"], rows["group"], rows["split"], folds=settings.folds, repeats=settings.repeats,
                          seed=settings.seed)
    assigned = splits.assignment(planned, len(rows))
    if how == "holdout":
        assigned = assigned["holdout"].where(assigned["holdout"] != "", rows["split"]).rename("split").to_frame()
    rows = pd.concat([rows.drop(columns=[c for c in assigned if c in rows]), assigned], axis=1)
    return rows, planned, how


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
    """The verified folder holding the data of ``settings.dataset``.

    bccd and kaggle-augmented: a data root in the Kaggle layout (a named folder used as it is; ``source`` may
    force a download; crop mode on bccd needs the WBC boxes unless ``require_boxes`` says otherwise); pbc: a
    folder holding ``PBC_dataset_normal_DIB/`` (named by ``data_dir`` or ``$BLOODLIB_PBC``; a ``data_dir`` that
    only repeats ``$BLOODLIB_DATA``, the Kaggle-layout folder ``make`` exports for every run, is not taken for
    one); deepapl: likewise a folder holding ``Data/All/`` (``data_dir`` or ``$BLOODLIB_DEEPAPL``); a ``folder:``
    or ``csv:`` dataset: the folder holding its files, read where it is (no download, no data_dir).
    """
    kind, _ = parse_dataset(settings.dataset)
    if kind not in PARTS:
        if source not in ("auto", "local"):
            raise ValueError(f"source={source!r} downloads the Kaggle data; the dataset {settings.dataset!r} is "
                             f"read where it is: use source='auto'")
        return acquire.own_root(settings.dataset)
    named = settings.data_dir if source in ("auto", "local") else None
    from_environment = os.environ.get(config.ENV_DATA)  # resolve() fills data_dir from it: BCCD's, not PBC's
    own_variable = HOMES[kind][0] != config.ENV_DATA  # pbc, deepapl: a data root of their own
    if own_variable and named is not None and from_environment and named == Path(from_environment).expanduser():
        named = None
    boxes = kind == "bccd" and settings.mode == "crop" if require_boxes is None else require_boxes
    return acquire.find_data(named, dataset=kind, source=source, require_boxes=boxes)


def data_files(settings: "config.Settings", root: Path) -> list[str]:
    """Every file a run with ``settings`` reads in ``root`` (what :func:`locate` gave), as posix paths relative
    to it: :func:`bloodlib.data.fingerprint.dataset_files`, for pbc and deepapl with the smoke profile its subset
    (:func:`max_images`)."""
    return fingerprint.dataset_files(settings.dataset, root, max_images=max_images(settings), seed=settings.seed)


def data_checksum(settings: "config.Settings", root: Path | None = None) -> str:
    """The checksum of every file a run with ``settings`` reads (the one its run record shows); ``root``: where
    :func:`locate` finds the data, unless given."""
    root = locate(settings) if root is None else root
    return fingerprint.manifest_checksum(fingerprint.data_manifest(root, data_files(settings, root)))


def write_data_record(settings: "config.Settings", root: Path) -> dict:
    """Fingerprint every file a run on ``settings.dataset`` reads in ``root`` (what :func:`locate` gave, the
    files of :func:`data_files`): ``data/data_manifest.csv`` (path, bytes, sha256), summed up in
    ``data/data_record.json`` under ``settings.output_dir``."""
    files = data_files(settings, root)
    manifest = fingerprint.data_manifest(root, files)
    shown = paths.portable(Path(root).resolve(), config.project_root())  # no path of this machine in the report
    record = {
        "dataset": settings.dataset,
        **({"subset": f"{len(files)} files: {SUBSET_RULES[parse_dataset(settings.dataset)[0]]} "
                      f"({settings.profile} profile, seed {settings.seed})"}
           if max_images(settings) is not None else {}),
        "root": shown,
        "sources": acquire.read_sources(root, settings.dataset) or "local folder",
        "files": len(manifest),
        "bytes": int(manifest["bytes"].sum()),
        "checksum": fingerprint.manifest_checksum(manifest),
        "layout": {**layout.verify_layout(root, dataset=settings.dataset), "root": shown},
    }
    folder = settings.output_dir / "data"
    fingerprint.write_manifest(manifest, folder / "data_manifest.csv")
    fileio.write_json(folder / "data_record.json", record)
    return record


def manifest(prepared: Prepared) -> pd.DataFrame:
    """Every row of the cleaning, the kept ones with the splits of this run (see :func:`prepare`)."""
    rows = prepared.cleaning.manifest
    fold_columns = [c for c in prepared.data.rows if c.startswith("test_fold_r")]
    by_id = prepared.data.rows.set_index("id")[["split", *fold_columns]]
    out = rows.drop(columns=[c for c in by_id if c in rows]).join(by_id, on="id")
    out["split"] = out["split"].fillna("")
    out[fold_columns] = out[fold_columns].fillna(-1).astype(int)
    return out


def save_cleaning(prepared: Prepared) -> Path:
    """The manifest (with this run's splits) and the cleaning table under ``output_dir/data``."""
    folder = prepared.settings.output_dir / "data"
    fileio.write_csv(folder / "manifest.csv", manifest(prepared))
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


def oversampling_table(data: ImageSet, planned: list[splits.Split]) -> pd.DataFrame:
    """Per split and class: training images, their repeat factor (from that split's training part alone)
    and the training images one epoch then sees."""
    labels = data.labels.numpy()
    n = len(data.classes)
    tables = {}
    for split in planned:
        train = labels[split.train]
        tables[split.name] = pd.DataFrame(
            {"training images": np.bincount(train, minlength=n), "repeat factor": repeat_factors(train, n),
             "training images per epoch": np.bincount(labels[data.training_indices(split.train)], minlength=n)},
            index=pd.Index(data.classes, name="class"))
    return pd.concat(tables, names=["split"])


def size_table(prepared: Prepared) -> pd.DataFrame:
    """Image sizes from the file headers of the kept images, beside the WBC box sizes where there are boxes."""
    kept = prepared.cleaning.kept
    sizes = images.image_sizes([prepared.root / f for f in kept["file"]])
    if prepared.boxes is None:
        return sizes
    boxes = prepared.boxes[prepared.boxes["file"].isin(kept["file"])]
    return pd.concat([sizes, boxes[["box_width", "box_height"]].reset_index(drop=True)], axis=1)
