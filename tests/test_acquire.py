"""Tests of bloodlib.data's acquire, layout, download and fingerprint: layout checks on the real data, downloads
against a local server only.

Nothing here reaches the internet: archives are served by a ThreadingHTTPServer on 127.0.0.1 and
``kagglehub`` is replaced by a fake module.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
import types
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from bloodlib.data import acquire, fingerprint, layout, sources
from bloodlib import config
from bloodlib.data.download import DownloadError, UnsafeArchiveError, download, safe_extract
from bloodlib.data.layout import DataLayoutError
from bloodlib.utils import paths
from conftest import LocalServer, zip_bytes


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared read-only copy of the real data; tests using it skip when it is absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared/data/bccd"
    root = Path(os.environ.get(config.ENV_DATA) or default)
    if not (root / "dataset-master").is_dir():
        pytest.skip(f"real data not found at {root} (set {config.ENV_DATA})")
    return root


@pytest.fixture(scope="session")
def real_dataset2() -> Path:
    """The shared data root holding dataset2-master (the kaggle-augmented dataset); skips when absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared/data/bccd"
    root = Path(os.environ.get(config.ENV_DATA) or default)
    if not (root / "dataset2-master" / "images").is_dir():
        pytest.skip(f"dataset2-master not found under {root} (set {config.ENV_DATA})")
    return root


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 120, 160)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def archives() -> dict[str, bytes]:
    """Tiny archives in the layout of the two GitHub sources, plus hostile ones."""
    jpg = _jpeg()
    labels = b",Image,Category\n,0,NEUTROPHIL\n,1,EOSINOPHIL\n,2,LYMPHOCYTE\n"
    cosmicad = {"dataset-master/README.md": b"readme", "dataset-master/labels.csv": labels}
    bccd = {"BCCD_Dataset-master/README.md": b"readme", "BCCD_Dataset-master/LICENSE": b"MIT",
            "BCCD_Dataset-master/scripts/split.py": b"print()",
            "BCCD_Dataset-master/BCCD/ImageSets/Main/test.txt": b"BloodImage_00000\n"}
    for i in range(3):
        cosmicad[f"dataset-master/JPEGImages/BloodImage_{i:05d}.jpg"] = jpg
        cosmicad[f"dataset-master/Annotations/BloodImage_{i:05d}.xml"] = b"<annotation/>"
        bccd[f"BCCD_Dataset-master/BCCD/JPEGImages/BloodImage_{i:05d}.jpg"] = jpg
        bccd[f"BCCD_Dataset-master/BCCD/Annotations/BloodImage_{i:05d}.xml"] = b"<annotation/>"
    return {
        "cosmicad.zip": zip_bytes(cosmicad),
        "bccd.zip": zip_bytes(bccd),
        "evil.zip": zip_bytes({"dataset-master/labels.csv": labels, "../evil.txt": b"escaped"}),
        "abs.zip": zip_bytes({"dataset-master/labels.csv": labels, "/bloodlib-test-abs.txt": b"escaped"}),
    }


class BccdServer(LocalServer):
    def urls(self, dataset_master: str = "cosmicad.zip", boxes: str = "bccd.zip") -> dict[str, str]:
        return {"dataset-master": self.url(dataset_master), "BCCD_Dataset": self.url(boxes)}


@pytest.fixture
def server(archives, serve):
    """The archives on 127.0.0.1; ``truncated.zip`` announces more bytes than it sends."""
    return serve(archives, {"truncated.zip": archives["cosmicad.zip"]}, kind=BccdServer)


@pytest.fixture
def no_local(monkeypatch):
    """Hide the shared data and BLOODLIB_DATA, so that ``auto`` goes on to the cache and downloads."""
    monkeypatch.delenv(config.ENV_DATA, raising=False)
    monkeypatch.setattr(acquire, "local_candidates", lambda name="bccd": [])


