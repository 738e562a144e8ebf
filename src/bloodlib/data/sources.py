"""The datasets a run can read (the ``dataset`` parameter) and where their data come from.

The datasets ``bccd`` and ``kaggle-augmented`` read parts of one *data root* ``R`` in the Kaggle layout::

    R/dataset-master/{JPEGImages/*.jpg, Annotations/*.xml, labels.csv}   bccd: images and WBC labels
    R/BCCD_Dataset/BCCD/{JPEGImages, Annotations, ImageSets}              bccd: WBC boxes (needed by crop mode)
    R/dataset2-master/images/{TRAIN,TEST,TEST_SIMPLE}/<4 classes>/*.jpeg  kaggle-augmented (Kaggle only)

The dataset ``pbc`` (the PBC atlas, Acevedo et al. 2020) has a data root of its own, ``P``::

    P/PBC_dataset_normal_DIB/<8 classes>/*.jpg                              pbc: one folder per class

The dataset ``deepapl`` (the normal white cells of DeepAPL, Sidhom et al. 2021) has one too, ``D``: the folder
``Data/All`` of the repository sidhomj/DeepAPL, one folder per patient (some patients hold a folder per slide)::

    D/Data/All/<Patient_NN>/[<slide>/]Signed slides/<class>/<CODE>_<id>.jpg  deepapl: five classes of 19 read

A user's own data (``folder:/path``, ``csv:/path/list.csv``) is read where it is. This module only names
things: :mod:`bloodlib.data.layout` checks a data root, :mod:`bloodlib.data.acquire` finds or downloads one,
:mod:`bloodlib.data.fingerprint` lists and hashes the files a run reads.
"""
from __future__ import annotations

from pathlib import Path

from bloodlib import config

NAMED = ("bccd", "kaggle-augmented", "pbc", "deepapl")  # the datasets find_data finds (or downloads)
KINDS = NAMED + ("folder", "csv")


def parse_dataset(spec: str) -> tuple[str, str | None]:
    """``"bccd"`` | ``"kaggle-augmented"`` | ``"pbc"`` | ``"deepapl"`` | ``"folder:/path"`` |
    ``"csv:/path/list.csv"`` -> (kind, path)."""
    text = str(spec or "").strip()
    kind, sep, path = text.partition(":")
    kind = kind.strip().lower()
    if not sep and kind in NAMED:
        return kind, None
    if sep and kind in ("folder", "csv") and path.strip():
        return kind, str(Path(path.strip()).expanduser())
    raise ValueError(f"unknown dataset {spec!r}: expected {', '.join(repr(k) for k in NAMED)}, "
                     f"'folder:/path/to/root' (one sub-folder per class) or 'csv:/path/to/list.csv' "
                     f"(columns path,label)")


KAGGLE_HANDLE = "paultimothymooney/blood-cells"
PBC_FOLDER = "PBC_dataset_normal_DIB"
ENV_PBC = "BLOODLIB_PBC"  # names a folder holding PBC_dataset_normal_DIB/ ($BLOODLIB_DATA names the Kaggle layout)
DEEPAPL_FOLDER = "Data/All"  # the repository's folder of patients, kept at that path in every deepapl data root
SIGNED_SLIDES = "Signed slides"  # a patient's (or slide's) classified cells; "Unsigned slides" are never read
ENV_DEEPAPL = "BLOODLIB_DEEPAPL"  # names a folder holding Data/All/ (a checkout of the repository will do)
# The public GitHub copies: images + labels (cosmicad), the VOC files holding the WBC boxes (BCCD_Dataset), a
# repository holding the PBC folder as published, and DeepAPL's own repository (its publisher), each the archive of
# its default branch.
GITHUB_URLS: dict[str, str] = {
    "dataset-master": "https://github.com/cosmicad/dataset/archive/refs/heads/master.zip",
    "BCCD_Dataset": "https://github.com/Shenggan/BCCD_Dataset/archive/refs/heads/master.zip",
    PBC_FOLDER: "https://github.com/AuralinACC/Blood-Cell-Classification/archive/HEAD.zip",
    DEEPAPL_FOLDER: "https://github.com/sidhomj/DeepAPL/archive/refs/heads/master.zip",
}
# PBC's publisher (Acevedo et al., Data in Brief 30 (2020) 105474; CC BY 4.0): the Mendeley Data record
# doi:10.17632/snkd93bnjr.1 holds one file, PBC_dataset_normal_DIB.zip, public at this download URL (its file id).
MENDELEY_URLS: dict[str, str] = {
    PBC_FOLDER: "https://data.mendeley.com/public-files/datasets/snkd93bnjr/files/"
                "2fc38728-2ae7-4a62-a857-032af82334c3/file_downloaded",
}
SOURCES = ("auto", "local", "cache", "kaggle", "mendeley", "github")
SOURCES_FILE = "SOURCES.json"  # written into the cache only: where each part came from

# The parts of its data root each dataset reads: (required, read when present). Crop mode on bccd requires
# BCCD_Dataset too (its WBC boxes); the other datasets find the WBC by its stain.
PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bccd": (("dataset-master",), ("BCCD_Dataset",)),
    "kaggle-augmented": (("dataset2-master",), ()),
    "pbc": ((PBC_FOLDER,), ()),
    "deepapl": ((DEEPAPL_FOLDER,), ()),
}
KAGGLE_PARTS = ("dataset-master", "dataset2-master")  # what the Kaggle download holds
# Each dataset's data root: the variable naming a local one, and its folder in ../shared/data and in the cache.
HOMES: dict[str, tuple[str, str]] = {"bccd": (config.ENV_DATA, "bccd"), "kaggle-augmented": (config.ENV_DATA, "bccd"),
                                     "pbc": (ENV_PBC, "pbc"), "deepapl": (ENV_DEEPAPL, "deepapl")}
