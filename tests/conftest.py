"""Shared fixtures: the real BCCD data from ../shared/data/bccd (or $BLOODLIB_DATA), and an isolated cache."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests draw figures without a display

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bccd"


def data_root() -> Path:
    return Path(os.environ.get("BLOODLIB_DATA") or DEFAULT_DATA)


@pytest.fixture(scope="session")
def bccd_root() -> Path:
    """The real data; tests that need it skip, with the reason, where it is absent."""
    root = data_root()
    if not (root / "dataset-master" / "labels.csv").is_file():
        pytest.skip(f"real BCCD data not found at {root} (set BLOODLIB_DATA or provide ../shared/data/bccd)")
    return root


@pytest.fixture(scope="session")
def bccd_manifest(bccd_root):
    """The seed's cleaning on the real data, computed once for the session."""
    from bloodlib import cleaning, datasets

    return datasets.clean_bccd(bccd_root, cleaning.CleaningParams())


def make_bccd(root: Path, labels: dict[int, str], boxes: dict[int, list[tuple]] | None = None,
              size=(64, 48)) -> Path:
    """A tiny data folder in the Kaggle layout: one JPEG per label id, labels.csv, optional WBC boxes."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    images = root / "dataset-master" / "JPEGImages"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id in labels:
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"BloodImage_{image_id:05d}.jpg", quality=90)
    pd.DataFrame({"Image": list(labels), "Category": list(labels.values())}).to_csv(
        root / "dataset-master" / "labels.csv")  # the Kaggle file's shape: an unnamed index column first
    if boxes is not None:
        annotations = root / "BCCD_Dataset" / "BCCD" / "Annotations"
        annotations.mkdir(parents=True, exist_ok=True)
        for image_id, image_boxes in boxes.items():
            objects = "".join(
                f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for name, x0, y0, x1, y1 in image_boxes)
            (annotations / f"BloodImage_{image_id:05d}.xml").write_text(
                f"<annotation><filename>BloodImage_{image_id:05d}.jpg</filename>{objects}</annotation>")
    return root