def fake_kagglehub(monkeypatch, result) -> list[str]:
    """Install a stand-in ``kagglehub``: ``result`` is a folder to return or an exception to raise."""
    calls: list[str] = []

    def dataset_download(handle, *args, **kwargs):
        calls.append(handle)
        if isinstance(result, BaseException):
            raise result
        return str(result)

    module = types.ModuleType("kagglehub")
    module.dataset_download = dataset_download
    monkeypatch.setitem(sys.modules, "kagglehub", module)
    return calls


def kaggle_tree(base: Path) -> Path:
    """A tiny copy of Kaggle's nested layout: dataset-master/dataset-master, dataset2-master/dataset2-master."""
    jpg = _jpeg()
    dm = base / "dataset-master" / "dataset-master"
    (dm / "JPEGImages").mkdir(parents=True)
    (dm / "Annotations").mkdir()
    (dm / "labels.csv").write_text(",Image,Category\n,0,NEUTROPHIL\n")
    for i in range(2):
        (dm / "JPEGImages" / f"BloodImage_{i:05d}.jpg").write_bytes(jpg)
    for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
        for cls in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
            folder = base / "dataset2-master" / "dataset2-master" / "images" / split / cls
            folder.mkdir(parents=True)
            (folder / "_0_1.jpeg").write_bytes(jpg)
    return base


def leftovers(folder: Path) -> list[str]:
    """Temporary names a failed or finished operation must not leave behind."""
    return [str(p) for p in folder.rglob("*") if ".part" in p.name or p.name.startswith((".tmp", "."))]


# ------------------------------------------------------------------------------------- real data
def test_real_layout_counts(real_data):
    summary = layout.verify_layout(real_data, require_boxes=True)
    assert summary["dataset-master/JPEGImages"] == 366
    assert summary["BCCD_Dataset/BCCD/Annotations"] == 364
    assert summary["BCCD_Dataset/BCCD/JPEGImages"] == 364
    assert summary["boxes"] is True
    assert not any(k.startswith("dataset2-master") for k in summary)  # bccd does not read it


def test_real_layout_counts_kaggle_augmented(real_dataset2):
    summary = layout.verify_layout(real_dataset2, dataset="kaggle-augmented")
    assert summary["dataset2-master/images/TRAIN/NEUTROPHIL"] == 2499
    assert summary["dataset2-master/images/TEST_SIMPLE/MONOCYTE"] == 4
    assert not any(k.startswith(("dataset-master", "BCCD_Dataset")) or k == "boxes" for k in summary)
    with pytest.raises(ValueError, match="require_boxes is for the bccd smears"):
        layout.verify_layout(real_dataset2, dataset="kaggle-augmented", require_boxes=True)


def test_find_data_uses_named_folder_as_is(real_data, monkeypatch, tmp_path):
    before = sorted(os.listdir(real_data))
    assert acquire.find_data(real_data, cache=tmp_path) == real_data.resolve()
    monkeypatch.setenv(config.ENV_DATA, str(real_data))
    assert acquire.find_data(cache=tmp_path, require_boxes=True) == real_data.resolve()
    assert sorted(os.listdir(real_data)) == before  # raw data is only read
    assert list(tmp_path.iterdir()) == []  # and nothing was cached or downloaded


def test_real_manifest(real_data, tmp_path):
    manifest = fingerprint.data_manifest(real_data, fingerprint.dataset_files("bccd", real_data))
    assert list(manifest.columns) == ["path", "bytes", "sha256"]
    assert manifest["path"].is_unique and manifest["path"].is_monotonic_increasing
    assert manifest["path"].str.startswith(("dataset-master/", "BCCD_Dataset/")).all()
    assert (manifest["path"].str.endswith(".jpg")).sum() == 366 + 364
    row = manifest.set_index("path").loc["dataset-master/labels.csv"]
    raw = (real_data / "dataset-master/labels.csv").read_bytes()
    assert row["bytes"] == len(raw) and row["sha256"] == hashlib.sha256(raw).hexdigest()

    checksum = fingerprint.manifest_checksum(manifest)
    assert checksum == fingerprint.manifest_checksum(manifest.sample(frac=1, random_state=0))  # order-free
    changed = manifest.copy()
    changed.loc[0, "sha256"] = "0" * 64
    assert fingerprint.manifest_checksum(changed) != checksum

    out = fingerprint.write_manifest(manifest, tmp_path / "run" / "data_manifest.csv")
    back = pd.read_csv(out)
    pd.testing.assert_frame_equal(back, manifest)
    assert fingerprint.manifest_checksum(back) == checksum
    assert sorted(p.name for p in out.parent.iterdir()) == ["data_manifest.csv"]


