"""Decoding, WBC crops and the decoded-image cache.

A smear is decoded and resized once per (mode, size, margin) and kept as a uint8 array in
``<cache>/images/``; later epochs and notebooks read the array, never the JPEGs.

Crop rule (``mode="crop"``): the WBC boxes come from the BCCD_Dataset VOC annotations. One box: a square
centred on it, its side the box's longer side times ``1 + 2 * margin``, moved inside the smear when it
would cross an edge. Two or more boxes: the box nearest the smear's centre (the photographs centre the
cell of interest), ties broken by the larger box. No box: the image is dropped by the cleaning
(``no_wbc_box``), in both modes, so that crop and full runs see the same images and splits.

Datasets without boxes (Kaggle's ``dataset2-master``, a folder of the user's own images) locate the WBC by
its stain instead (:func:`stain_box`): Wright/Giemsa colours a nucleus purple, far bluer than green, and
nothing else on a smear is as purple and as large (platelets are purple but small). The box is a square
around the largest such blob, its side ``STAIN["box_per_blob"]`` times the blob's extent (the ratio of the
VOC WBC boxes to these blobs on the BCCD smears); the crop then grows it by ``margin`` like a VOC box. On
the 358 BCCD smears with a WBC box, the located centre falls inside a WBC box on every one.
"""

from __future__ import annotations

import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from bloodlib.utils import fileio
from bloodlib.utils.progress import progress_bar

BOXES_DIR = "BCCD_Dataset/BCCD/Annotations"
FULL_ASPECT = 4 / 3  # full smears are 640x480: keep their shape, image_size is the short side
STREAM_FRACTION = 0.25  # decoded arrays larger than this share of the memory stay on disk
CROP_MARGIN = 0.15  # share of the box added on each side of a crop (the default of config.Settings)
CACHE_VERSION = 2  # bump when decoding or cropping changes, so that old caches are not reused


def read_voc(path: Path) -> list[dict]:
    """Every box of one Pascal-VOC file as dicts (name, xmin, ymin, xmax, ymax)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: not a valid Pascal-VOC XML file ({err})") from err
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        coords = {k: float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")}
        if any(np.isnan(v) for v in coords.values()):
            raise ValueError(f"{path}: a box of {obj.findtext('name')!r} lacks a coordinate")
        boxes.append({"name": (obj.findtext("name") or "").strip(), **coords})
    return boxes


def wbc_boxes(root: Path) -> pd.DataFrame:
    """The WBC boxes of BCCD_Dataset, one row per box, keyed by the dataset-master file they belong to."""
    folder = Path(root) / BOXES_DIR
    rows = []
    for xml in sorted(folder.glob("*.xml")):
        for box in read_voc(xml):
            if box["name"].upper() == "WBC":
                rows.append({"file": f"dataset-master/JPEGImages/{xml.stem}.jpg", **box})
    frame = pd.DataFrame(rows, columns=["file", "name", "xmin", "ymin", "xmax", "ymax"])
    frame["box_width"] = frame["xmax"] - frame["xmin"]
    frame["box_height"] = frame["ymax"] - frame["ymin"]
    return frame


def has_boxes(root: Path) -> bool:
    return (Path(root) / BOXES_DIR).is_dir()


def choose_box(boxes: pd.DataFrame, width: int = 640, height: int = 480) -> tuple[float, float, float, float] | None:
    """The WBC of interest among an image's boxes: nearest the centre, then the largest (module doc)."""
    if len(boxes) == 0:
        return None
    cx = (boxes["xmin"] + boxes["xmax"]) / 2 - width / 2
    cy = (boxes["ymin"] + boxes["ymax"]) / 2 - height / 2
    order = pd.DataFrame({"distance": np.hypot(cx, cy).round(1),
                          "area": -(boxes["box_width"] * boxes["box_height"])}, index=boxes.index)
    best = boxes.loc[order.sort_values(["distance", "area"]).index[0]]
    return float(best.xmin), float(best.ymin), float(best.xmax), float(best.ymax)


