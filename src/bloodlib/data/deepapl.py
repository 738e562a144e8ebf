"""The normal white cells of DeepAPL as the dataset ``deepapl``: which files a run reads, its smoke subset and its
cleaning, with every cell grouped by its patient.

DeepAPL (Sidhom et al., npj Precision Oncology 5, 38, 2021; the repository sidhomj/DeepAPL) holds single cells
that a CellaVision analyser cut out of the peripheral-blood smears of 106 patients with acute myeloid or
promyelocytic leukaemia, classified and signed off by a technologist, in ``Data/All`` (a data root's
:data:`~bloodlib.data.sources.DEEPAPL_FOLDER`)::

    Data/All/<Patient_NN>/Signed slides/<class>/<CODE>_<id>.jpg
    Data/All/<Patient_NN>/<slide>/Signed slides/<class>/<CODE>_<id>.jpg   (11 patients; Patient_84 has two slides)

Of its 19 classes the study reads the five normal white cells (:data:`bloodlib.data.classes.DEEPAPL_READ`, named
as BCCD names them); "Unsigned slides" and the other cell types are never read. Cells of one patient share a
stain, a smear and a disease: each patient is one group, so no split puts a patient on both sides
(:func:`bloodlib.data.splits.plan`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bloodlib.data import folders
from bloodlib.data.classes import DEEPAPL_NOT_READ, DEEPAPL_READ, lab_class
from bloodlib.data.cleaning import Cleaning, CleaningParams
from bloodlib.data.sources import DEEPAPL_FOLDER, SIGNED_SLIDES

LISTING_COLUMNS = ["file", "raw_label", "label", "patient", "slide"]
# The smoke subset (subset_patients): each class in at least this many patients and images, so that the held-out
# split finds a patient of every class for training, validation and test, and the cleaning keeps every class
# (CleaningParams.min_per_class); over the seeded draws of a patient order tried until one gets there.
SUBSET_PATIENTS_PER_CLASS = 4
SUBSET_IMAGES_PER_CLASS = 10
SUBSET_DRAWS = 200  # on the real data a 400-file subset got there within 32 draws for each of 50 seeds


def _folders(folder: Path) -> list[Path]:
    """Sub-folders in name order, hidden ones skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _signed_slides(patient: Path) -> list[Path]:
    """A patient's signed slides: its own ``Signed slides`` folder, and those of the slide folders inside it."""
    found = [patient / SIGNED_SLIDES] if (patient / SIGNED_SLIDES).is_dir() else []
    found += [slide / SIGNED_SLIDES for slide in _folders(patient)
              if slide.name != SIGNED_SLIDES and (slide / SIGNED_SLIDES).is_dir()]
    if not found:
        names = sorted(p.name for p in patient.iterdir())
        raise ValueError(f"{patient}: no '{SIGNED_SLIDES}' folder, neither in it nor in a slide folder inside it "
                         f"(found {', '.join(names[:8]) or 'nothing'}); expected "
                         f"{patient.name}/[<slide>/]{SIGNED_SLIDES}/<class>/<image>")
    return found