# ------------------------------------------------------------------------------------ wrong layout
def _dataset_master(root: Path, n_images: int = 3, jpeg_images: bool = True) -> Path:
    dm = root / "dataset-master"
    (dm / "Annotations").mkdir(parents=True)
    (dm / "labels.csv").write_text(",Image,Category\n")
    if jpeg_images:
        (dm / "JPEGImages").mkdir()
        for i in range(n_images):
            (dm / "JPEGImages" / f"BloodImage_{i:05d}.jpg").write_bytes(b"x")
    return dm


def test_missing_jpegimages_names_folder_expected_found(tmp_path):
    dm = _dataset_master(tmp_path, jpeg_images=False)
    with pytest.raises(DataLayoutError) as err:
        layout.verify_layout(tmp_path)
    msg = str(err.value)
    assert str(dm) in msg and "expected a folder JPEGImages/" in msg and "found Annotations/, labels.csv" in msg


def test_too_few_images(tmp_path):
    dm = _dataset_master(tmp_path, n_images=3)
    with pytest.raises(DataLayoutError, match=r"expected 366 \*\.jpg files, found 3") as err:
        layout.verify_layout(tmp_path)
    assert str(dm / "JPEGImages") in str(err.value)
    assert layout.verify_layout(tmp_path, strict_counts=False)["dataset-master/JPEGImages"] == 3


def test_missing_data_folder_and_dataset_master_itself(tmp_path):
    with pytest.raises(DataLayoutError, match="expected a folder dataset-master/, found an empty folder"):
        layout.verify_layout(tmp_path)
    dm = _dataset_master(tmp_path)
    with pytest.raises(DataLayoutError, match="pass its parent folder"):
        layout.verify_layout(dm, strict_counts=False)


def test_missing_boxes_said_clearly(tmp_path):
    _dataset_master(tmp_path)
    assert layout.verify_layout(tmp_path, strict_counts=False)["boxes"] is False
    with pytest.raises(DataLayoutError, match="BCCD_Dataset/.*crop mode"):
        layout.verify_layout(tmp_path, require_boxes=True, strict_counts=False)


def test_named_wrong_folder_never_downloads(tmp_path, server, monkeypatch):
    calls = fake_kagglehub(monkeypatch, tmp_path)
    _dataset_master(tmp_path / "mine", n_images=3)
    with pytest.raises(DataLayoutError, match="found 3"):
        acquire.find_data(tmp_path / "mine", cache=tmp_path / "cache", urls=server.urls())
    assert server.hits == [] and calls == [] and not (tmp_path / "cache").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        acquire.find_data(source="ftp")
    with pytest.raises(ValueError, match="data_dir names a local folder"):
        acquire.find_data(tmp_path, source="github")
    with pytest.raises(DataLayoutError):
        acquire.find_data(source="cache", cache=tmp_path / "empty")


# ------------------------------------------------------------------------------------------ download
def test_download_good(server, archives, tmp_path):
    body = archives["bccd.zip"]
    dest = download(server.url("bccd.zip"), tmp_path / "a.zip", progress=False,
                    expected_sha256=hashlib.sha256(body).hexdigest(), expected_size=len(body))
    assert dest.read_bytes() == body and leftovers(tmp_path) == []


