"""Datasets beyond the 347 smears: Kaggle's augmented ``dataset2-master`` and any folder-per-class or CSV list.

Each becomes the same :class:`~bloodlib.cleaning.Cleaning` (manifest + per-step table) as the BCCD smears,
so that every notebook runs unchanged on it; the ``dataset`` parameter picks one (:func:`parse_dataset`):

- ``"bccd"``: the 347 labelled smears (:func:`bloodlib.datasets.clean_bccd`);
- ``"kaggle-augmented"``: ``dataset2-master/images/{TRAIN,TEST,TEST_SIMPLE}/<CLASS>/*.jpeg`` of the same
  Kaggle download (:func:`clean_kaggle_augmented`);
- ``"folder:/path"``: a torchvision ``ImageFolder`` tree ``root/<class>/**/<image>``; ``"csv:/path/list.csv"``:
  a CSV with columns ``path,label`` (:func:`clean_folder`).

Every file is read once: its SHA-256, header size and whether it decodes are remembered per
(path, size, mtime) under ``config.cache_dir()/"index"`` (:func:`index_files`). Byte-identical copies are
found by that hash: a copy under the same class is dropped (``duplicate``, the first copy kept), copies under
two classes are all dropped (``conflicting_duplicate``); files that are not images (``not_an_image``) or do
not decode (``unreadable``) are skipped and listed in the manifest.

dataset2-master holds augmented copies (rotation, shift, shear, zoom, flips, black fill) of 277 TRAIN and 71
TEST smears: 16-155 copies per smear depending on the class. Its names ``_<k>_<n>.jpeg`` come from Keras'
``ImageDataGenerator.flow(save_to_dir=..., batch_size=1)``: ``k`` is the position of the image in one
shuffled pass over the source smears and ``n`` a random number, so neither names the source (checked on the
real files against their dataset-master originals: two copies sharing ``k``, or ``n``, come from the same
smear no more often than two copies drawn at random); the number of distinct ``k`` in a folder is its number
of sources (:func:`kaggle_sources`). The copies are grouped by image similarity instead
(:func:`source_groups`), and the validation split taken from TRAIN is grouped by those source groups, so that
copies of one smear do not straddle train and validation.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import StratifiedGroupKFold
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm.auto import tqdm

from . import config, fileio, images
from .cleaning import Cleaning, CleaningParams

KINDS = ("bccd", "kaggle-augmented", "folder", "csv")
KAGGLE_IMAGES = "dataset2-master/images"
KAGGLE_SUBSETS = {"TRAIN": "train", "TEST": "test", "TEST_SIMPLE": "test_simple"}  # folder -> split
KAGGLE_NAME = re.compile(r"_(\d+)_(\d+)$")  # Keras' save_to_dir names: _<position in the pass>_<random>
INDEX_VERSION = 2  # bump when what index_files records changes
GROUPS_VERSION = 1  # bump when source_groups changes
MAX_GROUPED = 15_000  # images per class that source_groups compares pairwise (memory grows with the square)

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
COLUMNS = ["id", "file", "label", "raw_label", "kept", "reason", "split", "fold", "group", "box", "box_source",
           "wbc_boxes", "subset", "sha256", "width", "height", "duplicate_of"]


# ------------------------------------------------------------------------------------------ the parameter

def parse_dataset(spec: str) -> tuple[str, str | None]:
    """``"bccd"`` | ``"kaggle-augmented"`` | ``"folder:/path"`` | ``"csv:/path/list.csv"`` -> (kind, path)."""
    text = str(spec or "").strip()
    kind, sep, path = text.partition(":")
    kind = kind.strip().lower()
    if not sep and kind in ("bccd", "kaggle-augmented"):
        return kind, None
    if sep and kind in ("folder", "csv") and path.strip():
        return kind, str(Path(path.strip()).expanduser())
    raise ValueError(f"unknown dataset {spec!r}: expected 'bccd', 'kaggle-augmented', 'folder:/path/to/root' "
                     f"(one sub-folder per class) or 'csv:/path/to/list.csv' (columns path,label)")


# ------------------------------------------------------------------------------------- what each file is

def inspect_file(path: Path) -> dict:
    """One read of a file: its SHA-256, whether it is an image that decodes (header size, status) and, for
    crop mode, the box of the WBC found by its stain (:func:`bloodlib.images.stain_box`; "" when none)."""
    data = Path(path).read_bytes()
    record = dict(sha256=hashlib.sha256(data).hexdigest(), width=0, height=0, status="ok", detail="", stain_box="")
    if Path(path).suffix.lower() not in IMG_EXTENSIONS:
        return dict(record, status="not_an_image", detail=f"extension {Path(path).suffix or '(none)'!r}")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return dict(record, status="not_an_image", detail=str(err)[:200])
    with image:
        record.update(width=image.width, height=image.height)
        scale = min(1.0, images.STAIN["work"] / max(image.width, image.height, 1))
        try:  # JPEG: decode at the smallest scale the stain search can use
            image.draft("RGB", (max(1, math.ceil(image.width * scale)), max(1, math.ceil(image.height * scale))))
            image.load()  # reads the whole stream: a truncated file fails here
        except Exception as err:  # any decoding failure means the same here: the image is unusable
            return dict(record, status="unreadable", detail=str(err)[:200])
        box = images.stain_box(image)  # in the decoded (drafted) image's pixels
        if box is not None:
            fx, fy = record["width"] / image.width, record["height"] / image.height
            record["stain_box"] = " ".join(f"{v * f:.1f}" for v, f in zip(box, (fx, fy, fx, fy)))
    return record


def index_files(root: Path, files: list[str], *, cache: Path | bool | None = None,
                progress: bool = True) -> pd.DataFrame:
    """:func:`inspect_file` for ``files`` (relative to ``root``), remembered per (path, size, mtime).

    Columns: file, bytes, mtime_ns, sha256, width, height, status ("ok", "not_an_image", "unreadable"), detail,
    stain_box ("xmin ymin xmax ymax" or "").
    The record lives in ``cache`` (default ``config.cache_dir()/"index"``; ``False``: none).
    """
    root = Path(root).resolve()
    record = _index_path(root, cache)
    known = _read_index(record)
    rows, todo = {}, []
    for file in files:
        stat = (root / file).stat()
        old = known.get(file)
        if old is not None and old["bytes"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
            rows[file] = old
        else:
            todo.append((file, stat.st_size, stat.st_mtime_ns))
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
            results = pool.map(lambda item: inspect_file(root / item[0]), todo)  # hashing and decoding free the GIL
            for (file, size, mtime), result in tqdm(zip(todo, results), total=len(todo), desc="indexing files",
                                                    disable=not progress, leave=False):
                rows[file] = dict(file=file, bytes=size, mtime_ns=mtime, **result)
        if record is not None:
            merged = {**known, **rows}
            fileio.write_csv(record, pd.DataFrame(list(merged.values()), columns=_INDEX_COLUMNS))
    return pd.DataFrame([rows[f] for f in files], columns=_INDEX_COLUMNS)


_INDEX_COLUMNS = ["file", "bytes", "mtime_ns", "sha256", "width", "height", "status", "detail", "stain_box"]


def _index_path(root: Path, cache: Path | bool | None) -> Path | None:
    if cache is False:
        return None
    folder = config.cache_dir() / "index" if cache in (None, True) else Path(cache)
    key = hashlib.sha256(f"{INDEX_VERSION}|{root}".encode()).hexdigest()[:16]
    return folder / f"files-{key}.csv"


def _read_index(path: Path | None) -> dict[str, dict]:
    """The remembered rows by file; a missing or damaged record is simply rebuilt."""
    if path is None or not path.is_file():
        return {}
    try:
        frame = pd.read_csv(path, dtype={"file": str, "sha256": str, "status": str, "detail": str, "stain_box": str},
                            keep_default_na=False)
        frame = frame[_INDEX_COLUMNS]
    except (ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError):
        return {}
    return {row["file"]: row for row in frame.to_dict("records")}


# ------------------------------------------------------------------------------------------- duplicates

def find_duplicates(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row: the drop reason of byte-identical copies, and the file each duplicate copies.

    Only rows with ``status == "ok"`` and a label count. Copies under one label: every copy after the first
    is a ``duplicate``. Copies under two or more labels: all are ``conflicting_duplicate`` (which label
    is right cannot be told).
    """
    reason = pd.Series("", index=frame.index)
    original = pd.Series("", index=frame.index)
    usable = frame[(frame["status"] == "ok") & (frame["raw_label"] != "")]
    for _, copies in usable.groupby("sha256", sort=False):
        if len(copies) < 2:
            continue
        if copies["raw_label"].nunique() > 1:
            reason[copies.index] = "conflicting_duplicate"
            original[copies.index] = copies["file"].iloc[0]
        else:
            reason[copies.index[1:]] = "duplicate"
            original[copies.index[1:]] = copies["file"].iloc[0]
    return reason, original


