"""DeepAPL's normal white cells as the dataset ``deepapl``: the class mapping, layout checks, downloads (against a
server on 127.0.0.1 only), bad input, the cleaning of its defects, patients as groups and the smoke subset.

The real-data tests read ``../shared/data/deepapl`` (or ``$BLOODLIB_DEEPAPL``) and skip when it is absent.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bloodlib import config
from bloodlib.data import acquire, classes, cleaning, datasets, deepapl, fingerprint, layout, sources, splits
from bloodlib.data.classes import DEEPAPL_READ
from bloodlib.data.download import DownloadError
from bloodlib.data.layout import DataLayoutError
from bloodlib.data.sources import DEEPAPL_FOLDER, ENV_DEEPAPL, SIGNED_SLIDES
from bloodlib.pipeline import report
from conftest import zip_bytes

CODES = dict(zip(DEEPAPL_READ, ("BA", "EO", "LY", "MO", "SNE")))
PATIENTS = 8
PER_CLASS = 2  # synthetic cells of each class per patient
NESTED = {"Patient_07": "2019-02-11_1635"}  # a patient whose cells sit in a slide folder, as 11 of DeepAPL's do


# ------------------------------------------------------------------------------------------ fixtures
def _jpeg(seed: int, side: int = 12) -> bytes:
    """A small JPEG, different for every seed (so that no two synthetic cells are byte-identical)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def signed(patient: str) -> str:
    """Where a synthetic patient's signed slides sit, relative to the data root."""
    slide = f"{NESTED[patient]}/" if patient in NESTED else ""
    return f"{DEEPAPL_FOLDER}/{patient}/{slide}{SIGNED_SLIDES}"


def deepapl_members(patients: int = PATIENTS, per_class: int = PER_CLASS) -> dict[str, bytes]:
    """A DeepAPL-like ``Data/All`` as archive members: every patient holds every class read, a blast (a cell type
    the study does not read) and an unsigned slide (never read)."""
    members = {}
    for p in range(patients):
        patient = f"Patient_{p:02d}"
        for k, label in enumerate(DEEPAPL_READ):
            for i in range(per_class):
                members[f"{signed(patient)}/{label}/{CODES[label]}_{1000 * p + 100 * k + i}.jpg"] = _jpeg(
                    1000 * p + 100 * k + i)
        members[f"{signed(patient)}/Blast, no lineage spec/BL_{p}.jpg"] = _jpeg(90_000 + p)
        members[f"{signed(patient).rsplit('/', 1)[0]}/Unsigned slides/{p}_001.jpg"] = _jpeg(95_000 + p)
    return members


