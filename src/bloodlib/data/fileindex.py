"""What each file of a dataset is, read once: SHA-256, header size, whether it decodes, the stain box.

Remembered per (path, size, mtime) under ``config.cache_dir()/"index"`` (:func:`index_files`), so that a
second cleaning of a large folder reads no file again.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import math
import os
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from bloodlib import config
from bloodlib.utils import fileio
from bloodlib.data import images
from bloodlib.utils.progress import progress_bar

INDEX_VERSION = 2  # bump when what index_files records changes
COLUMNS = ["file", "bytes", "mtime_ns", "sha256", "width", "height", "status", "detail", "stain_box"]


def cache_folder(cache: Path | bool | None) -> Path | None:
    """Where index records live: ``config.cache_dir()/"index"`` for ``None``/``True``, ``cache`` itself when a
    path, nowhere for ``False``."""
    if cache is False:
        return None
    return config.cache_dir() / "index" if cache in (None, True) else Path(cache)


def inspect_file(path: Path) -> dict:
    """One read of a file: its SHA-256, whether it is an image that decodes (header size, status) and, for
    crop mode, the box of the WBC found by its stain (:func:`bloodlib.data.images.stain_box`; "" when none)."""
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
    The record lives in :func:`cache_folder` (default ``config.cache_dir()/"index"``; ``False``: none).
    """
    root = Path(root).resolve()
    record = _record_path(root, cache)
    known = _read_record(record)
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
            for (file, size, mtime), result in progress_bar(zip(todo, results), total=len(todo),
                                                            desc="indexing files", disable=not progress, leave=False):
                rows[file] = dict(file=file, bytes=size, mtime_ns=mtime, **result)
        if record is not None:
            merged = {**known, **rows}
            fileio.write_csv(record, pd.DataFrame(list(merged.values()), columns=COLUMNS))
    return pd.DataFrame([rows[f] for f in files], columns=COLUMNS)


def _record_path(root: Path, cache: Path | bool | None) -> Path | None:
    folder = cache_folder(cache)
    if folder is None:
        return None
    key = hashlib.sha256(f"{INDEX_VERSION}|{root}".encode()).hexdigest()[:16]
    return folder / f"files-{key}.csv"


def _read_record(path: Path | None) -> dict[str, dict]:
    """The remembered rows by file; a missing or damaged record is simply rebuilt."""
    if path is None or not path.is_file():
        return {}
    try:
        frame = pd.read_csv(path, dtype={"file": str, "sha256": str, "status": str, "detail": str, "stain_box": str},
                            keep_default_na=False)
        frame = frame[COLUMNS]
    except (ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError):
        return {}
    return {row["file"]: row for row in frame.to_dict("records")}