# ------------------------------------------------------------------------------- source groups (copies)

def source_groups(files: list[Path], *, min_copies: int = 5, cache: Path | bool | None = None,
                  progress: bool = True) -> list[str]:
    """Which files are augmented copies of one source image: a group id per file ("g000", "g001", ...).

    Each image gets a fingerprint that shifts, rotations and mirroring barely change (:func:`fingerprint`:
    the image on circles around its stained cell), compared at every rotation and mirror image over what
    both images show (:func:`fingerprint_distances`); :func:`cluster_fingerprints` groups them. Give the
    files of one class folder: copies of one source share its label. Remembered in ``cache`` (default
    ``config.cache_dir()/"index"``, ``False``: none) per (path, size, mtime).
    """
    files = [Path(f) for f in files]
    if len(files) == 0:
        return []
    record = _groups_path(files, min_copies, cache)
    if record is not None and record.is_file():
        try:
            groups = json.loads(record.read_text())
            if isinstance(groups, list) and len(groups) == len(files):
                return groups
        except (ValueError, OSError):
            pass  # a damaged record: computed again
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        prints = np.stack(list(tqdm(pool.map(fingerprint, files), total=len(files), desc="fingerprints",
                                    disable=not progress, leave=False)))
    labels = cluster_fingerprints(prints, min_copies=min_copies)
    groups = [f"g{label:03d}" for label in labels]
    if record is not None:
        fileio.write_json(record, groups)
    return groups


