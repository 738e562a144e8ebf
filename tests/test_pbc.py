"""The PBC atlas as the dataset ``pbc``: layout checks, downloads (against a server on 127.0.0.1 only), the
cleaning of its defects, the smoke subset and the fingerprint of exactly the files a run reads.

The real-data tests read ``../shared/data/pbc`` (or ``$BLOODLIB_PBC``) and skip when it is absent.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bloodlib.data import acquire, classes, cleaning, datasets, fingerprint, folders, layout, sources
from bloodlib import config
from bloodlib.pipeline import report
from bloodlib.data.download import DownloadError
from bloodlib.data.layout import PBC_COUNTS, DataLayoutError
from bloodlib.data.sources import PBC_FOLDER
from conftest import zip_bytes


CODES = {"basophil": "BA", "eosinophil": "EO", "erythroblast": "ERB", "ig": "MY", "lymphocyte": "LY",
         "monocyte": "MO", "neutrophil": "SNE", "platelet": "PLATELET"}
PER_CLASS = 10  # synthetic images per class folder


# ------------------------------------------------------------------------------------------ fixtures
def _jpeg(seed: int) -> bytes:
    """A small JPEG, different for every seed (so that no two synthetic cells are byte-identical)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pbc_members(per_class: int = PER_CLASS, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """A PBC-like folder as archive members ``PBC_dataset_normal_DIB/<class>/<CODE>_<id>.jpg``."""
    members = {}
    for k, label in enumerate(PBC_COUNTS):
        if label in skip:
            continue
        for i in range(per_class):
            members[f"{PBC_FOLDER}/{label}/{CODES[label]}_{100 * k + i}.jpg"] = _jpeg(100 * k + i)
    return members


def make_pbc(base: Path, per_class: int = PER_CLASS, skip: tuple[str, ...] = ()) -> Path:
    """A data root holding a tiny PBC-like folder; returns the root."""
    for name, data in pbc_members(per_class, skip).items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    return base


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    """The Mendeley archive's shape (the PBC folder beside macOS's ``__MACOSX`` shadow), a repository archive
    holding the folder deeper, and archives that must not verify."""
    good = pbc_members()
    return {
        "mendeley.zip": zip_bytes({**good, f"__MACOSX/{PBC_FOLDER}/basophil/._BA_0.jpg": b"\x00\x05\x16\x07"}),
        "github.zip": zip_bytes({"Blood-Cell-Classification-main/README.md": b"readme",
                            **{f"Blood-Cell-Classification-main/{k}": v for k, v in good.items()}}),
        "no-eosinophil.zip": zip_bytes(pbc_members(skip=("eosinophil",))),
        "no-pbc.zip": zip_bytes({"something/else.txt": b"hello"}),
    }


@pytest.fixture
def server(archives, serve):
    """``archives`` on 127.0.0.1 (404 for any other name); ``truncated.zip`` stops half-way."""
    return serve(archives, {"truncated.zip": archives["mendeley.zip"]})


@pytest.fixture
def no_local(monkeypatch):
    """No named folder and no ../shared/data/pbc: ``auto`` goes on to the cache and the downloads."""
    monkeypatch.delenv(sources.ENV_PBC, raising=False)
    monkeypatch.setattr(acquire, "local_candidates", lambda name="bccd": [])


@pytest.fixture
def small_counts(monkeypatch):
    """The synthetic folders' counts as the expected ones, so that strict verification applies to them."""
    monkeypatch.setitem(layout.EXPECTED, PBC_FOLDER, {label: ("*.jpg", PER_CLASS) for label in PBC_COUNTS})


def fetch(server, cache: Path, mendeley: str = "mendeley.zip", github: str = "github.zip", **kwargs) -> Path:
    return acquire.find_data(dataset="pbc", cache=cache, quiet=True, strict_counts=False,
                             mendeley_urls={PBC_FOLDER: server.url(mendeley)}, urls={PBC_FOLDER: server.url(github)},
                             **kwargs)


def leftovers(folder: Path) -> list[str]:
    """Temporary names a failed or finished download must not leave behind."""
    return [str(p) for p in folder.rglob("*") if ".part" in p.name or p.name.startswith(".tmp")]


# ----------------------------------------------------------------------------------- the parameter
def test_pbc_is_a_dataset(tmp_path):
    assert sources.parse_dataset(" PBC ") == ("pbc", None)
    with pytest.raises(ValueError, match="'pbc'"):
        sources.parse_dataset("pbc:/somewhere")
    full = config.resolve("full", output_dir=tmp_path, dataset="pbc")
    assert (full.folds, full.mode, full.image_size) == (1, "crop", 64)
    assert (full.train.epochs, full.train.batch_size, full.train.oversample) == (4, 64, False)
    assert config.resolve("smoke", output_dir=tmp_path, dataset="pbc").folds == 1
    assert config.resolve("full", output_dir=tmp_path, dataset="pbc", epochs=7).train.epochs == 7  # the caller wins
    assert "PBC" in report.dataset_label("pbc") and "snkd93bnjr" in report.dataset_label("pbc")
    # PBC keeps its folder names; they meet BCCD's classes through bloodlib.data.classes
    assert classes.shared(PBC_COUNTS, cleaning.CLASSES) == ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


# ------------------------------------------------------------------------------------ bad input 1
def test_missing_class_names_the_class_and_the_folder(tmp_path, server, no_local):
    root = make_pbc(tmp_path / "mine", skip=("monocyte",))
    with pytest.raises(DataLayoutError) as err:
        layout.verify_layout(root, dataset="pbc", strict_counts=False)
    message = str(err.value)
    assert f"{root / PBC_FOLDER}: expected a folder monocyte/" in message
    assert "basophil" not in message.split("found", 1)[0]  # only the missing class is named as expected
    # a folder the user names is refused as it is, never replaced by a download
    with pytest.raises(DataLayoutError, match="expected a folder monocyte/"):
        fetch(server, tmp_path / "cache", data_dir=root)
    assert server.hits == [] and not (tmp_path / "cache").exists()
    # the published counts are checked too, whatever the image size
    counts = rf"{PBC_FOLDER}/basophil: expected 1218 \*\.jpg files, found {PER_CLASS}"
    with pytest.raises(DataLayoutError, match=counts):
        layout.verify_layout(make_pbc(tmp_path / "small"), dataset="pbc")
    # the PBC folder itself, named instead of the folder holding it
    with pytest.raises(DataLayoutError, match="pass its parent folder"):
        layout.verify_layout(tmp_path / "small" / PBC_FOLDER, dataset="pbc", strict_counts=False)


def test_missing_class_stops_a_run(tmp_path, monkeypatch, small_counts):
    root = make_pbc(tmp_path / "mine", skip=("platelet",))
    settings = config.resolve("smoke", data_dir=root, output_dir=tmp_path / "out", dataset="pbc")
    monkeypatch.delenv(config.ENV_DATA, raising=False)
    with pytest.raises(DataLayoutError, match=rf"{PBC_FOLDER}: expected a folder platelet/ of {PER_CLASS}"):
        datasets.prepare(settings, progress=False)


# ------------------------------------------------------------------------------------ bad input 2
def test_corrupt_and_non_image_files_are_reported_skips(tmp_path, monkeypatch, small_counts):
    """A renamed .DS_Store and a truncated JPEG: in the manifest with their reason and in the cleaning table;
    the data record fingerprints exactly the files the run read, those two included."""
    root = make_pbc(tmp_path / "data")
    neutrophils = root / PBC_FOLDER / "neutrophil"
    (neutrophils / ".DS_169665.jpg").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))  # as in the real PBC
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)).save(whole, "JPEG")
    (neutrophils / "SNE_609.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])  # a truncated JPEG
    monkeypatch.delenv(config.ENV_DATA, raising=False)
    settings = config.resolve("full", data_dir=root, output_dir=tmp_path / "out", dataset="pbc", image_size=16)
    prepared = datasets.prepare(settings, progress=False)
    datasets.save_cleaning(prepared)

    saved = pd.read_csv(tmp_path / "out" / "data" / "manifest.csv", keep_default_na=False).set_index("file")
    assert saved.loc["neutrophil/.DS_169665.jpg", "reason"] == "not_an_image"
    assert saved.loc["neutrophil/SNE_609.jpg", "reason"] == "unreadable"
    table = pd.read_csv(tmp_path / "out" / "data" / "cleaning_table.csv", index_col=0)
    assert table.loc["files found", "neutrophil"] == PER_CLASS + 1
    assert table.loc[folders.STEPS["not_an_image"], "neutrophil"] == PER_CLASS
    assert table.loc[folders.STEPS["unreadable"], "neutrophil"] == PER_CLASS - 1
    # the labels are PBC's folder names; the held-out split holds every class in every part
    assert prepared.data.classes == list(PBC_COUNTS) and prepared.protocol == "holdout"
    kept = prepared.data.rows
    assert (pd.crosstab(kept["label"], kept["split"]) > 0).all().all()

    record = datasets.write_data_record(settings, datasets.locate(settings))
    fingerprinted = pd.read_csv(tmp_path / "out" / "data" / "data_manifest.csv")["path"]
    assert sorted(fingerprinted) == sorted(f"{PBC_FOLDER}/{f}" for f in prepared.cleaning.manifest["file"])
    assert record["files"] == 8 * PER_CLASS + 1 and record["sources"] == "local folder" and "subset" not in record
    assert record["layout"][f"{PBC_FOLDER}/neutrophil"] == PER_CLASS  # the hidden file is not a PBC image


def test_smoke_subset_is_what_the_run_reads_and_fingerprints(tmp_path, monkeypatch, small_counts):
    root = make_pbc(tmp_path / "data")
    monkeypatch.delenv(config.ENV_DATA, raising=False)
    monkeypatch.setitem(datasets.SMOKE_SUBSETS, "pbc", 48)
    settings = config.resolve("smoke", data_dir=root, output_dir=tmp_path / "out", dataset="pbc", image_size=16)
    assert datasets.max_images(settings) == 48
    prepared = datasets.prepare(settings, progress=False)
    read = prepared.cleaning.manifest
    assert len(read) == 48 and (read["raw_label"].value_counts() == 6).all()  # stratified
    record = datasets.write_data_record(settings, datasets.locate(settings))
    fingerprinted = pd.read_csv(tmp_path / "out" / "data" / "data_manifest.csv")["path"]
    assert sorted(fingerprinted) == sorted(f"{PBC_FOLDER}/{f}" for f in read["file"])
    assert record["files"] == 48 and "seed 42" in record["subset"]
    again = datasets.prepare(settings, progress=False).cleaning.manifest  # seeded: the same subset every time
    assert list(again["file"]) == list(read["file"])
    other = config.resolve("smoke", data_dir=root, output_dir=tmp_path / "out", dataset="pbc", image_size=16, seed=1)
    assert set(datasets.prepare(other, progress=False).cleaning.manifest["file"]) != set(read["file"])
    full = config.resolve("full", data_dir=root, output_dir=tmp_path / "out", dataset="pbc")
    assert datasets.max_images(full) is None
    with pytest.raises(ValueError, match="max_images takes a subset of pbc"):
        fingerprint.dataset_files("bccd", root, max_images=3)


# ----------------------------------------------------------------------------------- acquisition
def test_download_from_mendeley_verified_then_cached(server, tmp_path, no_local):
    cache = tmp_path / "cache"
    root = fetch(server, cache)
    assert root == cache.resolve() and server.hits == ["mendeley.zip"]
    assert sorted(p.name for p in root.iterdir()) == [PBC_FOLDER, sources.SOURCES_FILE]  # no __MACOSX
    assert layout.verify_layout(root, dataset="pbc", strict_counts=False)[f"{PBC_FOLDER}/ig"] == PER_CLASS
    assert acquire.read_sources(root, "pbc")[PBC_FOLDER]["origin"] == server.url("mendeley.zip")
    assert leftovers(cache) == []

    snapshot = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    for source in ("auto", "cache", "mendeley", "github"):
        assert fetch(server, cache, source=source) == root
    assert server.hits == ["mendeley.zip"]  # the second call makes no request
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == snapshot  # and copies nothing


def test_github_copy_when_mendeley_fails(server, tmp_path, no_local):
    cache = tmp_path / "cache"
    root = fetch(server, cache, mendeley="gone.zip")
    assert server.hits == ["gone.zip", "github.zip"]
    assert acquire.read_sources(root, "pbc")[PBC_FOLDER]["origin"] == server.url("github.zip")
    files = fingerprint.dataset_files("pbc", root)
    assert len(files) == 8 * PER_CLASS and all(f.startswith(f"{PBC_FOLDER}/") for f in files)  # no README
    # source="mendeley" tries Mendeley Data only; "kaggle" has no PBC at all
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server, tmp_path / "other", mendeley="gone.zip", source="mendeley")
    assert server.hits[-1] == "gone.zip"
    with pytest.raises(DownloadError, match=f"{PBC_FOLDER}: only Mendeley Data or GitHub has it"):
        fetch(server, tmp_path / "third", source="kaggle")


