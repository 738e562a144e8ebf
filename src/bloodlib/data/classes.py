"""Which class of one lab's dataset is which class of another's: the correspondence, declared once.

Every dataset keeps its own class names (BCCD's ``NEUTROPHIL``, PBC's ``neutrophil``, a user's folder
names), except DeepAPL, whose CellaVision folder names (``Segmented neutrophils``) become the study's names as
they are read (:func:`lab_class`, :data:`DEEPAPL_READ`); wherever two datasets meet (a model trained on one,
scored on the other; a backbone moved between them) their names go through :func:`canonical`, and only the
classes both have are compared (:func:`shared`). What is left out is said, never silently dropped (:func:`restriction`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

# spelling in some dataset -> the study's name for the cell type (case and surrounding spaces never matter)
SYNONYMS = {
    "eosinophil": "EOSINOPHIL",
    "eosinophils": "EOSINOPHIL",  # DeepAPL
    "lymphocyte": "LYMPHOCYTE",
    "monocyte": "MONOCYTE",
    "neutrophil": "NEUTROPHIL",
    "segmented neutrophils": "NEUTROPHIL",  # DeepAPL (its band neutrophils are not read)
    "basophil": "BASOPHIL",
    "erythroblast": "ERYTHROBLAST",
    "ig": "IMMATURE_GRANULOCYTE",  # PBC: metamyelocytes, myelocytes and promyelocytes
    "immature granulocyte": "IMMATURE_GRANULOCYTE",
    "platelet": "PLATELET",
}


# DeepAPL's class folders (CellaVision's names, in the repository sidhomj/DeepAPL): the five normal white cells this
# study reads, named through SYNONYMS, and the other cell types of its signed slides (blasts and other leukaemic or
# immature cells, smudge cells, platelets, ...), which it does not read. A folder in neither is an error: a class
# nobody has placed must not be silently read, nor silently dropped.
DEEPAPL_READ = ("Basophil", "Eosinophils", "Lymphocyte", "Monocyte", "Segmented neutrophils")
DEEPAPL_NOT_READ = (
    "Artefacts", "Band neutrophils", "Blast, no lineage spec", "Erythroblast", "Giant thrombocyte", "Hairy cells",
    "Large granular lymphocyte", "Lymphocyte, variant", "Metamyelocyte", "Myelocyte", "Plasma cells",
    "Prolymphocyte", "Promonocyte", "Promyelocyte", "Smudge cells", "Thrombocyte aggregation", "Unidentified",
    "Young unidentified",
)


def _key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


# the five normal white cells, whose names labs shorten ("neut", "Lymph", "eos", "mono", "baso") or put in the plural
WHITE_CELLS = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
SHORTEST_ABBREVIATION = 3  # letters: "eos" is one cell type, "ne" could be anything


def canonical(name: str) -> str:
    """The study's name for a class name of any dataset: ``"neutrophil"`` -> ``"NEUTROPHIL"``, ``"ig"`` ->
    ``"IMMATURE_GRANULOCYTE"``; a plural of a known name, or one word that begins one white cell's name and no
    other's (``"neut"``, ``"Lymph"``, ``"eosi"``), is that cell; a name it does not know is upper-cased (so one
    lab's spelling of its own class still meets the same spelling elsewhere)."""
    key = _key(name)
    if key in SYNONYMS:
        return SYNONYMS[key]
    if key.endswith("s") and key[:-1] in SYNONYMS:
        return SYNONYMS[key[:-1]]
    begun = [cell for cell in WHITE_CELLS if len(key) >= SHORTEST_ABBREVIATION and cell.startswith(key)]
    if " " not in key and len(begun) == 1:
        return SYNONYMS[begun[0]]
    return key.upper().replace(" ", "_")


def lab_class(name: str, read: Iterable[str], not_read: Iterable[str], *, where: str = "") -> str | None:
    """The study's name for one of a lab's class folders that it reads (``read``), None for one it does not
    (``not_read``); case and spacing never matter. A name in neither list raises ValueError naming ``where``."""
    read, not_read, key = list(read), list(not_read), _key(name)
    if key in {_key(n) for n in read}:
        return canonical(name)
    if key in {_key(n) for n in not_read}:
        return None
    raise ValueError(f"{where or name}: the class {name!r} is not in the class mapping (bloodlib.data.classes), "
                     f"which reads {', '.join(read)} and knows {len(not_read)} other cell types it does not read; "
                     f"add it to one of the two")


def shared(classes_a: Iterable[str], classes_b: Iterable[str]) -> list[str]:
    """The canonical classes both lists have, in name order; a clear error when there is none."""
    a, b = {canonical(c) for c in classes_a}, {canonical(c) for c in classes_b}
    common = sorted(a & b)
    if not common:
        raise ValueError(f"no class in common: {sorted(a)} and {sorted(b)} (compared by bloodlib.data.classes.canonical)")
    return common


def restriction(labels: Sequence[str], keep: Iterable[str]) -> tuple[pd.Series, pd.DataFrame]:
    """Which of ``labels`` (one per image, any spelling) belong to the canonical classes ``keep``: a boolean
    mask, and a table of what was left out (class, images) for the page to show."""
    keep = set(keep)
    names = pd.Series([canonical(label) for label in labels])
    mask = names.isin(keep)
    left_out = names[~mask].value_counts().rename_axis("class left out").rename("images").to_frame()
    return mask, left_out
