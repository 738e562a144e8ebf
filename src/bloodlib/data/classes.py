"""Which class of one lab's dataset is which class of another's: the correspondence, declared once.

Every dataset keeps its own class names (BCCD's ``NEUTROPHIL``, PBC's ``neutrophil``, a user's folder
names); wherever two datasets meet (a model trained on one, scored on the other; a backbone moved between
them) their names go through :func:`canonical`, and only the classes both have are compared
(:func:`shared`). What is left out is said, never silently dropped (:func:`restriction`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

# spelling in some dataset -> the study's name for the cell type (case and surrounding spaces never matter)
SYNONYMS = {
    "eosinophil": "EOSINOPHIL",
    "lymphocyte": "LYMPHOCYTE",
    "monocyte": "MONOCYTE",
    "neutrophil": "NEUTROPHIL",
    "basophil": "BASOPHIL",
    "erythroblast": "ERYTHROBLAST",
    "ig": "IMMATURE_GRANULOCYTE",  # PBC: metamyelocytes, myelocytes and promyelocytes
    "immature granulocyte": "IMMATURE_GRANULOCYTE",
    "platelet": "PLATELET",
}


def canonical(name: str) -> str:
    """The study's name for a class name of any dataset: ``"neutrophil"`` -> ``"NEUTROPHIL"``, ``"ig"`` ->
    ``"IMMATURE_GRANULOCYTE"``; a name it does not know is upper-cased (so one lab's spelling of its own
    class still meets the same spelling elsewhere)."""
    key = " ".join(str(name).replace("_", " ").split()).lower()
    return SYNONYMS.get(key, key.upper().replace(" ", "_"))


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
