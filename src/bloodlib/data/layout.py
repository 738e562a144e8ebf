"""Check that a data root holds what a run on a dataset reads: folders and file counts, never image contents.

The layouts are those of :mod:`bloodlib.data.sources`; :data:`EXPECTED` holds their folders and file counts.
A user's own ``folder:``/``csv:`` dataset has no expected layout: :func:`own_data` lists and counts its files.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from bloodlib.data import folders
from bloodlib.data.sources import GITHUB_URLS, PARTS, PBC_FOLDER, parse_dataset


class DataLayoutError(ValueError):
    """A data folder does not hold the expected layout; the message names folder, expected and found."""


_CLASSES4 = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
_DATASET2_COUNTS = {
    "TRAIN": (2497, 2483, 2478, 2499),
    "TEST": (623, 620, 620, 624),
    "TEST_SIMPLE": (13, 6, 4, 48),
}
# The published PBC: images per class folder (17,092), whatever their size (360x363 as published, halved in the
# shared copy). Hidden files are not counted: neutrophil/ also holds .DS_169665.jpg, a renamed .DS_Store.
PBC_COUNTS = {"basophil": 1218, "eosinophil": 3117, "erythroblast": 1551, "ig": 2895, "lymphocyte": 1214,
              "monocyte": 1420, "neutrophil": 3329, "platelet": 2348}

# The known layout: subset -> {relative path: (glob, count)}; (None, None) marks a file that must exist.
EXPECTED: dict[str, dict[str, tuple[str | None, int | None]]] = {
    "dataset-master": {
        "labels.csv": (None, None),
        "JPEGImages": ("*.jpg", 366),
    },
    "BCCD_Dataset": {
        "BCCD/JPEGImages": ("*.jpg", 364),
        "BCCD/Annotations": ("*.xml", 364),
    },
    "dataset2-master": {
        f"images/{split}/{cls}": ("*.jpeg", n)
        for split, counts in _DATASET2_COUNTS.items()
        for cls, n in zip(_CLASSES4, counts)
    },
    PBC_FOLDER: {cls: ("*.jpg", n) for cls, n in PBC_COUNTS.items()},
}
# Counted for the summary when present, never required (dataset-master's VOC files hold RBC boxes only).
_OPTIONAL_COUNTS = {"dataset-master/Annotations": "*.xml"}


def _count(folder: Path, pattern: str) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
               and fnmatch.fnmatchcase(p.name, pattern))


def contents(folder: Path, limit: int = 8) -> str:
    """What a folder holds, briefly, for error messages."""
    if not folder.exists():
        return "nothing (the folder does not exist)"
    if not folder.is_dir():
        return "a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "an empty folder"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def subset_problems(root: Path, subset: str, strict_counts: bool) -> tuple[list[str], dict[str, int]]:
    """Problems (one line each) and file counts of ``root/subset`` against :data:`EXPECTED`."""
    problems: list[str] = []
    counts: dict[str, int] = {}
    base = root / subset
    if not base.is_dir():
        return [f"{root}: expected a folder {subset}/, found {contents(root)}"], counts
    for rel, (pattern, n) in EXPECTED[subset].items():
        path = base / rel
        if pattern is None:
            if not path.is_file():
                problems.append(f"{base}: expected the file {rel}, found {contents(path.parent)}")
            continue
        if not path.is_dir():
            problems.append(f"{path.parent}: expected a folder {path.name}/ of {n} {pattern} files, "
                            f"found {contents(path.parent)}")
            continue
        found = counts[f"{subset}/{rel}"] = _count(path, pattern)
        if strict_counts and found != n:
            problems.append(f"{path}: expected {n} {pattern} files, found {found}")
        elif found == 0:
            problems.append(f"{path}: expected {pattern} files, found none ({contents(path)})")
    for rel, pattern in _OPTIONAL_COUNTS.items():
        if rel.startswith(subset + "/") and (root / rel).is_dir():
            counts[rel] = _count(root / rel, pattern)
    return problems, counts


def parts_read(kind: str, require_boxes: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The parts a run on ``kind`` reads: (required, read when present)."""
    if require_boxes and kind != "bccd":
        raise ValueError(f"require_boxes is for the bccd smears; {kind} finds the WBC by its stain")
    required, optional = PARTS[kind]
    if require_boxes:
        required, optional = required + ("BCCD_Dataset",), tuple(p for p in optional if p != "BCCD_Dataset")
    return required, optional


