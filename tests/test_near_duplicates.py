"""Copies of one source: byte-identical ones by hash, augmented ones (rotated, shifted, mirrored) by similarity."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bloodlib.data import near_duplicates
from conftest import augment


def test_find_duplicates_by_hash_and_label():
    frame = pd.DataFrame({
        "file": ["a/1", "a/2", "a/3", "a/4", "b/4", "a/5", "a/6", "a/7"],
        "raw_label": ["a", "a", "a", "a", "b", "a", "a", ""],
        "sha256": ["x", "x", "x", "y", "y", "z", "z", "z"],
        "status": ["ok", "ok", "ok", "ok", "ok", "ok", "unreadable", "ok"],
    })
    reason, original = near_duplicates.find_duplicates(frame)
    assert reason.tolist() == ["", "duplicate", "duplicate", "conflicting_duplicate", "conflicting_duplicate",
                               "", "", ""]  # an undecodable or unlabelled copy does not count
    assert original.tolist() == ["", "a/1", "a/1", "a/4", "a/4", "", "", ""]


def test_source_groups_find_augmented_copies(tmp_path, smears):
    """Rotated, shifted and mirrored copies of three smears come back as three groups."""
    rng = np.random.default_rng(0)
    files, truth = [], []
    for source, smear in enumerate([smears["EOSINOPHIL"][0], smears["MONOCYTE"][0], smears["NEUTROPHIL"][0]]):
        for copy, image in enumerate(augment(smear, 8, rng)):
            files.append(tmp_path / f"_{copy}_{source}.jpeg")
            image.save(files[-1], quality=90)
            truth.append(source)
    groups = near_duplicates.source_groups(files, min_copies=4, cache=tmp_path / "cache", progress=False)
    assert pd.crosstab(np.array(truth), np.array(groups)).shape == (3, 3)  # one group per source
    assert len(list((tmp_path / "cache").glob("groups-*.json"))) == 1
    assert near_duplicates.source_groups(files, min_copies=4, cache=tmp_path / "cache", progress=False) == groups
