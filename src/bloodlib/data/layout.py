"""Check that a data root holds what a run on a dataset reads: folders and file counts, never image contents.

The layouts are those of :mod:`bloodlib.data.sources`; :data:`EXPECTED` holds their folders and file counts.
A user's own ``folder:``/``csv:`` dataset has no expected layout: :func:`own_data` lists and counts its files.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from bloodlib.data import deepapl, folders
from bloodlib.data.classes import DEEPAPL_READ, canonical
from bloodlib.data.sources import DEEPAPL_FOLDER, GITHUB_URLS, PARTS, PBC_FOLDER, SIGNED_SLIDES, parse_dataset


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

# DeepAPL's signed slides: *.jpg files per class read, over all patients (7,007; 360x363 as published, halved in
# the shared copy), and the patients holding them. The other 14 cell types and the unsigned slides are not counted.
DEEPAPL_COUNTS = dict(zip(DEEPAPL_READ, (53, 108, 3435, 1319, 2092)))
DEEPAPL_PATIENTS = 106

# The known layout: subset -> {relative path: (glob, count)}; (None, None) marks a file that must exist. DeepAPL's
# files are spread over patient folders: deepapl_problems checks them against DEEPAPL_COUNTS instead.
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
    """Problems (one line each) and file counts of ``root/subset`` against :data:`EXPECTED` (DeepAPL:
    :func:`deepapl_problems`)."""
    if subset == DEEPAPL_FOLDER:
        return deepapl_problems(root, strict_counts)
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


def deepapl_problems(root: Path, strict_counts: bool) -> tuple[list[str], dict[str, int]]:
    """Problems and counts of DeepAPL's ``root/Data/All``: the ``*.jpg`` files of each class read over every
    patient's signed slides (:func:`bloodlib.data.deepapl.list_files`, whose errors name the folder at fault) and
    the patients holding them, against :data:`DEEPAPL_COUNTS` and :data:`DEEPAPL_PATIENTS`."""
    base = root / DEEPAPL_FOLDER
    if not base.is_dir():
        return [f"{root}: expected a folder {DEEPAPL_FOLDER}/ of patient folders, found {contents(root)}"], {}
    try:
        listed = deepapl.list_files(base)
    except (OSError, ValueError) as err:
        return [str(err)], {}
    names = listed["file"].str.rsplit("/", n=1).str[-1]
    images = listed[[not n.startswith(".") and fnmatch.fnmatchcase(n, "*.jpg") for n in names]]
    per_class = images["label"].value_counts()
    expected = {f"{DEEPAPL_FOLDER}/**/{SIGNED_SLIDES}/{c}": (n, int(per_class.get(canonical(c), 0)), "*.jpg files")
                for c, n in DEEPAPL_COUNTS.items()}
    expected[f"{DEEPAPL_FOLDER} patients"] = (DEEPAPL_PATIENTS, images["patient"].nunique(),
                                              "patients holding *.jpg files of the classes read")
    problems = []
    for where, (n, found, what) in expected.items():
        if strict_counts and found != n:
            problems.append(f"{base}: expected {n} {what} ({where}), found {found}")
        elif found == 0:
            problems.append(f"{base}: expected {what} ({where}), found none")
    return problems, {where: int(found) for where, (_, found, _) in expected.items()}


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


def _inside_deepapl(folder: Path) -> bool:
    """Whether ``folder`` is ``Data``, ``Data/All`` or a patient folder of DeepAPL's tree (a user naming a level
    too deep) rather than the data root holding ``Data/All``."""
    patterns = ("All", SIGNED_SLIDES, f"*/{SIGNED_SLIDES}", f"*/*/{SIGNED_SLIDES}")
    return folder.is_dir() and any(next(folder.glob(pattern), None) is not None for pattern in patterns)


def verify_layout(root: str | os.PathLike, *, dataset: str = "bccd", require_boxes: bool = False,
                  strict_counts: bool = True) -> dict:
    """Check what a run on ``dataset`` reads in ``root`` and return its file counts.

    ``bccd``: ``dataset-master``, and ``BCCD_Dataset`` when present (required with ``require_boxes``);
    ``kaggle-augmented``: ``dataset2-master``; ``pbc``: ``PBC_dataset_normal_DIB`` with its 8 class folders
    (:data:`PBC_COUNTS`; a missing one is named); all against :data:`EXPECTED`; ``deepapl``: ``Data/All``, its
    classes read counted over the patients (:func:`deepapl_problems`); ``strict_counts=False`` only asking for
    non-empty folders (synthetic test data). ``folder:``/``csv:``: ``root`` must be
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
        if p and subset == DEEPAPL_FOLDER and _inside_deepapl(root):
            p.append(f"{root} looks like a folder inside DeepAPL's {DEEPAPL_FOLDER}: pass the folder holding "
                     f"{DEEPAPL_FOLDER}/")
        elif p and subset in EXPECTED and all((root / rel).exists() for rel in EXPECTED[subset]):
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