def _groups_path(files: list[Path], min_copies: int, cache: Path | bool | None) -> Path | None:
    if cache is False:
        return None
    digest = hashlib.sha256(json.dumps([GROUPS_VERSION, min_copies, FINGERPRINT]).encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    folder = config.cache_dir() / "index" if cache in (None, True) else Path(cache)
    return folder / f"groups-{digest.hexdigest()[:16]}.json"


# width x height decoded (JPEG draft mode); circles x points on each and the outer radius (fraction of the
# height); how much bluer than green a pixel must be to count as stained nucleus; the angular harmonics
# compared and the rotations tried; the least share of the circles two images must both see to be compared
FINGERPRINT = dict(width=80, height=60, rings=8, angles=64, radius=1 / 3, stain=50, harmonics=6, rotations=16,
                   overlap=0.3)


def fingerprint(path: Path) -> np.ndarray:
    """rings x angles x 4 (float32): the colours (0-1) on circles around the image's stained cell, and a
    mask (1 where the point is inside the image and not the black fill a rotation or shift leaves).

    A shift moves the centre with the cell, a rotation rolls the angle axis and a mirror image reverses it:
    :func:`fingerprint_distances` undoes the last two and compares only what both images show.
    """
    p = FINGERPRINT
    with Image.open(path) as image:
        image.draft("RGB", (p["width"], p["height"]))
        image = image.convert("RGB").resize((p["width"], p["height"]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, np.float32)
    cy, cx = _stained_centre(pixels, p["stain"])
    radius = (np.arange(p["rings"]) + 0.5) / p["rings"] * p["radius"] * p["height"]
    theta = np.arange(p["angles"]) / p["angles"] * 2 * np.pi
    colours, inside = _bilinear(pixels, cy + radius[:, None] * np.sin(theta), cx + radius[:, None] * np.cos(theta))
    seen = (inside & (colours.sum(-1) > 30))[..., None]
    return np.concatenate([colours / 255.0 * seen, seen], axis=-1).astype(np.float32)


def _bilinear(pixels: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours at fractional (y, x), and whether each point lies inside the image (outside: black)."""
    height, width, _ = pixels.shape
    inside = (y >= 0) & (y <= height - 1) & (x >= 0) & (x <= width - 1)
    y, x = np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)
    y0, x0 = np.minimum(y.astype(int), height - 2), np.minimum(x.astype(int), width - 2)
    dy, dx = (y - y0)[..., None], (x - x0)[..., None]
    colours = ((pixels[y0, x0] * (1 - dx) + pixels[y0, x0 + 1] * dx) * (1 - dy)
               + (pixels[y0 + 1, x0] * (1 - dx) + pixels[y0 + 1, x0 + 1] * dx) * dy)
    return np.where(inside[..., None], colours, 0).astype(np.float32), inside


def _stained_centre(pixels: np.ndarray, stain: float) -> tuple[float, float]:
    """Centre of the largest strongly purple blob (a stained nucleus), else the middle of the image."""
    blob = images.largest_stained_blob(pixels, blue_over_green=stain, closing=2)
    if blob is None:
        return (pixels.shape[0] - 1) / 2, (pixels.shape[1] - 1) / 2
    ys, xs = np.nonzero(blob)
    return float(ys.mean()), float(xs.mean())


def fingerprint_distances(prints: np.ndarray, chunk: int = 256) -> np.ndarray:
    """N x N distances between fingerprints: the mean squared colour difference over the points both
    images show, at the best rotation and mirror image.

    A rotation is a circular shift of the angle axis, so every rotation is scored at once by cross-
    correlation (FFT): one complex matrix product per angular harmonic for the sum of squared differences
    and one for the shared area. Only the low harmonics are kept: a small misalignment costs little, and
    the products stay cheap. Pairs that share too little of their circles get the largest distance found.
    """
    import torch

    p = FINGERPRINT
    n, rings, angles, _ = prints.shape
    freqs, shifts = p["harmonics"] + 1, p["rotations"]
    prints = torch.from_numpy(np.ascontiguousarray(prints, dtype=np.float32))
    colour, seen = prints[..., :3], prints[..., 3:]
    square = (colour ** 2).sum(-1, keepdim=True)

    def spectrum(features: torch.Tensor) -> torch.Tensor:  # harmonic x image x feature
        f = torch.fft.rfft(features, dim=2)[:, :, :freqs]
        return f.permute(2, 0, 1, 3).reshape(freqs, n, -1).contiguous()

    # sum over shared points of (a - b)^2 = sum(a^2 seen_b) + sum(seen_a b^2) - 2 sum(a b): three correlations
    left, left_seen = torch.cat([spectrum(square), spectrum(seen), spectrum(colour)], dim=2), spectrum(seen)
    rights = []
    for flip in (False, True):  # as it is, and mirrored (angles reversed)
        c, s, q = (t.flip(2) if flip else t for t in (colour, seen, square))
        rights.append((torch.cat([spectrum(s), spectrum(q), -2 * spectrum(c)], dim=2).conj().transpose(1, 2),
                       spectrum(s).conj().transpose(1, 2)))
    # the inverse real DFT at ``shifts`` rotations as one real matrix: rotation x (cos part, sin part)
    shift, freq = torch.arange(shifts)[:, None], torch.arange(freqs)[None]
    weight = torch.where(freq == 0, 1.0, 2.0) / angles
    phase = 2 * torch.pi * shift * freq / shifts
    inverse = torch.cat([weight * torch.cos(phase), -weight * torch.sin(phase)], dim=1).float()
    least = p["overlap"] * rings * angles
    distances = torch.full((n, n), torch.inf)
    with torch.no_grad():
        for start in range(0, n, chunk):  # a block of rows against the columns from it on: d(i, j) = d(j, i)
            rows, cols = slice(start, start + chunk), slice(start, n)
            for right, right_seen in rights:
                total = left[:, rows] @ right[:, :, cols]
                shared = left_seen[:, rows] @ right_seen[:, :, cols]
                total = inverse @ torch.cat([total.real, total.imag]).reshape(2 * freqs, -1)
                shared = inverse @ torch.cat([shared.real, shared.imag]).reshape(2 * freqs, -1)
                mean = torch.where(shared >= least, total / shared.clamp_min(1), torch.inf).amin(0)
                distances[rows, cols] = torch.minimum(distances[rows, cols], mean.reshape(-1, n - start))
    distances = torch.minimum(distances, distances.T).numpy()
    np.fill_diagonal(distances, 0)
    finite = np.isfinite(distances)
    return np.where(finite, np.maximum(distances, 0), distances[finite].max())


def cluster_fingerprints(prints: np.ndarray, *, min_copies: int = 5) -> np.ndarray:
    """Cluster labels 0..k-1 of fingerprints: one per source image, as far as can be told.

    HDBSCAN finds the dense clusters in the distances (a source has at least ``min_copies`` copies); a file
    it leaves out joins the cluster of its nearest file. On dataset2-master TRAIN this finds 269 groups for
    its 277 smears (75/27/16/159 per class; checked by registering every copy on its dataset-master original:
    homogeneity 0.94-1.00, completeness 0.96-0.99); a validation image's smear then has 3.7% of its copies in
    the training part on average, against 83% for a random split.
    """
    from sklearn.cluster import HDBSCAN

    n = len(prints)
    if n < 2 * min_copies:  # too few files to find clusters in: each its own source
        return np.arange(n)
    if n > MAX_GROUPED:
        raise ValueError(f"{n} images in one class: too many to compare pairwise for source groups (at most "
                         f"{MAX_GROUPED}: memory grows with the square); group them by content instead")
    distances = fingerprint_distances(prints).astype(np.float64)
    labels = HDBSCAN(min_cluster_size=min_copies, metric="precomputed", copy=True).fit_predict(distances)
    stray = labels < 0
    if stray.all():
        return np.arange(n)
    if stray.any():
        np.fill_diagonal(distances, np.inf)
        labels[stray] = labels[~stray][distances[np.ix_(stray, ~stray)].argmin(1)]
    return np.unique(labels, return_inverse=True)[1]


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


def kaggle_sources(names: list[str]) -> int:
    """How many source images a Keras ``save_to_dir`` folder was made from: the number of positions ``k``.

    Every pass over the N sources writes positions 0..N-1, so ``k`` counts the sources (it does not name
    them: the pass is shuffled). 0 when the names do not follow ``_<k>_<n>``.
    """
    positions = {int(m.group(1)) for m in (KAGGLE_NAME.search(Path(n).stem) for n in names) if m}
    return len(positions)


def clean_kaggle_augmented(root: Path, params: CleaningParams = CleaningParams(), *,
                           cache: Path | bool | None = None, progress: bool = True) -> Cleaning:
    """dataset2-master as a :class:`Cleaning`: TRAIN -> train/val grouped by source smear, TEST -> test,
    TEST_SIMPLE -> test_simple; duplicates and non-images dropped and counted.

    Cross-validation folds (grouped) cover TRAIN only; TEST and TEST_SIMPLE keep fold -1. ``cache``: where the
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
        groups = source_groups([root / f for f in rows["file"]], cache=cache, progress=progress)
        manifest.loc[rows.index, "group"] = [f"{subset}/{label}/{g}" for g in groups]
    train = manifest.index[kept & (manifest["subset"] == "TRAIN")]
    _check_classes(manifest.loc[train], params, f"{root / KAGGLE_IMAGES / 'TRAIN'}")
    manifest.loc[kept, "split"] = manifest.loc[kept, "subset"].map(KAGGLE_SUBSETS)
    val = _grouped_part(manifest.loc[train], params.val_fraction, params.seed)
    manifest.loc[val, "split"] = "val"
    _assign_folds(manifest, train, params)
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


def clean_folder(spec_path: Path, params: CleaningParams = CleaningParams(), *, group_by: str = "content",
                 cache: Path | bool | None = None, progress: bool = True) -> tuple[Cleaning, Path]:
    """A folder-per-class tree or a CSV list as a :class:`Cleaning`, and the data root ``file`` is relative to.

    Stratified train/val/test and cross-validation folds, grouped so that no image and no byte-identical
    copy of it sits in two splits. ``group_by="similarity"`` groups augmented copies of one source too
    (:func:`source_groups`, per class), for folders that already hold augmentations.
    """
    if group_by not in ("content", "similarity"):
        raise ValueError(f"group_by must be 'content' or 'similarity', got {group_by!r}")
    spec_path = Path(spec_path).expanduser()
    if spec_path.is_file() or spec_path.suffix.lower() == ".csv":
        listed, root = csv_files(spec_path)
    else:
        listed, root = folder_files(spec_path), spec_path.resolve()
    listed["subset"] = ""
    listed["id"] = listed["file"]
    manifest, table = _clean(listed, root, params, source=str(spec_path), cache=cache, progress=progress)
    kept = manifest["kept"]
    manifest.loc[kept, "group"] = manifest.loc[kept, "sha256"]  # unique after the duplicates are dropped
    if group_by == "similarity":
        for label, rows in manifest[kept].groupby("label"):
            groups = source_groups([root / f for f in rows["file"]], cache=cache, progress=progress)
            manifest.loc[rows.index, "group"] = [f"{label}/{g}" for g in groups]
    rows = manifest.index[kept]
    _check_classes(manifest.loc[rows], params, str(spec_path))
    test = _grouped_part(manifest.loc[rows], params.test_fraction, params.seed)
    rest = rows.difference(test)
    val = _grouped_part(manifest.loc[rest], params.val_fraction / (1 - params.test_fraction), params.seed)
    manifest.loc[rows, "split"] = "train"
    manifest.loc[val, "split"] = "val"
    manifest.loc[test, "split"] = "test"
    _assign_folds(manifest, rows, params)
    return Cleaning(manifest=manifest[COLUMNS + [c for c in manifest.columns if c not in COLUMNS]],
                    table=table, params=params), root


# ------------------------------------------------------------------------------------------- the report

def summary(cleaning: Cleaning) -> pd.DataFrame:
    """Images per class and split (train, val, test, test_simple where present), and source groups per split."""
    kept = cleaning.kept
    table = pd.crosstab(kept["label"], kept["split"], margins=True, margins_name="total")
    table = table[[c for c in ("train", "val", "test", "test_simple", "total") if c in table.columns]]
    groups = kept.groupby("split")["group"].nunique().reindex(table.columns[:-1])
    table.loc["source groups"] = [*groups.fillna(0).astype(int), kept["group"].nunique()]
    return table


def box_sources(cleaning: Cleaning) -> pd.DataFrame:
    """How crop mode frames the kept images of a dataset without boxes: found by the stain, or centred."""
    names = {"stain": "WBC found by its stain", "centre": "none found: centred square"}
    return cleaning.kept["box_source"].map(names).value_counts().to_frame("images")


def skipped(cleaning: Cleaning) -> pd.DataFrame:
    """Every file left out and why (reason, the file it duplicates, the decoder's message), for the report."""
    columns = ["file", "raw_label", "reason", "duplicate_of", "detail"]
    dropped = cleaning.manifest.loc[~cleaning.manifest["kept"]]
    return dropped[[c for c in columns if c in dropped.columns]].reset_index(drop=True)


# ----------------------------------------------------------------------------------------- shared steps

def _clean(manifest: pd.DataFrame, root: Path, params: CleaningParams, *, source: str, cache: Path | bool | None,
           progress: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The drop steps shared by every folder dataset; returns the manifest (kept, reason, ...) and the table."""
    manifest = manifest.reset_index(drop=True)
    repeat = manifest.groupby("id").cumcount()  # a CSV may list one file twice: a byte-identical copy
    manifest["id"] = manifest["id"].where(repeat == 0, manifest["id"] + "#" + (repeat + 1).astype(str))
    manifest["label"] = manifest["raw_label"]
    manifest["reason"] = ""
    exists = np.array([(root / f).is_file() for f in manifest["file"]], bool)
    present = list(dict.fromkeys(manifest.loc[exists, "file"]))
    index = index_files(root, present, cache=cache, progress=progress).set_index("file")
    for column, empty in (("sha256", ""), ("width", 0), ("height", 0), ("status", "missing"), ("detail", ""),
                          ("stain_box", "")):
        manifest[column] = manifest["file"].map(index[column]).fillna(empty) if len(index) else empty
    manifest["width"] = manifest["width"].astype(int)
    manifest["height"] = manifest["height"].astype(int)
    rows = [("files found", _counts(manifest))]

    def drop(reason: str, mask) -> None:
        mask = np.asarray(mask, bool) & (manifest["reason"] == "").to_numpy()
        manifest.loc[mask, "reason"] = reason
        rows.append((STEPS[reason], _counts(manifest)))

    if not exists.all():
        drop("missing_file", ~exists)
    if (manifest["raw_label"] == "").any():
        drop("empty_label", manifest["raw_label"] == "")
    drop("not_an_image", manifest["status"] == "not_an_image")
    drop("unreadable", manifest["status"] == "unreadable")
    duplicate, original = find_duplicates(manifest[manifest["reason"] == ""])
    manifest["duplicate_of"] = original.reindex(manifest.index).fillna("")
    drop("conflicting_duplicate", duplicate.reindex(manifest.index).fillna("") == "conflicting_duplicate")
    drop("duplicate", duplicate.reindex(manifest.index).fillna("") == "duplicate")
    counts = manifest.loc[manifest["reason"] == "", "label"].value_counts()
    needed = max(params.min_per_class, params.folds)
    drop("rare_class", manifest["label"].isin(counts[counts < needed].index))
    manifest["kept"] = manifest["reason"] == ""
    manifest.loc[~manifest["kept"], "label"] = ""
    manifest["split"] = ""
    manifest["fold"] = -1
    manifest["group"] = ""
    # no annotated boxes here: crop mode centres on the WBC found by its stain, else on the image's centre
    stained = manifest["kept"] & (manifest["stain_box"] != "")
    manifest["box_source"] = np.where(stained, "stain", np.where(manifest["kept"], "centre", ""))
    boxes = [tuple(float(v) for v in box.split()) if box else images.centre_square(w, h)
             for w, h, box in zip(manifest["width"], manifest["height"], manifest["stain_box"])]
    manifest["box"] = [box if k else None for box, k in zip(boxes, manifest["kept"])]
    manifest = manifest.drop(columns="stain_box")
    manifest["wbc_boxes"] = 0
    return manifest, _table(rows)


def _counts(manifest: pd.DataFrame) -> dict[str, int]:
    return manifest.loc[manifest["reason"] == "", "raw_label"].replace("", "(no label)").value_counts().to_dict()


def _table(rows: list[tuple[str, dict]]) -> pd.DataFrame:
    """Images per class after each step (the report's cleaning table), classes in name order."""
    table = pd.DataFrame([counts for _, counts in rows], index=[step for step, _ in rows]).fillna(0).astype(int)
    table = table[sorted(table.columns)]
    table["total"] = table.sum(axis=1)
    table.index.name = "step"
    return table


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
                         f"needs at least 2, each with at least {max(params.min_per_class, params.folds)} images")


def _grouped_part(rows: pd.DataFrame, fraction: float, seed: int) -> pd.Index:
    """A stratified ``fraction`` of ``rows`` (about 1/round(1/fraction)) whose groups are all inside it."""
    splitter = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer groups than splits is still split as well as can be
        warnings.simplefilter("ignore", UserWarning)
        _, part = next(splitter.split(rows, rows["label"], rows["group"]))
    return rows.index[part]


def _assign_folds(manifest: pd.DataFrame, rows: pd.Index, params: CleaningParams) -> None:
    """Stratified, grouped cross-validation folds over ``rows``; every other row keeps fold -1."""
    subset = manifest.loc[rows]
    splitter = StratifiedGroupKFold(n_splits=params.folds, shuffle=True, random_state=params.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, held_out) in enumerate(splitter.split(subset, subset["label"], subset["group"])):
            manifest.loc[rows[held_out], "fold"] = fold