@pytest.mark.parametrize("bad, problem", [
    ("no-eosinophil.zip", "expected a folder eosinophil/"),
    ("no-pbc.zip", f"expected a folder {PBC_FOLDER}/"),
    ("truncated.zip", "truncated|IncompleteRead|Connection broken|not a zip"),
    ("mendeley.zip", rf"basophil: expected 1218 \*\.jpg files, found {PER_CLASS}"),  # strict: not the published PBC
])
def test_download_that_does_not_verify_leaves_nothing(server, tmp_path, no_local, bad, problem):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="could not assemble") as err:
        acquire.find_data(dataset="pbc", cache=cache, quiet=True, strict_counts=bad == "mendeley.zip",
                          mendeley_urls={PBC_FOLDER: server.url(bad)}, urls={PBC_FOLDER: server.url(bad)})
    assert re.search(problem, str(err.value)), str(err.value)
    assert len(server.hits) == 2  # Mendeley Data, then GitHub
    assert sorted(p.name for p in cache.iterdir()) == []  # nothing in the cache, not even a temporary name


def test_search_order(tmp_path, server, monkeypatch):
    """A folder the user names, then ../shared/data/pbc, then the cache, then the downloads."""
    named, shared, cache = tmp_path / "named", tmp_path / "shared" / "pbc", tmp_path / "cache"
    for folder in (named, shared, cache):
        make_pbc(folder)
    monkeypatch.setattr(acquire, "local_candidates", lambda name="bccd": [shared] if name == "pbc" else [])
    monkeypatch.setenv(sources.ENV_PBC, str(named))
    assert fetch(server, cache) == named.resolve()
    assert fetch(server, cache, data_dir=shared) == shared.resolve()  # data_dir before the variable
    monkeypatch.delenv(sources.ENV_PBC)
    assert fetch(server, cache) == shared.resolve()
    assert fetch(server, cache, source="cache") == cache.resolve()
    monkeypatch.setattr(acquire, "local_candidates", lambda name="bccd": [])
    assert fetch(server, cache) == cache.resolve()
    assert server.hits == []
    with pytest.raises(DataLayoutError, match=f"no local data folder: set {sources.ENV_PBC}"):
        fetch(server, cache, source="local")


