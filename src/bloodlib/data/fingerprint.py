"""The fingerprint of the data a run reads: every file it reads (:func:`dataset_files`), their path, bytes
and sha256 (:func:`data_manifest`), and one checksum over them all (:func:`manifest_checksum`), which the run
record shows so that two runs can be compared on exactly the same bytes.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bloodlib.data import deepapl, folders
from bloodlib.data.layout import own_data
from bloodlib.data.sources import DEEPAPL_FOLDER, PARTS, PBC_FOLDER, parse_dataset
from bloodlib.utils import fileio

log = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(dataset: str, root: str | os.PathLike, *, max_images: int | None = None,
                  seed: int = 0) -> list[str]:
    """Every file a run on ``dataset`` reads, as posix paths relative to ``root`` (what
    :func:`bloodlib.data.acquire.find_data` or :func:`bloodlib.data.acquire.own_root` gave), in name order.

    bccd and kaggle-augmented: every file of their :data:`PARTS` present in ``root`` (hidden files ignored);
    pbc: every file under its class folders, hidden ones too (the cleaning reads and reports them), or the
    subset of ``max_images`` a smoke run cleans (:func:`bloodlib.data.folders.subset_files`, ``seed``); deepapl:
    likewise every file under the class folders read of its signed slides, or the smoke run's whole patients
    (:func:`bloodlib.data.deepapl.listing`);
    ``folder:``: every file under its class folders; ``csv:``: the CSV and each listed file that exists.
    """
    root = Path(root).resolve()
    kind = parse_dataset(dataset)[0]
    if max_images is not None and kind not in ("pbc", "deepapl"):
        raise ValueError(f"max_images takes a subset of pbc or deepapl, not of {dataset!r}")
    if kind == "pbc":
        listed = folders.folder_files(root / PBC_FOLDER)
        listed = folders.subset_files(listed, max_images, seed, str(root / PBC_FOLDER))
        return sorted(f"{PBC_FOLDER}/{file}" for file in listed["file"])
    if kind == "deepapl":
        listed = deepapl.listing(root / DEEPAPL_FOLDER, max_images, seed)
        return sorted(f"{DEEPAPL_FOLDER}/{file}" for file in listed["file"])
    if kind not in PARTS:
        files = own_data(dataset)[1]
        outside = [f for f in files if not f.is_relative_to(root)]
        if outside:
            raise ValueError(f"{outside[0]}: a file of {dataset!r} outside the data root {root}")
        return sorted(f.relative_to(root).as_posix() for f in files)
    files = []
    for part in PARTS[kind][0] + PARTS[kind][1]:
        if not (root / part).is_dir():
            log.info("manifest: %s has no %s, skipped", root, part)
            continue
        for dirpath, dirnames, filenames in os.walk(root / part):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files += [(Path(dirpath) / name).relative_to(root).as_posix()
                      for name in filenames if not name.startswith(".")]
    return sorted(files)


def data_manifest(root: str | os.PathLike, files: Iterable[str]) -> pd.DataFrame:
    """The fingerprint of ``files`` (posix paths relative to ``root``, see :func:`dataset_files`): path, bytes
    and sha256 of each, in path order."""
    root = Path(root)
    rows = [(f, (root / f).stat().st_size, _sha256(root / f)) for f in files]
    frame = pd.DataFrame(rows, columns=["path", "bytes", "sha256"]).astype({"bytes": "int64"})
    return frame.sort_values("path", ignore_index=True)


def manifest_checksum(manifest: pd.DataFrame) -> str:
    """One id for the data a run used: sha256 over sorted ``"path bytes sha256"`` lines."""
    digest = hashlib.sha256()
    for path, size, sha in sorted(zip(manifest["path"], manifest["bytes"], manifest["sha256"])):
        digest.update(f"{path} {int(size)} {sha}\n".encode())
    return digest.hexdigest()


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the manifest as CSV through a temporary name, so a reader never sees half a file."""
    return fileio.write_csv(path, manifest)
