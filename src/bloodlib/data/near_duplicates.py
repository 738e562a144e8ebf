"""Copies of one source among a dataset's files: byte-identical copies (:func:`find_duplicates`, by the file
index's SHA-256) and augmented copies (rotated, shifted, mirrored) found by image similarity
(:func:`source_groups`), so that no source straddles a train/validation boundary.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.cluster import HDBSCAN

from bloodlib.data import fileindex, images
from bloodlib.utils import fileio
from bloodlib.utils.progress import progress_bar

GROUPS_VERSION = 1  # bump when source_groups changes
MAX_GROUPED = 15_000  # images per class that source_groups compares pairwise (memory grows with the square)


# ------------------------------------------------------------------------------- byte-identical copies

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
    files of one class folder: copies of one source share its label. Remembered in ``cache``
    (:func:`bloodlib.data.fileindex.cache_folder`: default ``config.cache_dir()/"index"``, ``False``: none) per
    (path, size, mtime).
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
        prints = np.stack(list(progress_bar(pool.map(fingerprint, files), total=len(files), desc="fingerprints",
                                            disable=not progress, leave=False)))
    labels = cluster_fingerprints(prints, min_copies=min_copies)
    groups = [f"g{label:03d}" for label in labels]
    if record is not None:
        fileio.write_json(record, groups)
    return groups


def _groups_path(files: list[Path], min_copies: int, cache: Path | bool | None) -> Path | None:
    folder = fileindex.cache_folder(cache)
    if folder is None:
        return None
    digest = hashlib.sha256(json.dumps([GROUPS_VERSION, min_copies, FINGERPRINT]).encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
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