def test_locate_ignores_the_bccd_folder_of_the_environment(tmp_path, monkeypatch, small_counts):
    """``make`` exports BLOODLIB_DATA (BCCD's folder) for every run and resolve() makes it data_dir: a pbc run
    looks for PBC elsewhere, while a data_dir set for the run is used."""
    bccd, pbc = tmp_path / "bccd", make_pbc(tmp_path / "pbc")
    bccd.mkdir()
    monkeypatch.setenv(config.ENV_DATA, str(bccd))
    monkeypatch.setenv(sources.ENV_PBC, str(pbc))
    settings = config.resolve("smoke", output_dir=tmp_path / "out", dataset="pbc")
    assert settings.data_dir == bccd and datasets.locate(settings) == pbc.resolve()
    named = config.resolve("smoke", data_dir=pbc, output_dir=tmp_path / "out", dataset="pbc")
    monkeypatch.delenv(sources.ENV_PBC)
    assert datasets.locate(named) == pbc.resolve()


# ------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def pbc_root() -> Path:
    """The shared, downscaled PBC (or $BLOODLIB_PBC); tests using it skip when it is absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pbc"
    root = Path(os.environ.get(sources.ENV_PBC) or default)
    if not (root / PBC_FOLDER).is_dir():
        pytest.skip(f"real PBC data not found at {root} (set {sources.ENV_PBC} or provide ../shared/data/pbc)")
    return root


@pytest.fixture(scope="module")
def pbc_cleaned(pbc_root):
    """The whole shared PBC cleaned once for the module (17,093 files read; indexed in the session's cache)."""
    return folders.clean_pbc(pbc_root, cleaning.CleaningParams(), progress=False)[0]


# the README's table minus what the cleaning drops: 6 + 6 + 3 + 1 same-class copies, one cross-class pair
KEPT = {"basophil": 1212, "eosinophil": 3110, "erythroblast": 1551, "ig": 2892, "lymphocyte": 1214,
        "monocyte": 1419, "neutrophil": 3328, "platelet": 2348}


def test_real_layout(pbc_root):
    counts = layout.verify_layout(pbc_root, dataset="pbc")
    assert {k: v for k, v in counts.items() if k != "root"} == {f"{PBC_FOLDER}/{c}": n for c, n in PBC_COUNTS.items()}
    files = fingerprint.dataset_files("pbc", pbc_root)
    assert len(files) == 17_092 + 1 and f"{PBC_FOLDER}/neutrophil/.DS_169665.jpg" in files


def test_real_cleaning(pbc_cleaned):
    m = pbc_cleaned.manifest.set_index("file")
    assert len(m) == 17_093 and sum(PBC_COUNTS.values()) == 17_092
    assert m.loc["neutrophil/.DS_169665.jpg", "reason"] == "not_an_image"
    pair = ["eosinophil/EO_225902.jpg", "neutrophil/BNE_191112.jpg"]
    assert (m.loc[pair, "reason"] == "conflicting_duplicate").all()
    copies = m[m["reason"] == "duplicate"]
    assert len(copies) == 16 and (copies["raw_label"] == copies["duplicate_of"].str.split("/").str[0]).all()
    assert m["reason"].value_counts().drop("").to_dict() == {"duplicate": 16, "conflicting_duplicate": 2,
                                                           "not_an_image": 1}
    kept = pbc_cleaned.kept
    assert len(kept) == 17_092 - 18 and kept["label"].value_counts().to_dict() == KEPT
    table = pbc_cleaned.table
    assert table.loc["files found", "total"] == 17_093 and table.iloc[-1].drop("total").to_dict() == KEPT
    # every kept cell is framed by its stain (two platelets aside, too faint: the centred square)
    assert (kept["box_source"] == "stain").mean() > 0.999


def test_real_smoke_run_reads_a_subset(pbc_root, pbc_cleaned, tmp_path):
    settings = config.resolve("smoke", data_dir=pbc_root, output_dir=tmp_path / "out", dataset="pbc")
    prepared = datasets.prepare(settings, progress=False)
    assert len(prepared.cleaning.manifest) == datasets.SMOKE_SUBSETS["pbc"] and prepared.protocol == "holdout"
    assert prepared.data.classes == list(PBC_COUNTS) and prepared.data.image_size == (64, 64)
    rows = prepared.data.rows
    assert (pd.crosstab(rows["label"], rows["split"]) > 0).all().all()  # every class in train, val and test
    record = datasets.write_data_record(settings, datasets.locate(settings))
    fingerprinted = pd.read_csv(tmp_path / "out" / "data" / "data_manifest.csv")
    assert sorted(fingerprinted["path"]) == sorted(f"{PBC_FOLDER}/{f}" for f in prepared.cleaning.manifest["file"])
    one = fingerprinted.iloc[0]
    assert one["sha256"] == hashlib.sha256((pbc_root / one["path"]).read_bytes()).hexdigest()
    assert record["files"] == 400 and record["layout"][f"{PBC_FOLDER}/neutrophil"] == 3329