@pytest.mark.parametrize("name, kwargs, problem", [
    ("truncated.zip", {}, "truncated|IncompleteRead|Connection broken"),
    ("missing.zip", {}, "HTTP 404"),
    ("bccd.zip", {"expected_sha256": "0" * 64}, "sha256"),
    ("bccd.zip", {"expected_size": 5}, "expected 5 bytes"),
])
def test_download_failure_leaves_nothing(server, tmp_path, name, kwargs, problem):
    old = tmp_path / "old.zip"
    old.write_bytes(b"previous good copy")
    with pytest.raises(DownloadError, match=problem) as err:
        download(server.url(name), old, progress=False, **kwargs)
    assert server.url(name) in str(err.value)
    assert old.read_bytes() == b"previous good copy"  # existing dest untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zip"]  # no half file
    with pytest.raises(DownloadError):
        download(server.url(name), tmp_path / "new.zip", progress=False, **kwargs)
    assert not (tmp_path / "new.zip").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------- archives
def test_safe_extract_good(archives, tmp_path):
    archive = tmp_path / "bccd.zip"
    archive.write_bytes(archives["bccd.zip"])
    out = safe_extract(archive, tmp_path / "out")
    assert len(list((out / "BCCD_Dataset-master/BCCD/JPEGImages").glob("*.jpg"))) == 3
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="not empty"):
        safe_extract(archive, out)


@pytest.mark.parametrize("name, member", [("evil.zip", "../evil.txt"),
                                          ("abs.zip", "/bloodlib-test-abs.txt")])
def test_safe_extract_refuses_escaping_members(archives, tmp_path, name, member):
    archive = tmp_path / name
    archive.write_bytes(archives[name])
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, target)
    assert isinstance(err.value, ValueError) and isinstance(err.value, DownloadError)
    assert str(archive) in str(err.value) and repr(member) in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []  # nothing extracted, not even the safe member
    assert not (tmp_path / "evil.txt").exists() and not Path("/bloodlib-test-abs.txt").exists()


