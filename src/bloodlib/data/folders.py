"""Datasets beyond the 347 smears: Kaggle's augmented ``dataset2-master`` and any folder-per-class or CSV list.

Each becomes the same :class:`~bloodlib.data.cleaning.Cleaning` (manifest + per-step table) as the BCCD smears,
so that every notebook runs unchanged on it; the ``dataset`` parameter picks one
(:func:`bloodlib.data.sources.parse_dataset`):

- ``"bccd"``: the 347 labelled smears (:func:`bloodlib.data.datasets.clean_bccd`);
- ``"kaggle-augmented"``: ``dataset2-master/images/{TRAIN,TEST,TEST_SIMPLE}/<CLASS>/*.jpeg`` of the same
  Kaggle download (:func:`clean_kaggle_augmented`);
- ``"pbc"``: the PBC atlas of normal peripheral blood cells, ``PBC_dataset_normal_DIB/<class>/*.jpg``
  (Acevedo et al. 2020; 8 classes, its folder names as labels), cleaned as a folder (:func:`clean_pbc`);
- ``"deepapl"``: DeepAPL's normal white cells, listed and grouped by patient in :mod:`bloodlib.data.deepapl` and
  cleaned by the same steps (:func:`clean_listed`);
- ``"folder:/path"``: a torchvision ``ImageFolder`` tree ``root/<class>/**/<image>``; ``"csv:/path/list.csv"``:
  a CSV with columns ``path,label`` (:func:`clean_folder`).

Every file is read once: its SHA-256, header size and whether it decodes are remembered per
(path, size, mtime) under ``config.cache_dir()/"index"`` (:func:`bloodlib.data.fileindex.index_files`).
Byte-identical copies are found by that hash (:func:`bloodlib.data.near_duplicates.find_duplicates`): a copy under
the same class is dropped (``duplicate``, the first copy kept), copies under two classes are all dropped
(``conflicting_duplicate``); files that are not images (``not_an_image``) or do not decode (``unreadable``)
are skipped and listed in the manifest.

dataset2-master holds augmented copies (rotation, shift, shear, zoom, flips, black fill) of 277 TRAIN and 71
TEST smears: 16-155 copies per smear depending on the class. Its names ``_<k>_<n>.jpeg`` (Keras'
``save_to_dir``) do not name the source: ``k`` is a position in a shuffled pass over the smears and ``n`` is
random (checked against the dataset-master originals). The copies are grouped by image similarity instead
(:func:`bloodlib.data.near_duplicates.source_groups`), and the validation split taken from TRAIN is grouped by
those source groups, so that copies of one smear do not straddle train and validation.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from bloodlib.data import fileindex, images, near_duplicates
from bloodlib.data.cleaning import Cleaning, CleaningParams, step_table
from bloodlib.data.sources import PBC_FOLDER

KAGGLE_IMAGES = "dataset2-master/images"
KAGGLE_SUBSETS = {"TRAIN": "train", "TEST": "test", "TEST_SIMPLE": "test_simple"}  # folder -> split

# The manifest's drop reasons for these datasets, in the order the steps run (the cleaning table's rows).
STEPS = {
    "missing_file": "drop listed files that do not exist",
    "empty_label": "drop empty labels",
    "not_an_image": "skip files that are not images",
    "unreadable": "drop unreadable images",
    "conflicting_duplicate": "drop byte-identical copies under two classes",
    "duplicate": "drop byte-identical copies (first kept)",
    "rare_class": "drop classes too small to split",
}
COLUMNS = ["id", "file", "label", "raw_label", "kept", "reason", "split", "group", "box", "box_source",
           "wbc_boxes", "subset", "sha256", "width", "height", "duplicate_of"]


# ------------------------------------------------------------------------------------ kaggle-augmented

def kaggle_files(root: Path) -> pd.DataFrame:
    """Every file under ``dataset2-master/images/<SUBSET>/<CLASS>/`` as (file, subset, raw_label)."""
    images = Path(root) / KAGGLE_IMAGES
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: not found; the 'kaggle-augmented' dataset needs the dataset2-master "
                                f"folder of the Kaggle download (images/TRAIN, images/TEST, images/TEST_SIMPLE)")
    rows = []
    for subset in KAGGLE_SUBSETS:
        folder = images / subset
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not found; expected {list(KAGGLE_SUBSETS)} under {images}")
        for label in _class_folders(folder):
            for path in sorted(p for p in (folder / label).rglob("*") if p.is_file()):
                rows.append(dict(file=path.relative_to(root).as_posix(), subset=subset, raw_label=label))
    return pd.DataFrame(rows, columns=["file", "subset", "raw_label"])


def clean_kaggle_augmented(root: Path, params: CleaningParams = CleaningParams(), *,
                           cache: Path | bool | None = None, progress: bool = True) -> Cleaning:
    """dataset2-master as a :class:`Cleaning`: TRAIN -> train/val grouped by source smear, TEST -> test,
    TEST_SIMPLE -> test_simple; duplicates and non-images dropped and counted.

    The validation part of TRAIN is chosen by :func:`bloodlib.data.splits.plan`, grouped by source smear. ``cache``: where the
    file index and the source groups are remembered (default ``config.cache_dir()/"index"``, ``False``: none).
    """
    root = Path(root)
    manifest = kaggle_files(root)
    manifest["id"] = manifest["file"].map(lambda f: Path(f).relative_to(KAGGLE_IMAGES).with_suffix("").as_posix())
    manifest, table = _clean(manifest, root, params, source=str(Path(root) / KAGGLE_IMAGES), cache=cache,
                             progress=progress)
    # source groups per subset and class folder (TRAIN and TEST were made from different smears);
    # TEST_SIMPLE holds the unaugmented sources of TEST: each file is its own source
    kept = manifest["kept"]
    manifest.loc[kept, "group"] = manifest.loc[kept, "id"]
    augmented = manifest[kept & manifest["subset"].isin(["TRAIN", "TEST"])]
    for (subset, label), rows in augmented.groupby(["subset", "label"], sort=True):
        groups = near_duplicates.source_groups([root / f for f in rows["file"]], cache=cache, progress=progress)
        manifest.loc[rows.index, "group"] = [f"{subset}/{label}/{g}" for g in groups]
    train = manifest.index[kept & (manifest["subset"] == "TRAIN")]
    _check_classes(manifest.loc[train], params, f"{root / KAGGLE_IMAGES / 'TRAIN'}")
    manifest.loc[kept, "split"] = manifest.loc[kept, "subset"].map(KAGGLE_SUBSETS)  # the dataset's own split
    return Cleaning(manifest=manifest[COLUMNS + [c for c in manifest.columns if c not in COLUMNS]],
                    table=table, params=params)


# --------------------------------------------------------------------------------- folder or CSV list

def folder_files(root: Path) -> pd.DataFrame:
    """An ImageFolder tree: every file under ``root/<class>/`` (any depth) as (file, raw_label)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    labels = _class_folders(root)
    if not labels:
        raise ValueError(f"{root}: no class folders; expected one sub-folder per class (root/<class>/<image>)")
    rows = [dict(file=p.relative_to(root).as_posix(), raw_label=label)
            for label in labels for p in sorted((root / label).rglob("*")) if p.is_file()]
    if not rows:
        raise ValueError(f"{root}: the class folders {labels} hold no files")
    return pd.DataFrame(rows, columns=["file", "raw_label"])