def square_around(box: tuple[float, float, float, float], width: int, height: int, margin: float) -> tuple[int, int, int, int]:
    """A square around ``box`` grown by ``margin`` on each side, moved (not padded) to stay in the image."""
    xmin, ymin, xmax, ymax = box
    side = min(max(xmax - xmin, ymax - ymin) * (1 + 2 * margin), width, height)
    left = min(max((xmin + xmax - side) / 2, 0), width - side)
    top = min(max((ymin + ymax - side) / 2, 0), height - side)
    return int(round(left)), int(round(top)), int(round(left + side)), int(round(top + side))


def centre_square(width: int, height: int) -> tuple[float, float, float, float]:
    """The largest centred square of a ``width`` x ``height`` image, as a box: crop mode's framing when no WBC
    is known (grown by a margin, :func:`square_around` keeps it the same square)."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return float(left), float(top), float(left + side), float(top + side)


def centre_aspect(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """The largest centred region of ``aspect`` (width / height): an image of another shape is cropped to the
    smears' 4:3, as torchvision's resize-then-centre-crop does, never squashed (cells keep their shape)."""
    if abs(width / height - aspect) < 0.01:
        return 0, 0, width, height
    if width / height > aspect:  # too wide: trim the sides
        new = int(round(height * aspect))
        return (width - new) // 2, 0, (width - new) // 2 + new, height
    new = int(round(width / aspect))
    return 0, (height - new) // 2, width, (height - new) // 2 + new


# the longer side, in pixels, at which the stain is searched; how much bluer than green a pixel must be to
# count as stained nucleus; closing iterations (joins a nucleus' lobes); the least share of the image the
# blob must cover (else no WBC is found); the VOC box's side over the blob's extent (median on BCCD: 1.30)
STAIN = dict(work=160, blue_over_green=50, closing=2, min_fraction=0.005, box_per_blob=1.3)


def largest_stained_blob(pixels: np.ndarray, *, blue_over_green: float = STAIN["blue_over_green"],
                         closing: int = STAIN["closing"]) -> np.ndarray | None:
    """Mask (H x W bool) of the largest strongly purple blob of an RGB array, None when there is none."""
    pixels = np.asarray(pixels, np.float32)
    mask = pixels[..., 2] - pixels[..., 1] > blue_over_green
    if closing:
        mask = ndimage.binary_closing(mask, iterations=closing)
    blobs, count = ndimage.label(mask)
    if count == 0:
        return None
    return blobs == np.argmax(np.bincount(blobs.ravel())[1:]) + 1


def stain_box(image: Image.Image) -> tuple[float, float, float, float] | None:
    """The WBC's box (xmin, ymin, xmax, ymax in ``image``'s pixels) found by its stain (module doc), or None
    when no purple blob covers ``STAIN["min_fraction"]`` of the image (not a stained smear, or no WBC)."""
    scale = min(1.0, STAIN["work"] / max(image.size))
    small = image.convert("RGB")
    if scale < 1:
        small = small.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    blob = largest_stained_blob(np.asarray(small))
    if blob is None or blob.mean() < STAIN["min_fraction"]:
        return None
    ys, xs = np.nonzero(blob)
    fx, fy = image.width / small.width, image.height / small.height  # back to the image's pixels
    cx, cy = (xs.mean() + 0.5) * fx, (ys.mean() + 0.5) * fy
    half = STAIN["box_per_blob"] * max((np.ptp(xs) + 1) * fx, (np.ptp(ys) + 1) * fy) / 2
    return float(cx - half), float(cy - half), float(cx + half), float(cy + half)


def decode(path: Path) -> Image.Image:
    """An RGB image, fully decoded (a truncated JPEG fails here, not later)."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def target_size(mode: str, size: int) -> tuple[int, int]:
    """(height, width) of a cached image."""
    return (size, size) if mode == "crop" else (size, int(round(size * FULL_ASPECT)))