def write(base: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    return base


def make_deepapl(base: Path, **kwargs) -> Path:
    """A data root holding a tiny DeepAPL-like ``Data/All``; returns the root."""
    return write(base, deepapl_members(**kwargs))


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    """The repository archive's shape (``DeepAPL-master/Data/All`` beside code and other data), and archives that
    must not verify."""
    repository = {"DeepAPL-master/README.md": b"readme", "DeepAPL-master/Data/master.csv": b"Patient_ID\n",
                  "DeepAPL-master/scripts/Train.py": b"print()\n"}
    good = {f"DeepAPL-master/{name}": data for name, data in deepapl_members().items()}
    mystery = f"DeepAPL-master/{signed('Patient_03')}/Mystery cells/MC_1.jpg"
    return {
        "github.zip": zip_bytes({**repository, **good}),
        "no-data.zip": zip_bytes(repository),
        "unknown-class.zip": zip_bytes({**repository, **good, mystery: _jpeg(7)}),
    }


@pytest.fixture
def server(archives, serve):
    """``archives`` on 127.0.0.1 (404 for any other name); ``truncated.zip`` stops half-way."""
    return serve(archives, {"truncated.zip": archives["github.zip"]})


@pytest.fixture
def no_local(monkeypatch):
    """No named folder and no ../shared/data/deepapl: ``auto`` goes on to the cache and the download."""
    monkeypatch.delenv(ENV_DEEPAPL, raising=False)
    monkeypatch.setattr(acquire, "local_candidates", lambda name="bccd": [])


@pytest.fixture
def small_counts(monkeypatch):
    """The synthetic folders' counts as the expected ones, so that strict verification applies to them."""
    monkeypatch.setattr(layout, "DEEPAPL_COUNTS", dict.fromkeys(DEEPAPL_READ, PATIENTS * PER_CLASS))
    monkeypatch.setattr(layout, "DEEPAPL_PATIENTS", PATIENTS)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(root, profile, **overrides)``: the settings of a deepapl run on ``root`` (BCCD's folder unset)."""
    monkeypatch.delenv(config.ENV_DATA, raising=False)

    def settings(root: Path, profile: str = "full", **overrides):
        return config.resolve(profile, data_dir=root, output_dir=tmp_path / "out", dataset="deepapl",
                              **{"image_size": 16, **overrides})
    return settings


def fetch(server, cache: Path, github: str = "github.zip", **kwargs) -> Path:
    return acquire.find_data(dataset="deepapl", cache=cache, quiet=True, strict_counts=False,
                             urls={DEEPAPL_FOLDER: server.url(github)}, **kwargs)


def read_names() -> list[str]:
    """The study's names of the classes read."""
    return [classes.canonical(name) for name in DEEPAPL_READ]


def leftovers(folder: Path) -> list[str]:
    """Temporary names a failed or finished download must not leave behind."""
    return [str(p) for p in folder.rglob("*") if ".part" in p.name or p.name.startswith(".tmp")]


def straddling(rows: pd.DataFrame, planned: list[splits.Split]) -> list[str]:
    """Patients whose cells lie on two sides (train, validation, test) of any of the ``planned`` splits."""
    patients = rows["patient"].to_numpy()
    found = set()
    for split in planned:
        parts = [set(patients[split.train]), set(patients[split.val]), set(patients[split.test])]
        found |= (parts[0] & parts[1]) | (parts[0] & parts[2]) | (parts[1] & parts[2])
    return sorted(found)


# ---------------------------------------------------------------------------------- the parameter
def test_deepapl_is_a_dataset():
    assert sources.parse_dataset(" DeepAPL ") == ("deepapl", None)
    with pytest.raises(ValueError, match="unknown dataset.*'deepapl'"):
        sources.parse_dataset("deepapl:/somewhere")
    assert "DeepAPL" in report.dataset_label("deepapl") and "sidhomj/DeepAPL" in report.dataset_label("deepapl")
    assert sources.HOMES["deepapl"] == (ENV_DEEPAPL, "deepapl")


def test_class_mapping():
    """DeepAPL's folder names become the study's names, once, in bloodlib.data.classes; other cell types are not
    read; a name the mapping lacks is an error naming the folder."""
    read = [classes.lab_class(name, DEEPAPL_READ, classes.DEEPAPL_NOT_READ) for name in DEEPAPL_READ]
    assert read == ["BASOPHIL", "EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
    assert classes.lab_class(" segmented  NEUTROPHILS", DEEPAPL_READ, classes.DEEPAPL_NOT_READ) == "NEUTROPHIL"
    for other in ("Blast, no lineage spec", "Band neutrophils", "Smudge cells", "lymphocyte, variant"):
        assert classes.lab_class(other, DEEPAPL_READ, classes.DEEPAPL_NOT_READ) is None
    with pytest.raises(ValueError, match=r"/x/Mystery cells: the class 'Mystery cells' is not in the class mapping"):
        classes.lab_class("Mystery cells", DEEPAPL_READ, classes.DEEPAPL_NOT_READ, where="/x/Mystery cells")
    # the names meet BCCD's four classes and PBC's folder names
    assert classes.shared(read, cleaning.CLASSES) == list(cleaning.CLASSES)
    assert classes.shared(read, layout.PBC_COUNTS) == sorted(read)


def test_listing(tmp_path):
    folder = make_deepapl(tmp_path) / DEEPAPL_FOLDER
    listed = deepapl.list_files(folder)
    assert len(listed) == PATIENTS * 5 * PER_CLASS  # no blast, no unsigned slide
    assert set(listed["raw_label"]) == set(DEEPAPL_READ) and set(listed["label"]) == set(read_names())
    nested = listed[listed["patient"] == "Patient_07"]
    assert (nested["slide"] == NESTED["Patient_07"]).all()
    assert (listed.loc[listed["patient"] != "Patient_07", "slide"] == "").all()
    assert nested["file"].iloc[0].startswith(f"Patient_07/{NESTED['Patient_07']}/{SIGNED_SLIDES}/")


# ------------------------------------------------------------------------------------------ bad input
def test_class_the_mapping_lacks_is_named(tmp_path, server, no_local, small_counts, run):
    root = make_deepapl(tmp_path / "mine")
    mystery = root / signed("Patient_03") / "Mystery cells"
    write(mystery, {"MC_1.jpg": _jpeg(1)})
    problem = rf"{re.escape(str(mystery))}: the class 'Mystery cells' is not in the class mapping"
    with pytest.raises(DataLayoutError, match=problem):
        layout.verify_layout(root, dataset="deepapl")
    # a folder the user names is refused as it is, never replaced by a download; a run stops before reading a file
    with pytest.raises(DataLayoutError, match=problem):
        fetch(server, tmp_path / "cache", data_dir=root)
    with pytest.raises(DataLayoutError, match=problem):
        datasets.prepare(run(root), progress=False)
    assert server.hits == [] and not (tmp_path / "cache").exists()


def test_patient_without_class_folder(tmp_path):
    root = make_deepapl(tmp_path)
    empty = root / signed("Patient_02")
    for folder in empty.iterdir():
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    with pytest.raises(DataLayoutError, match=rf"{re.escape(str(empty))}: no class folder"):
        layout.verify_layout(root, dataset="deepapl", strict_counts=False)
    empty.rmdir()  # Patient_02 now holds only its unsigned slides
    with pytest.raises(DataLayoutError, match=rf"{re.escape(str(empty.parent))}: no 'Signed slides' folder.*"
                                              rf"found Unsigned slides"):
        layout.verify_layout(root, dataset="deepapl", strict_counts=False)


def test_wrong_level_and_counts(tmp_path):
    root = make_deepapl(tmp_path)
    with pytest.raises(DataLayoutError, match=r"\*\.jpg files \(Data/All/\*\*/Signed slides/Basophil\), found 16"):
        layout.verify_layout(root, dataset="deepapl")  # the published counts, whatever the image size
    for deeper in (root / "Data", root / DEEPAPL_FOLDER, root / DEEPAPL_FOLDER / "Patient_00"):
        with pytest.raises(DataLayoutError, match="pass the folder holding Data/All/"):
            layout.verify_layout(deeper, dataset="deepapl", strict_counts=False)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataLayoutError, match="expected a folder Data/All/ of patient folders, found an empty folder"):
        layout.verify_layout(tmp_path / "elsewhere", dataset="deepapl")


def test_truncated_and_non_image_files_are_reported_skips(tmp_path, monkeypatch, small_counts, run):
    """A Thumbs.db (the repository has some) and a truncated JPEG: in the manifest with their reason and in the
    cleaning table; the data record fingerprints exactly the files the run read, those two included."""
    root = make_deepapl(tmp_path / "data")
    monkeypatch.setitem(layout.DEEPAPL_COUNTS, "Monocyte", PATIENTS * PER_CLASS + 1)  # the truncated one is a *.jpg
    lymphocytes, monocytes = root / signed("Patient_01") / "Lymphocyte", root / signed("Patient_02") / "Monocyte"
    (lymphocytes / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    whole = _jpeg(0, side=120)
    (monocytes / "MO_9.jpg").write_bytes(whole[: len(whole) // 2])
    settings = run(root)
    prepared = datasets.prepare(settings, progress=False)
    datasets.save_cleaning(prepared)

    saved = pd.read_csv(tmp_path / "out" / "data" / "manifest.csv", keep_default_na=False).set_index("file")
    assert saved.loc[f"Patient_01/{SIGNED_SLIDES}/Lymphocyte/Thumbs.db", "reason"] == "not_an_image"
    assert saved.loc[f"Patient_02/{SIGNED_SLIDES}/Monocyte/MO_9.jpg", "reason"] == "unreadable"
    assert "truncated" in saved.loc[f"Patient_02/{SIGNED_SLIDES}/Monocyte/MO_9.jpg", "detail"]
    table = pd.read_csv(tmp_path / "out" / "data" / "cleaning_table.csv", index_col=0)
    n = PATIENTS * PER_CLASS
    assert table.loc["files found", "LYMPHOCYTE"] == n + 1 and table.loc["files found", "MONOCYTE"] == n + 1
    assert table.loc[datasets.folders.STEPS["unreadable"], ["LYMPHOCYTE", "MONOCYTE"]].tolist() == [n, n]
    assert prepared.data.classes == sorted(read_names())

    record = datasets.write_data_record(settings, datasets.locate(settings))
    fingerprinted = pd.read_csv(tmp_path / "out" / "data" / "data_manifest.csv")["path"]
    assert sorted(fingerprinted) == sorted(f"{DEEPAPL_FOLDER}/{f}" for f in prepared.cleaning.manifest["file"])
    assert record["files"] == 5 * n + 2 and record["sources"] == "local folder" and "subset" not in record
    assert record["layout"][f"{DEEPAPL_FOLDER} patients"] == PATIENTS


# ------------------------------------------------------------------------------------- patients as groups
def test_patients_never_straddle_a_split(tmp_path, small_counts, run):
    root = make_deepapl(tmp_path / "data")
    for profile, folds in (("full", 4), ("full", 1), ("smoke", 2)):
        prepared = datasets.prepare(run(root, profile, folds=folds), progress=False)
        rows = prepared.data.rows
        assert (rows["group"] == rows["patient"]).all() and rows["patient"].nunique() == PATIENTS
        assert straddling(rows, prepared.splits) == [], (profile, folds)
        assert prepared.protocol == ("cv" if folds > 1 else "holdout")
    # a patient's cells are one group even when its slides differ: the nested patient is one group too
    assert set(rows.loc[rows["patient"] == "Patient_07", "group"]) == {"Patient_07"}


def test_smoke_subset_is_whole_patients_and_what_the_run_fingerprints(tmp_path, monkeypatch, small_counts, run):
    root = make_deepapl(tmp_path / "data")
    per_patient = 5 * PER_CLASS
    monkeypatch.setitem(datasets.SMOKE_SUBSETS, "deepapl", 4 * per_patient + 3)
    settings = run(root, "smoke")
    assert datasets.max_images(settings) == 4 * per_patient + 3
    prepared = datasets.prepare(settings, progress=False)
    read = prepared.cleaning.manifest
    assert len(read) == 4 * per_patient and (read.groupby("patient").size() == per_patient).all()  # whole patients
    assert straddling(prepared.data.rows, prepared.splits) == []
    record = datasets.write_data_record(settings, datasets.locate(settings))
    fingerprinted = pd.read_csv(tmp_path / "out" / "data" / "data_manifest.csv")["path"]
    assert sorted(fingerprinted) == sorted(f"{DEEPAPL_FOLDER}/{f}" for f in read["file"])
    assert record["files"] == 4 * per_patient and "whole patients" in record["subset"] and "seed 42" in record["subset"]
    again = deepapl.listing(root / DEEPAPL_FOLDER, datasets.max_images(settings), 42)  # seeded: the same every time
    assert list(again["file"]) == list(read["file"])
    other_seed = deepapl.listing(root / DEEPAPL_FOLDER, datasets.max_images(settings), 1)
    assert set(other_seed["patient"]) != set(read["patient"])
    with pytest.raises(ValueError, match="no patient fits in a subset of 3 files"):
        deepapl.listing(root / DEEPAPL_FOLDER, 3, 42)
    assert datasets.max_images(run(root, "full")) is None


# ----------------------------------------------------------------------------------------- acquisition
def test_download_from_github_verified_then_cached(server, tmp_path, no_local):
    cache = tmp_path / "cache"
    root = fetch(server, cache)
    assert root == cache.resolve() and server.hits == ["github.zip"]
    assert sorted(p.name for p in root.iterdir()) == ["Data", sources.SOURCES_FILE]  # only Data/All of the repository
    assert [p.name for p in (root / "Data").iterdir()] == ["All"]
    assert layout.verify_layout(root, dataset="deepapl", strict_counts=False)[f"{DEEPAPL_FOLDER} patients"] == PATIENTS
    assert acquire.read_sources(root, "deepapl")[DEEPAPL_FOLDER]["origin"] == server.url("github.zip")
    files = fingerprint.dataset_files("deepapl", root)
    assert len(files) == PATIENTS * 5 * PER_CLASS and not any("Blast" in f or "Unsigned" in f for f in files)
    assert leftovers(cache) == []

    snapshot = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    for source in ("auto", "cache", "github"):
        assert fetch(server, cache, source=source) == root
    assert server.hits == ["github.zip"]  # the second call makes no request
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == snapshot  # and copies nothing


@pytest.mark.parametrize("bad, strict, problem", [
    ("no-data.zip", False, "expected a folder Data/All/ of patient folders in the archive"),
    ("unknown-class.zip", False, "the class 'Mystery cells' is not in the class mapping"),
    ("truncated.zip", False, "truncated|IncompleteRead|Connection broken|not a zip"),
    ("github.zip", True, r"expected 53 \*\.jpg files \(Data/All/\*\*/Signed slides/Basophil\), found 16"),
])
def test_download_that_does_not_verify_leaves_nothing(server, tmp_path, no_local, bad, strict, problem):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="could not assemble Data/All") as err:
        acquire.find_data(dataset="deepapl", cache=cache, quiet=True, strict_counts=strict,
                          urls={DEEPAPL_FOLDER: server.url(bad)})
    assert re.search(problem, str(err.value)), str(err.value)
    assert server.hits == [bad]
    assert sorted(p.name for p in cache.iterdir()) == []  # nothing in the cache, not even a temporary name


def test_search_order(tmp_path, server, monkeypatch):
    """A folder the user names, then ../shared/data/deepapl, then the cache, then the download."""
    named, shared, cache = tmp_path / "named", tmp_path / "shared" / "deepapl", tmp_path / "cache"
    for folder in (named, shared, cache):
        make_deepapl(folder)
    monkeypatch.setattr(acquire, "local_candidates", lambda name="bccd": [shared] if name == "deepapl" else [])
    monkeypatch.setenv(ENV_DEEPAPL, str(named))
    assert fetch(server, cache) == named.resolve()
    assert fetch(server, cache, data_dir=shared) == shared.resolve()  # data_dir before the variable
    monkeypatch.delenv(ENV_DEEPAPL)
    assert fetch(server, cache) == shared.resolve()
    assert fetch(server, cache, source="cache") == cache.resolve()
    monkeypatch.setattr(acquire, "local_candidates", lambda name="bccd": [])
    assert fetch(server, cache) == cache.resolve()
    assert server.hits == []
    with pytest.raises(DataLayoutError, match=f"no local data folder: set {ENV_DEEPAPL}"):
        fetch(server, cache, source="local")


def test_locate_ignores_the_bccd_folder_of_the_environment(tmp_path, monkeypatch, small_counts):
    """``make`` exports BLOODLIB_DATA (BCCD's folder) for every run and resolve() makes it data_dir: a deepapl run
    looks for DeepAPL elsewhere."""
    bccd, mine = tmp_path / "bccd", make_deepapl(tmp_path / "deepapl")
    bccd.mkdir()
    monkeypatch.setenv(config.ENV_DATA, str(bccd))
    monkeypatch.setenv(ENV_DEEPAPL, str(mine))
    settings = config.resolve("smoke", output_dir=tmp_path / "out", dataset="deepapl")
    assert settings.data_dir == bccd and datasets.locate(settings) == mine.resolve()


# ------------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def deepapl_root() -> Path:
    """The shared, downscaled DeepAPL (or $BLOODLIB_DEEPAPL); tests using it skip when it is absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deepapl"
    root = Path(os.environ.get(ENV_DEEPAPL) or default)
    if not (root / DEEPAPL_FOLDER).is_dir():
        pytest.skip(f"real DeepAPL data not found at {root} (set {ENV_DEEPAPL} or provide ../shared/data/deepapl)")
    return root


@pytest.fixture(scope="module")
def deepapl_cleaned(deepapl_root):
    """The whole shared DeepAPL cleaned once for the module (7,007 files read; indexed in the session's cache)."""
    return deepapl.clean_deepapl(deepapl_root, cleaning.CleaningParams(), progress=False)[0]


# the README's table minus what the cleaning drops: one truncated lymphocyte, 8 cells filed under two classes
KEPT = {"BASOPHIL": 52, "EOSINOPHIL": 108, "LYMPHOCYTE": 3427, "MONOCYTE": 1314, "NEUTROPHIL": 2089}
TRUNCATED = f"Patient_52/{SIGNED_SLIDES}/Lymphocyte/LY_8338724.jpg"


def test_real_layout(deepapl_root):
    counts = layout.verify_layout(deepapl_root, dataset="deepapl")
    assert {k: v for k, v in counts.items() if k != "root"} == {
        **{f"{DEEPAPL_FOLDER}/**/{SIGNED_SLIDES}/{c}": n for c, n in layout.DEEPAPL_COUNTS.items()},
        f"{DEEPAPL_FOLDER} patients": 106}
    assert sum(layout.DEEPAPL_COUNTS.values()) == len(fingerprint.dataset_files("deepapl", deepapl_root)) == 7007


def test_real_cleaning(deepapl_cleaned):
    m = deepapl_cleaned.manifest.set_index("file")
    assert len(m) == 7007 and m["patient"].nunique() == 106
    assert m.loc[TRUNCATED, "reason"] == "unreadable" and "truncated" in m.loc[TRUNCATED, "detail"]
    pairs = m[m["reason"] == "conflicting_duplicate"].groupby("sha256")["raw_label"].agg(["nunique", "size"])
    assert len(pairs) == 8 and (pairs["nunique"] == 2).all() and (pairs["size"] == 2).all()  # 8 cells, two classes each
    assert m["reason"].value_counts().drop("").to_dict() == {"conflicting_duplicate": 16, "unreadable": 1}
    kept = deepapl_cleaned.kept
    assert len(kept) == 7007 - 17 and kept["label"].value_counts().to_dict() == KEPT
    assert (kept["group"] == kept["patient"]).all() and kept["patient"].nunique() == 106
    table = deepapl_cleaned.table
    assert table.loc["files found", "total"] == 7007 and table.iloc[-1].drop("total").to_dict() == KEPT


def test_real_patients_never_straddle_a_split(deepapl_cleaned):
    kept = deepapl_cleaned.kept
    for folds in (4, 1):
        planned = splits.plan(kept["label"], kept["group"], folds=folds, seed=42)
        assert straddling(kept, planned) == [], folds
        for split in planned:  # every class is tested, on patients no model of that split trained on
            assert set(kept["label"].iloc[split.test]) == set(KEPT)


def test_real_smoke_run_reads_whole_patients(deepapl_root, deepapl_cleaned, tmp_path, monkeypatch):
    monkeypatch.delenv(config.ENV_DATA, raising=False)
    settings = config.resolve("smoke", data_dir=deepapl_root, output_dir=tmp_path / "out", dataset="deepapl")
    prepared = datasets.prepare(settings, progress=False)
    read = prepared.cleaning.manifest
    assert len(read) <= datasets.SMOKE_SUBSETS["deepapl"]
    whole = deepapl_cleaned.manifest.groupby("patient").size()
    assert (read.groupby("patient").size() == whole[read["patient"].unique()].sort_index()).all()
    per_class = prepared.data.rows.groupby("label")["patient"].nunique()
    assert set(per_class.index) == set(KEPT) and (per_class >= deepapl.SUBSET_PATIENTS_PER_CLASS).all()
    assert straddling(prepared.data.rows, prepared.splits) == []
    record = datasets.write_data_record(settings, datasets.locate(settings))
    fingerprinted = pd.read_csv(tmp_path / "out" / "data" / "data_manifest.csv")["path"]
    assert sorted(fingerprinted) == sorted(f"{DEEPAPL_FOLDER}/{f}" for f in read["file"])
    assert record["files"] == len(read) and record["layout"][f"{DEEPAPL_FOLDER} patients"] == 106