def own_data(dataset: str) -> tuple[Path, list[Path], dict[str, int]]:
    """A user's own ``folder:``/``csv:`` dataset: the folder holding every file a run reads, those files
    (for a list: the CSV, then each listed file that exists) and their counts."""
    kind, path = parse_dataset(dataset)
    if kind in PARTS:
        raise ValueError(f"{dataset!r} is not a user's own folder or list: find_data finds its data")
    if kind == "folder":
        folder = Path(path).resolve()
        listed = folders.folder_files(folder)  # names the folder when it is missing or holds no class folder
        counts = listed["raw_label"].value_counts().sort_index()
        return folder, [folder / f for f in listed["file"]], {f"{label}/": int(n) for label, n in counts.items()}
    csv = Path(path).parent.resolve() / Path(path).name
    listed, data_root = folders.csv_files(csv)  # names the CSV and the line when it is malformed
    paths = [data_root / f for f in dict.fromkeys(listed["file"])]
    found = [p for p in paths if p.is_file()]
    if not found:
        raise DataLayoutError(f"{csv}: none of the {len(paths)} listed files exists (the first: {paths[0]})")
    counts = listed["raw_label"].value_counts().sort_index()
    return (Path(os.path.commonpath([csv.parent, data_root])), [csv, *found],
            {"rows": len(listed), **{f"label {label}": int(n) for label, n in counts.items()},
             "listed files found": len(found), "listed files missing": len(paths) - len(found)})


def verify_layout(root: str | os.PathLike, *, dataset: str = "bccd", require_boxes: bool = False,
                  strict_counts: bool = True) -> dict:
    """Check what a run on ``dataset`` reads in ``root`` and return its file counts.

    ``bccd``: ``dataset-master``, and ``BCCD_Dataset`` when present (required with ``require_boxes``);
    ``kaggle-augmented``: ``dataset2-master``; ``pbc``: ``PBC_dataset_normal_DIB`` with its 8 class folders
    (:data:`PBC_COUNTS`; a missing one is named); all against :data:`EXPECTED`, ``strict_counts=False`` only
    asking for non-empty folders (synthetic test data). ``folder:``/``csv:``: ``root`` must be
    :func:`bloodlib.data.acquire.own_root`'s; the counts are files per class folder, or the list's rows per
    label and how many listed files exist. Raises :class:`DataLayoutError` listing every problem. Reads only.
    """
    root = Path(root).expanduser()
    kind = parse_dataset(dataset)[0]
    if kind not in PARTS:
        own, _, counts = own_data(dataset)
        if root.resolve() != own:
            raise ValueError(f"{root}: not the data root of {dataset!r}, which is {own}")
        return {"root": str(own), **counts}
    required, optional = parts_read(kind, require_boxes)
    if not root.is_dir():
        raise DataLayoutError(f"{root}: expected a data folder holding {' and '.join(p + '/' for p in required)}, "
                              f"found {contents(root)}")
    problems: list[str] = []
    counts: dict[str, int] = {}
    for subset in required + tuple(p for p in optional if (root / p).exists()):
        p, c = subset_problems(root, subset, strict_counts)
        if p and all((root / rel).exists() for rel in EXPECTED[subset]):
            p.append(f"{root} looks like {subset} itself: pass its parent folder")
        if p and subset == "BCCD_Dataset" and not (root / subset).exists():
            p.append("the WBC boxes (BCCD_Dataset/BCCD) are needed for crop mode; public copy: "
                     + GITHUB_URLS["BCCD_Dataset"])
        problems += p
        counts |= c
    if problems:
        raise DataLayoutError("wrong data layout:\n  " + "\n  ".join(problems))
    boxes = {"boxes": (root / "BCCD_Dataset").is_dir()} if kind == "bccd" else {}
    return {"root": str(root.resolve()), **counts, **boxes}