def load_one(path: Path, mode: str, size: int, box=None, margin: float = CROP_MARGIN) -> np.ndarray:
    """One image as uint8 H x W x 3: the whole smear (``full``) or the square around its WBC (``crop``)."""
    image = decode(path)
    if mode == "crop":
        if box is None:
            raise ValueError(f"{path}: crop mode needs a WBC box and this image has none")
        image = image.crop(square_around(box, image.width, image.height, margin))
    else:
        image = image.crop(centre_aspect(image.width, image.height, FULL_ASPECT))
    height, width = target_size(mode, size)
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None))


def cache_key(rows: pd.DataFrame, root: Path, mode: str, size: int, margin: float) -> str:
    """Changes when any input of the decoded array changes: files (name, size, mtime), boxes, parameters."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, mode, size, margin]).encode())
    for file, box in zip(rows["file"], rows["box"] if "box" in rows else [None] * len(rows)):
        stat = (Path(root) / file).stat()
        digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}|{box}\n".encode())
    return digest.hexdigest()[:16]


def should_stream(nbytes: int) -> bool:
    """Keep an array of ``nbytes`` on disk (memory-mapped) rather than in memory: ``BLOODLIB_STREAM=1``/``0``
    decides when set, else arrays above ``STREAM_FRACTION`` of the machine's memory stream."""
    forced = os.environ.get("BLOODLIB_STREAM", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): trust the memory
        return False
    return nbytes > STREAM_FRACTION * memory


def load_cached(rows: pd.DataFrame, root: Path, mode: str, size: int, *, margin: float = CROP_MARGIN,
                cache: Path | None = None, progress: bool = True, stream: bool | None = None) -> np.ndarray:
    """uint8 N x 3 x H x W for ``rows`` (columns ``file``, and ``box`` in crop mode), decoded at most once.

    The array is saved as ``.npy`` under ``cache`` (written to a temporary name, then renamed) and read
    back with ``allow_pickle=False``; a stale or unreadable cache is rebuilt, never trusted. It is built
    image by image into a memory-mapped file, so decoding never holds the whole array in memory. With
    ``stream`` (default: :func:`should_stream`) the array stays on disk, memory-mapped copy-on-write: the
    same interface, pages read when a batch touches them.
    """
    key = cache_key(rows, root, mode, size, margin)
    path = Path(cache) / f"{mode}-{size}-{key}.npy" if cache else None
    height, width = target_size(mode, size)
    shape = (len(rows), 3, height, width)
    if stream is None:
        stream = path is not None and should_stream(int(np.prod(shape)))
    if path is not None and path.is_file():
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="c" if stream else None)
            if array.shape == shape and array.dtype == np.uint8:
                return array
        except (ValueError, OSError):
            pass  # a half-written or foreign file: decode again
    boxes = rows["box"] if mode == "crop" else [None] * len(rows)
    todo = progress_bar(list(zip(rows["file"], boxes)), desc=f"decoding {mode} {size}px", disable=not progress,
                        leave=False)
    if path is None:
        array = np.empty(shape, np.uint8)
        for i, (file, box) in enumerate(todo):
            array[i] = load_one(Path(root) / file, mode, size, box, margin).transpose(2, 0, 1)
        return array
    with fileio.atomic_path(path) as tmp:
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i, (file, box) in enumerate(todo):
            target[i] = load_one(Path(root) / file, mode, size, box, margin).transpose(2, 0, 1)
        target.flush()
        del target
    return np.load(path, allow_pickle=False, mmap_mode="c" if stream else None)


def image_sizes(paths: list[Path]) -> pd.DataFrame:
    """Width and height from the file headers (no decoding): the image-size statistics."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append({"file": str(path), "width": image.width, "height": image.height})
    return pd.DataFrame(rows)
