"""The file index: one read of each file (hash, size, status, stain box), remembered per (path, size, mtime)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from bloodlib.data import fileindex


def test_index_is_remembered(tmp_path, monkeypatch):
    root = tmp_path / "cells"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "a" / "0.png")
    first = fileindex.index_files(root, ["a/0.png"], cache=tmp_path / "index", progress=False)
    assert first.loc[0, "status"] == "ok" and (first.loc[0, "width"], first.loc[0, "height"]) == (8, 8)
    calls = []
    monkeypatch.setattr(fileindex, "inspect_file", lambda path: calls.append(path) or {})
    again = fileindex.index_files(root, ["a/0.png"], cache=tmp_path / "index", progress=False)
    assert calls == [] and again.loc[0, "sha256"] == first.loc[0, "sha256"]
    monkeypatch.undo()
    Image.new("RGB", (9, 9)).save(root / "a" / "0.png")  # changed: inspected again
    changed = fileindex.index_files(root, ["a/0.png"], cache=tmp_path / "index", progress=False)
    assert changed.loc[0, "width"] == 9 and changed.loc[0, "sha256"] != first.loc[0, "sha256"]


def test_what_each_file_is_without_a_record(tmp_path):
    Image.new("RGB", (160, 120), (200, 180, 190)).save(tmp_path / "good.jpg", quality=90)
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.jpg", quality=90)
    data = (tmp_path / "noise.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])  # the header intact, the scan cut
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image")
    files = ["good.jpg", "truncated.jpg", "notes.jpg", "notes.txt"]
    index = fileindex.index_files(tmp_path, files, cache=False, progress=False).set_index("file")
    assert index["status"].to_dict() == {"good.jpg": "ok", "truncated.jpg": "unreadable",
                                         "notes.jpg": "not_an_image", "notes.txt": "not_an_image"}
    assert (index.loc["good.jpg", "width"], index.loc["good.jpg", "height"]) == (160, 120)
    assert index.loc["good.jpg", "stain_box"] == ""  # a plain pink image: no stained cell
    assert index.loc["notes.jpg", "sha256"] == index.loc["notes.txt", "sha256"]  # the hash is of the bytes
    assert fileindex.cache_folder(False) is None and not list(tmp_path.glob("**/files-*.csv"))
