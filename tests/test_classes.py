"""The class correspondence between labs: one table, case and spelling never matter, nothing dropped silently."""
from __future__ import annotations

import pytest

from bloodlib.data import classes


def test_canonical_names_meet_across_labs():
    assert classes.canonical(" neutrophil ") == classes.canonical("NEUTROPHIL") == "NEUTROPHIL"
    assert classes.canonical("ig") == "IMMATURE_GRANULOCYTE"
    assert classes.canonical("band cell") == "BAND_CELL"  # unknown names still meet the same spelling


def test_a_lab_that_shortens_or_pluralises_a_white_cell_still_meets_it():
    for spelling, cell in [("Neut", "NEUTROPHIL"), ("lymp", "LYMPHOCYTE"), ("Lymphocytes", "LYMPHOCYTE"),
                           ("eos", "EOSINOPHIL"), ("eosi", "EOSINOPHIL"), ("mono", "MONOCYTE"), ("Monocytes", "MONOCYTE"),
                           ("Baso", "BASOPHIL"), ("neutrophils", "NEUTROPHIL"), ("platelets", "PLATELET")]:
        assert classes.canonical(spelling) == cell, spelling
    # too short or not one cell's beginning: left as the lab spells it (and said, wherever it is left out)
    assert [classes.canonical(n) for n in ("ne", "mo", "blast", "band neutrophils", "lymphoma")] == [
        "NE", "MO", "BLAST", "BAND_NEUTROPHILS", "LYMPHOMA"]


def test_shared_classes_and_what_is_left_out():
    bccd = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    pbc = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
    assert classes.shared(bccd, pbc) == bccd
    mask, left_out = classes.restriction(["ig", "neutrophil", "platelet", "ig"], classes.shared(bccd, pbc))
    assert mask.tolist() == [False, True, False, False]
    assert left_out["images"].to_dict() == {"IMMATURE_GRANULOCYTE": 2, "PLATELET": 1}
    with pytest.raises(ValueError, match="no class in common"):
        classes.shared(["A", "B"], ["platelet"])