def list_files(folder: Path) -> pd.DataFrame:
    """Every file a run reads in DeepAPL's ``Data/All`` (``folder``): the files under the class folders of the signed
    slides whose class the study reads, hidden ones and non-images too (the cleaning reports them), in name order.

    Columns: ``file`` (relative to ``folder``), ``raw_label`` (the class folder's name), ``label`` (the study's
    name, :func:`bloodlib.data.classes.lab_class`), ``patient`` (the patient folder) and ``slide`` (the slide
    folder between the two, "" where there is none). Only folders are read, never a file. A missing folder, a
    patient without signed slides, signed slides without a class folder and a class folder the class mapping
    lacks raise an error naming the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: DeepAPL folder not found (expected {DEEPAPL_FOLDER} of the repository "
                                f"sidhomj/DeepAPL)")
    patients = _folders(folder)
    if not patients:
        raise ValueError(f"{folder}: no patient folders; expected "
                         f"{folder}/<Patient_NN>/{SIGNED_SLIDES}/<class>/<image>")
    rows = []
    for patient in patients:
        for signed in _signed_slides(patient):
            class_folders = _folders(signed)
            if not class_folders:
                raise ValueError(f"{signed}: no class folder; expected {signed}/<class>/<image>")
            slide = signed.parent.name if signed.parent != patient else ""
            for class_folder in class_folders:
                label = lab_class(class_folder.name, DEEPAPL_READ, DEEPAPL_NOT_READ, where=str(class_folder))
                if label is not None:
                    rows += [dict(file=p.relative_to(folder).as_posix(), raw_label=class_folder.name, label=label,
                                  patient=patient.name, slide=slide)
                             for p in sorted(class_folder.rglob("*")) if p.is_file()]
    if not rows:
        raise ValueError(f"{folder}: the signed slides of its {len(patients)} patients hold no file of the classes "
                         f"read ({', '.join(DEEPAPL_READ)})")
    return pd.DataFrame(rows, columns=LISTING_COLUMNS)


def subset_patients(listed: pd.DataFrame, max_images: int | None, seed: int, source: str = "") -> pd.DataFrame:
    """A seeded subset of whole patients holding at most ``max_images`` of the ``listed`` files, in listing order;
    every file when ``max_images`` is None or not smaller than the list.

    Patients are taken in an order drawn with ``seed`` (:func:`_take`): for each class from the rarest, those
    holding it until it has :data:`SUBSET_PATIENTS_PER_CLASS` patients and :data:`SUBSET_IMAGES_PER_CLASS` images,
    then any that still fits. The first of :data:`SUBSET_DRAWS` orders that gets every class there is kept (else
    the one that came closest). Whole patients keep the dataset's grouping; taken from the listing, before
    anything is read, so that a smoke run indexes only its subset."""
    if max_images is None or max_images >= len(listed):
        return listed
    sizes = listed.groupby("patient").size().to_dict()
    if min(sizes.values()) > max_images:
        raise ValueError(f"{source}: no patient fits in a subset of {max_images} files (the smallest holds "
                         f"{min(sizes.values())})")
    held: dict[str, dict[str, int]] = {}
    for (patient, label), n in listed.groupby(["patient", "label"]).size().items():
        held.setdefault(patient, {})[label] = int(n)
    totals = listed["label"].value_counts()
    rarest_first = sorted(totals.index, key=lambda c: (totals[c], c))
    rng = np.random.default_rng(seed)
    best: tuple[int, list[str]] | None = None
    for _ in range(SUBSET_DRAWS):
        order = [str(p) for p in rng.permutation(sorted(sizes))]
        chosen, shortfall = _take(order, sizes, held, rarest_first, max_images)
        if best is None or shortfall < best[0]:
            best = (shortfall, chosen)
        if shortfall == 0:
            break
    return listed[listed["patient"].isin(best[1])]


def _take(order: list[str], sizes: dict[str, int], held: dict[str, dict[str, int]], rarest_first: list[str],
          budget: int) -> tuple[list[str], int]:
    """Patients taken in ``order`` while they fit ``budget`` files: first for each class of ``rarest_first`` those
    holding it until it reaches the targets, then any. Returns them and how many patients and images the classes
    still lack."""
    chosen: list[str] = []
    patients = dict.fromkeys(rarest_first, 0)
    images = dict.fromkeys(rarest_first, 0)

    def take(patient: str) -> None:
        chosen.append(patient)
        for label, n in held[patient].items():
            patients[label] += 1
            images[label] += n

    def fits(patient: str) -> bool:
        return patient not in chosen and sum(sizes[p] for p in chosen) + sizes[patient] <= budget

    for label in rarest_first:
        for patient in order:
            if patients[label] >= SUBSET_PATIENTS_PER_CLASS and images[label] >= SUBSET_IMAGES_PER_CLASS:
                break
            if label in held[patient] and fits(patient):
                take(patient)
    for patient in order:
        if fits(patient):
            take(patient)
    shortfall = sum(max(0, SUBSET_PATIENTS_PER_CLASS - patients[c]) + max(0, SUBSET_IMAGES_PER_CLASS - images[c])
                    for c in rarest_first)
    return chosen, shortfall


def listing(folder: Path, max_images: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The files a run reads in ``folder`` (:func:`list_files`), or the smoke subset of ``max_images``
    (:func:`subset_patients`, seeded by ``seed``)."""
    return subset_patients(list_files(folder), max_images, seed, str(folder))


def clean_deepapl(root: Path, params: CleaningParams = CleaningParams(), *, max_images: int | None = None,
                  cache: Path | bool | None = None, progress: bool = True) -> tuple[Cleaning, Path]:
    """DeepAPL under a data root (``root/Data/All``, what :func:`bloodlib.data.acquire.find_data` gives) cleaned by
    :func:`bloodlib.data.folders.clean_listed`'s steps, every kept cell's group its patient; labels the study's
    class names. The shared copy holds a truncated JPEG (``unreadable``) and 8 cells filed under two classes
    (``conflicting_duplicate``, both copies dropped); the original a ``Thumbs.db`` here and there
    (``not_an_image``). Returns the cleaning and the ``Data/All`` folder, which ``file`` is relative to."""
    folder = Path(root) / DEEPAPL_FOLDER
    listed = listing(folder, max_images, params.seed)
    return folders.clean_listed(listed, folder, params, group_by="patient", source=str(folder), cache=cache,
                                progress=progress), folder