def test_safe_extract_refuses_zip_symlink(tmp_path):
    archive = tmp_path / "links.zip"
    link = zipfile.ZipInfo("data/link")
    link.external_attr = (0o120777 << 16)  # a symlink's mode, as `zip --symlinks` stores it
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/inside.txt", b"fine")
        zf.writestr(link, "../../etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="'data/link'.*symlink member"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_safe_extract_refuses_tar(tmp_path):
    """Every source is a zip: anything else is refused, not extracted."""
    import tarfile

    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tf:
        tf.addfile(tarfile.TarInfo("data/empty.txt"))
    with pytest.raises(DownloadError, match="data.tar: not a zip archive"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_safe_extract_not_an_archive(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DownloadError, match="junk.zip"):
        safe_extract(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- find_data
def test_find_data_github_end_to_end_then_cached(server, tmp_path, no_local):
    cache = tmp_path / "cache"
    root = acquire.find_data(source="github", cache=cache, strict_counts=False, quiet=True,
                             urls=server.urls(), require_boxes=True)
    assert root == cache.resolve() and sorted(server.hits) == ["bccd.zip", "cosmicad.zip"]
    summary = layout.verify_layout(root, require_boxes=True, strict_counts=False)
    assert summary["dataset-master/JPEGImages"] == 3 and summary["BCCD_Dataset/BCCD/Annotations"] == 3
    # BCCD_Dataset-master/ normalised to BCCD_Dataset/ holding the data and its licence only
    assert sorted(p.name for p in (root / "BCCD_Dataset").iterdir()) == ["BCCD", "LICENSE"]
    assert set(acquire.read_sources(root)) == {"dataset-master", "BCCD_Dataset"}
    assert leftovers(cache) == []

    snapshot = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    for source in ("github", "auto", "cache"):
        again = acquire.find_data(source=source, cache=cache, strict_counts=False, urls=server.urls(),
                                  require_boxes=True)
        assert again == root
    assert len(server.hits) == 2  # no network the second time
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == snapshot  # and no copying


@pytest.mark.parametrize("failure", [ConnectionError("no network"), None])
def test_auto_falls_from_kaggle_to_github(server, tmp_path, monkeypatch, no_local, caplog, failure):
    if failure is None:  # kagglehub not installed at all
        monkeypatch.setitem(sys.modules, "kagglehub", None)
    else:
        fake_kagglehub(monkeypatch, failure)
    caplog.set_level(logging.WARNING, logger="bloodlib.data.acquire")
    root = acquire.find_data(cache=tmp_path / "cache", strict_counts=False, urls=server.urls())
    assert (root / "dataset-master" / "labels.csv").is_file() and (root / "BCCD_Dataset").is_dir()
    reason = "ConnectionError: no network" if failure else "ModuleNotFoundError"
    assert any("Kaggle not usable" in r.message and reason in r.message for r in caplog.records)


def test_kaggle_nested_layout(server, tmp_path, monkeypatch, no_local):
    calls = fake_kagglehub(monkeypatch, kaggle_tree(tmp_path / "kagglehub"))
    cache = tmp_path / "cache"
    root = acquire.find_data(source="kaggle", cache=cache, strict_counts=False, quiet=True,
                             urls=server.urls(), require_boxes=True)
    assert calls == [sources.KAGGLE_HANDLE] and server.hits == ["bccd.zip"]  # boxes from GitHub
    layout.verify_layout(root, require_boxes=True, strict_counts=False)
    # dataset2-master came with the Kaggle download: a kaggle-augmented run finds it in the cache
    summary = layout.verify_layout(root, dataset="kaggle-augmented", strict_counts=False)
    assert summary["dataset2-master/images/TEST/MONOCYTE"] == 1
    assert (root / "dataset-master/JPEGImages/BloodImage_00001.jpg").is_file()
    assert acquire.read_sources(root)["dataset-master"]["origin"] == f"kaggle:{sources.KAGGLE_HANDLE}"
    assert acquire.find_data(cache=cache, strict_counts=False, urls=server.urls()) == root
    assert calls == [sources.KAGGLE_HANDLE] and server.hits == ["bccd.zip"]  # second call: nothing


def test_kaggle_download_without_the_data(server, tmp_path, monkeypatch, no_local):
    (tmp_path / "kagglehub" / "something").mkdir(parents=True)
    fake_kagglehub(monkeypatch, tmp_path / "kagglehub")
    with pytest.raises(DownloadError, match="labels.csv and JPEGImages.*found something/"):
        acquire.find_data(source="kaggle", cache=tmp_path / "cache", urls=server.urls())
    assert server.hits == []


@pytest.mark.parametrize("bad", ["evil.zip", "abs.zip", "truncated.zip", "missing.zip"])
def test_find_data_bad_archive_leaves_cache_clean(server, tmp_path, no_local, bad):
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="could not assemble") as err:
        acquire.find_data(source="github", cache=cache, strict_counts=False, quiet=True,
                          urls=server.urls(dataset_master=bad))
    assert bad in str(err.value)
    assert not (cache / "dataset-master").exists() and leftovers(cache) == []
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()


# ------------------------------------------------------------------------ the data of each dataset
def _dataset2_only(root: Path) -> Path:
    """A data root holding dataset2-master alone (one file per class folder) and a hidden file it ignores."""
    jpg = _jpeg()
    for split in ("TRAIN", "TEST", "TEST_SIMPLE"):
        for cls in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
            folder = root / "dataset2-master" / "images" / split / cls
            folder.mkdir(parents=True)
            (folder / "_0_1.jpeg").write_bytes(jpg)
    (root / "dataset2-master" / ".DS_Store").write_bytes(b"finder")
    return root


def _settings(tmp_path: Path, dataset: str, data_dir: Path | None = None) -> config.Settings:
    return config.resolve(profile="smoke", data_dir=data_dir, output_dir=tmp_path / "out", dataset=dataset)


def test_kaggle_augmented_needs_and_fingerprints_dataset2_only(tmp_path, no_local):
    root = _dataset2_only(tmp_path / "data")
    assert acquire.find_data(root, dataset="kaggle-augmented", strict_counts=False) == root.resolve()
    files = fingerprint.dataset_files("kaggle-augmented", root)
    assert len(files) == 12 and all(f.startswith("dataset2-master/images/") for f in files)
    with pytest.raises(DataLayoutError, match="expected a folder dataset-master/"):
        acquire.find_data(root, strict_counts=False)  # bccd needs dataset-master, kaggle-augmented does not
    with pytest.raises(ValueError, match="require_boxes is for the bccd smears"):
        acquire.find_data(root, dataset="kaggle-augmented", require_boxes=True, strict_counts=False)

    _dataset_master(root)  # a data root holding more than the run reads: the rest stays out of the fingerprint
    assert fingerprint.dataset_files("kaggle-augmented", root) == files
    assert all(f.startswith("dataset-master/") for f in fingerprint.dataset_files("bccd", root))


def test_kaggle_augmented_download_from_kaggle_only(server, tmp_path, monkeypatch, no_local):
    calls = fake_kagglehub(monkeypatch, kaggle_tree(tmp_path / "kagglehub"))
    cache = tmp_path / "cache"
    root = acquire.find_data(dataset="kaggle-augmented", cache=cache, strict_counts=False, quiet=True,
                             urls=server.urls())
    assert calls == [sources.KAGGLE_HANDLE] and server.hits == []  # no WBC boxes fetched: this run has no use
    assert layout.verify_layout(root, dataset="kaggle-augmented", strict_counts=False)[
        "dataset2-master/images/TRAIN/EOSINOPHIL"] == 1
    assert set(acquire.read_sources(root, "kaggle-augmented")) == {"dataset2-master"}
    assert acquire.find_data(dataset="kaggle-augmented", cache=cache, strict_counts=False) == root
    assert calls == [sources.KAGGLE_HANDLE]  # second call: the cache


def test_kaggle_augmented_is_not_on_github(server, tmp_path, no_local):
    with pytest.raises(DownloadError, match="dataset2-master: only the Kaggle download"):
        acquire.find_data(dataset="kaggle-augmented", source="github", cache=tmp_path / "cache",
                          strict_counts=False, quiet=True, urls=server.urls())
    assert server.hits == []


def test_real_record_per_dataset(real_data, real_dataset2, tmp_path):
    """bccd fingerprints dataset-master and BCCD_Dataset, kaggle-augmented dataset2-master and nothing else."""
    from bloodlib.data import datasets

    records = {}
    for dataset in ("bccd", "kaggle-augmented"):
        settings = _settings(tmp_path / dataset, dataset, real_data)
        root = datasets.locate(settings)
        records[dataset] = record = datasets.write_data_record(settings, root)
        manifest = pd.read_csv(settings.output_dir / "data" / "data_manifest.csv")
        assert record["dataset"] == dataset and record["root"] == shown(real_data)
        assert record["files"] == len(manifest) and record["checksum"] == fingerprint.manifest_checksum(manifest)
        parts = manifest["path"].str.split("/").str[0].unique()
        if dataset == "bccd":
            assert sorted(parts) == ["BCCD_Dataset", "dataset-master"]
            assert (manifest["path"].str.endswith(".jpg")).sum() == 366 + 364
        else:
            assert list(parts) == ["dataset2-master"] and len(manifest) == 9957 + 2487 + 71
            assert not any(k.startswith(("dataset-master", "BCCD_Dataset")) for k in record["layout"])
    assert records["bccd"]["checksum"] != records["kaggle-augmented"]["checksum"]


def _class_folder(root: Path) -> Path:
    """A folder-per-class tree: 3 + 2 images (one nested, one hidden), and a loose file the run never reads."""
    jpg = _jpeg()
    for label, names in {"basophil": ["a.jpg", "b.jpg", "deeper/c.jpg"], "monocyte": ["d.jpg", ".e.jpg"]}.items():
        for name in names:
            (root / label / name).parent.mkdir(parents=True, exist_ok=True)
            (root / label / name).write_bytes(jpg + name.encode())
    (root / "README.txt").write_text("not a class")
    return root


def test_folder_dataset_needs_no_bccd(tmp_path, no_local):
    folder = _class_folder(tmp_path / "cells")
    # data_dir points at no data at all: a folder run never looks there
    settings = _settings(tmp_path, f"folder:{folder}", data_dir=tmp_path / "no-bccd-here")
    from bloodlib.data import datasets

    root = datasets.locate(settings)
    assert root == folder.resolve()
    record = datasets.write_data_record(settings, root)
    manifest = pd.read_csv(settings.output_dir / "data" / "data_manifest.csv")
    assert list(manifest["path"]) == ["basophil/a.jpg", "basophil/b.jpg", "basophil/deeper/c.jpg",
                                      "monocyte/.e.jpg", "monocyte/d.jpg"]
    assert record["files"] == 5 and record["sources"] == "local folder"
    assert record["layout"] == {"root": shown(folder), "basophil/": 3, "monocyte/": 2}
    raw = (folder / "basophil/a.jpg").read_bytes()
    assert manifest.set_index("path").loc["basophil/a.jpg", "sha256"] == hashlib.sha256(raw).hexdigest()

    (folder / "monocyte/d.jpg").write_bytes(b"changed")
    assert datasets.write_data_record(settings, root)["checksum"] != record["checksum"]
    with pytest.raises(ValueError, match="source='github' downloads the Kaggle data"):
        datasets.locate(settings, "github")
    with pytest.raises(ValueError, match="not the data root"):
        layout.verify_layout(tmp_path, dataset=f"folder:{folder}")
    with pytest.raises(ValueError, match="own_root"):
        acquire.find_data(dataset=f"folder:{folder}")
    with pytest.raises(FileNotFoundError, match="missing: dataset folder not found"):
        acquire.own_root(f"folder:{tmp_path / 'missing'}")


def test_csv_dataset_fingerprints_the_list_and_its_files(tmp_path, no_local):
    folder = _class_folder(tmp_path / "cells")
    lists = tmp_path / "lists"
    lists.mkdir()
    csv = lists / "train.csv"
    csv.write_text("path,label\n../cells/basophil/a.jpg,basophil\n"
                   f"{folder / 'monocyte/d.jpg'},monocyte\n../cells/gone.jpg,monocyte\n")
    dataset = f"csv:{csv}"
    from bloodlib.data import datasets

    settings = _settings(tmp_path, dataset, data_dir=tmp_path / "no-bccd-here")
    root = datasets.locate(settings)
    assert root == tmp_path.resolve()  # holds the list and every listed file
    record = datasets.write_data_record(settings, root)
    manifest = pd.read_csv(settings.output_dir / "data" / "data_manifest.csv")
    # the list itself and the files it names that exist; nothing else of cells/ (b.jpg, README.txt)
    assert list(manifest["path"]) == ["cells/basophil/a.jpg", "cells/monocyte/d.jpg", "lists/train.csv"]
    assert record["layout"] == {"root": shown(tmp_path), "rows": 3, "label basophil": 1,
                                "label monocyte": 2, "listed files found": 2, "listed files missing": 1}

    csv.write_text("file,class\na.jpg,basophil\n")
    with pytest.raises(ValueError, match=f"{csv}: expected columns 'path,label'"):
        acquire.own_root(dataset)
    csv.write_text("path,label\nnowhere/a.jpg,basophil\n")
    with pytest.raises(DataLayoutError, match=f"{csv}: none of the 1 listed files exists"):
        acquire.own_root(dataset)


def shown(folder: Path) -> str:
    """A data root as the data record names it: no absolute path of this machine (bloodlib.utils.paths)."""
    return paths.portable(Path(folder).resolve(), config.project_root())