def csv_files(path: Path) -> tuple[pd.DataFrame, Path]:
    """A CSV list (columns ``path,label``; paths absolute or relative to the CSV's folder) as
    (file, raw_label) relative to the returned data root, which holds every listed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CSV list not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from err
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if not {"path", "label"} <= set(frame.columns):
        raise ValueError(f"{path}: expected columns 'path,label' (with that header line), found {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError(f"{path}: the list is empty")
    empty = frame["path"].str.strip() == ""
    if empty.any():
        raise ValueError(f"{path}: line {int(np.flatnonzero(empty)[0]) + 2}: empty path")
    base = path.parent.resolve()
    absolute = [Path(os.path.normpath(base / Path(p.strip()).expanduser())) for p in frame["path"]]
    inside = all(_inside(p, base) for p in absolute)
    root = base if inside else Path(os.path.commonpath([str(p.parent) for p in absolute]))
    files = [p.relative_to(root).as_posix() for p in absolute]
    return pd.DataFrame({"file": files, "raw_label": frame["label"].str.strip()}), root


def subset_files(listed: pd.DataFrame, max_images: int | None, seed: int, source: str = "") -> pd.DataFrame:
    """A seeded subset of ``max_images`` listed files, stratified by ``raw_label`` (sklearn's
    ``train_test_split``), in listing order; every file when ``max_images`` is None or not smaller than the list.

    Taken from the listing, before anything is read: a smoke run on a large folder indexes only its subset."""
    if max_images is None or max_images >= len(listed):
        return listed
    try:
        chosen, _ = train_test_split(listed, train_size=max_images, stratify=listed["raw_label"], random_state=seed)
    except ValueError as err:  # a class with one file, or fewer files than classes
        raise ValueError(f"{source}: no stratified subset of {max_images} of its {len(listed)} files ({err})") from err
    return chosen.sort_index()


def clean_folder(spec_path: Path, params: CleaningParams = CleaningParams(), *, group_by: str = "content",
                 max_images: int | None = None, cache: Path | bool | None = None,
                 progress: bool = True) -> tuple[Cleaning, Path]:
    """A folder-per-class tree or a CSV list as a :class:`Cleaning`, and the data root ``file`` is relative to.

    Each kept file's group is its content (byte-identical copies are one group), so that no copy straddles two
    splits (:func:`bloodlib.data.splits.plan`). ``group_by="similarity"`` groups augmented copies of one source too
    (:func:`bloodlib.data.near_duplicates.source_groups`, per class), for folders that already hold augmentations.
    ``max_images``: clean only a subset of the listed files, seeded by ``params.seed`` (:func:`subset_files`).
    """
    if group_by not in ("content", "similarity"):
        raise ValueError(f"group_by must be 'content' or 'similarity', got {group_by!r}")
    spec_path = Path(spec_path).expanduser()
    if spec_path.is_file() or spec_path.suffix.lower() == ".csv":
        listed, root = csv_files(spec_path)
    else:
        listed, root = folder_files(spec_path), spec_path.resolve()
    listed = subset_files(listed, max_images, params.seed, str(spec_path))
    return clean_listed(listed, root, params, group_by=group_by, source=str(spec_path), cache=cache,
                        progress=progress), root


def clean_listed(listed: pd.DataFrame, root: Path, params: CleaningParams, *, group_by: str, source: str,
                 cache: Path | bool | None = None, progress: bool = True) -> Cleaning:
    """Listed files (``file`` relative to ``root``, ``raw_label``; ``label`` when the listing names the class
    otherwise, and any other columns, which the manifest keeps) cleaned by the steps of :data:`STEPS`, each kept
    file grouped by ``group_by``: ``"content"`` (byte-identical copies are one group), ``"similarity"``
    (augmented copies of one source, :func:`bloodlib.data.near_duplicates.source_groups` per class) or the name of
    a column of the listing (``"patient"``: the cells of one patient are one group). ``source`` names the data in
    errors."""
    if group_by not in ("content", "similarity") and group_by not in listed.columns:
        raise ValueError(f"group_by must be 'content', 'similarity' or a column of the listing, got {group_by!r}")
    listed = listed.reset_index(drop=True)
    listed["subset"] = ""
    listed["id"] = listed["file"]
    manifest, table = _clean(listed, root, params, source=source, cache=cache, progress=progress)
    kept = manifest["kept"]
    # a kept file's sha256 is unique once the duplicates are dropped: content groups are single files
    by_content = group_by in ("content", "similarity")
    manifest.loc[kept, "group"] = manifest.loc[kept, "sha256" if by_content else group_by]
    if group_by == "similarity":
        for label, rows in manifest[kept].groupby("label"):
            groups = near_duplicates.source_groups([root / f for f in rows["file"]], cache=cache, progress=progress)
            manifest.loc[rows.index, "group"] = [f"{label}/{g}" for g in groups]
    _check_classes(manifest.loc[manifest.index[kept]], params, source)
    return Cleaning(manifest=manifest[COLUMNS + [c for c in manifest.columns if c not in COLUMNS]],
                    table=table, params=params)


# -------------------------------------------------------------------------------------------------- PBC

def clean_pbc(root: Path, params: CleaningParams = CleaningParams(), *, max_images: int | None = None,
              cache: Path | bool | None = None, progress: bool = True) -> tuple[Cleaning, Path]:
    """The PBC atlas under a data root (``root/PBC_dataset_normal_DIB/<class>/*.jpg``, what
    :func:`bloodlib.data.acquire.find_data` gives) cleaned as a folder: :func:`clean_folder`'s steps, labels the
    class folders' names. The published copy holds a renamed ``.DS_Store`` (``not_an_image``) and 17
    byte-identical pairs, one under two classes (``conflicting_duplicate``), the rest within one (``duplicate``).
    Returns the cleaning and the PBC folder, which ``file`` is relative to. PBC has no test set of its own: the
    run holds one out (``folds=1``, ``config.DATASET_DEFAULTS``)."""
    return clean_folder(Path(root) / PBC_FOLDER, params, max_images=max_images, cache=cache, progress=progress)


# ------------------------------------------------------------------------------------------- the report

def box_sources(cleaning: Cleaning) -> pd.DataFrame:
    """How crop mode frames the kept images of a dataset without boxes: found by the stain, or centred."""
    names = {"stain": "WBC found by its stain", "centre": "none found: centred square"}
    return cleaning.kept["box_source"].map(names).value_counts().to_frame("images")


# ----------------------------------------------------------------------------------------- shared steps

def _clean(manifest: pd.DataFrame, root: Path, params: CleaningParams, *, source: str, cache: Path | bool | None,
           progress: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The drop steps shared by every folder dataset; returns the manifest (kept, reason, ...) and the table."""
    manifest = manifest.reset_index(drop=True)
    repeat = manifest.groupby("id").cumcount()  # a CSV may list one file twice: a byte-identical copy
    manifest["id"] = manifest["id"].where(repeat == 0, manifest["id"] + "#" + (repeat + 1).astype(str))
    if "label" not in manifest:  # else the listing named the classes (DeepAPL: the study's names)
        manifest["label"] = manifest["raw_label"]
    manifest["reason"] = ""
    exists = np.array([(root / f).is_file() for f in manifest["file"]], bool)
    present = list(dict.fromkeys(manifest.loc[exists, "file"]))
    index = fileindex.index_files(root, present, cache=cache, progress=progress).set_index("file")
    for column, empty in (("sha256", ""), ("width", 0), ("height", 0), ("status", "missing"), ("detail", ""),
                          ("stain_box", "")):
        manifest[column] = manifest["file"].map(index[column]).fillna(empty) if len(index) else empty
    manifest["width"] = manifest["width"].astype(int)
    manifest["height"] = manifest["height"].astype(int)
    rows = [("files found", manifest["label"].copy())]  # (step, labels of the images still kept)

    def drop(reason: str, mask) -> None:
        mask = np.asarray(mask, bool) & (manifest["reason"] == "").to_numpy()
        manifest.loc[mask, "reason"] = reason
        rows.append((STEPS[reason], manifest.loc[manifest["reason"] == "", "label"]))

    if not exists.all():
        drop("missing_file", ~exists)
    if (manifest["raw_label"] == "").any():
        drop("empty_label", manifest["raw_label"] == "")
    drop("not_an_image", manifest["status"] == "not_an_image")
    drop("unreadable", manifest["status"] == "unreadable")
    duplicate, original = near_duplicates.find_duplicates(manifest[manifest["reason"] == ""])
    manifest["duplicate_of"] = original.reindex(manifest.index).fillna("")
    drop("conflicting_duplicate", duplicate.reindex(manifest.index).fillna("") == "conflicting_duplicate")
    drop("duplicate", duplicate.reindex(manifest.index).fillna("") == "duplicate")
    counts = manifest.loc[manifest["reason"] == "", "label"].value_counts()
    needed = params.min_per_class
    drop("rare_class", manifest["label"].isin(counts[counts < needed].index))
    manifest["kept"] = manifest["reason"] == ""
    manifest.loc[~manifest["kept"], "label"] = ""
    manifest["split"] = ""  # a folder brings no split of its own (kaggle-augmented: its subsets, set later)
    manifest["group"] = ""
    # no annotated boxes here: crop mode centres on the WBC found by its stain, else on the image's centre
    stained = manifest["kept"] & (manifest["stain_box"] != "")
    manifest["box_source"] = np.where(stained, "stain", np.where(manifest["kept"], "centre", ""))
    boxes = [tuple(float(v) for v in box.split()) if box else images.centre_square(w, h)
             for w, h, box in zip(manifest["width"], manifest["height"], manifest["stain_box"])]
    manifest["box"] = [box if k else None for box, k in zip(boxes, manifest["kept"])]
    manifest = manifest.drop(columns="stain_box")
    manifest["wbc_boxes"] = 0
    return manifest, step_table(rows)  # classes by name


def _class_folders(folder: Path) -> list[str]:
    """Class names: the sub-folders, in name order (hidden ones such as ``.ipynb_checkpoints`` skipped)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _check_classes(rows: pd.DataFrame, params: CleaningParams, source: str) -> None:
    classes = rows["label"].unique()
    if len(classes) < 2:
        raise ValueError(f"{source}: {len(classes)} class(es) left after cleaning ({list(classes)}); a classifier "
                         f"needs at least 2, each with at least {params.min_per_class} images")
