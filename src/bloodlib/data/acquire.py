"""Find, download, verify and fingerprint the data of a run, whichever dataset it uses.

The datasets ``bccd`` and ``kaggle-augmented`` read parts of one *data root* ``R`` in the Kaggle layout::

    R/dataset-master/{JPEGImages/*.jpg, Annotations/*.xml, labels.csv}   bccd: images and WBC labels
    R/BCCD_Dataset/BCCD/{JPEGImages, Annotations, ImageSets}              bccd: WBC boxes (needed by crop mode)
    R/dataset2-master/images/{TRAIN,TEST,TEST_SIMPLE}/<4 classes>/*.jpeg  kaggle-augmented (Kaggle only)

The dataset ``pbc`` (the PBC atlas, Acevedo et al. 2020) has a data root of its own, ``P``::

    P/PBC_dataset_normal_DIB/<8 classes>/*.jpg                              pbc: one folder per class

:func:`find_data` tries, in order (unless ``source`` names one): a local folder (``data_dir``, the
``BLOODLIB_DATA`` environment variable (pbc: ``BLOODLIB_PBC``), or ``../shared/data/bccd`` (pbc:
``../shared/data/pbc``) beside the checkout), the project's cache (``config.cache_dir()/"bccd"``, pbc:
``.../"pbc"``), the publisher (Kaggle through ``kagglehub``; pbc: the Mendeley Data record), and the public
GitHub archives. Downloads are assembled into the cache in the same layout, each part renamed into place only
after it verifies, so a second call finds the cache and does no network and no copying. A user's own data
(``folder:/path``, ``csv:/path/list.csv``) is read where it is (:func:`own_root`), never copied. For every
dataset :func:`dataset_files` lists the files a run reads and :func:`data_manifest` fingerprints them
(path, bytes, sha256).
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from bloodlib import config
from bloodlib.utils import fileio

log = logging.getLogger(__name__)

KAGGLE_HANDLE = "paultimothymooney/blood-cells"
PBC_FOLDER = "PBC_dataset_normal_DIB"
ENV_PBC = "BLOODLIB_PBC"  # names a folder holding PBC_dataset_normal_DIB/ ($BLOODLIB_DATA names the Kaggle layout)
# The public GitHub copies: images + labels (cosmicad), the VOC files holding the WBC boxes (BCCD_Dataset), and a
# repository holding the PBC folder as published (the archive of its default branch).
GITHUB_URLS: dict[str, str] = {
    "dataset-master": "https://github.com/cosmicad/dataset/archive/refs/heads/master.zip",
    "BCCD_Dataset": "https://github.com/Shenggan/BCCD_Dataset/archive/refs/heads/master.zip",
    PBC_FOLDER: "https://github.com/AuralinACC/Blood-Cell-Classification/archive/HEAD.zip",
}
# PBC's publisher (Acevedo et al., Data in Brief 30 (2020) 105474; CC BY 4.0): the Mendeley Data record
# doi:10.17632/snkd93bnjr.1 holds one file, PBC_dataset_normal_DIB.zip, public at this download URL (its file id).
MENDELEY_URLS: dict[str, str] = {
    PBC_FOLDER: "https://data.mendeley.com/public-files/datasets/snkd93bnjr/files/"
                "2fc38728-2ae7-4a62-a857-032af82334c3/file_downloaded",
}
SOURCES = ("auto", "local", "cache", "kaggle", "mendeley", "github")
SOURCES_FILE = "SOURCES.json"  # written into the cache only: where each part came from

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

# The known layout: subset -> {relative path: (glob, count)}; (None, None) marks a file that must exist.
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
# The parts of its data root each dataset reads: (required, read when present). Crop mode on bccd requires
# BCCD_Dataset too (its WBC boxes); the other datasets find the WBC by its stain.
PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bccd": (("dataset-master",), ("BCCD_Dataset",)),
    "kaggle-augmented": (("dataset2-master",), ()),
    "pbc": ((PBC_FOLDER,), ()),
}
KAGGLE_PARTS = ("dataset-master", "dataset2-master")  # what the Kaggle download holds
# Each dataset's data root: the variable naming a local one, and its folder in ../shared/data and in the cache.
HOMES: dict[str, tuple[str, str]] = {"bccd": (config.ENV_DATA, "bccd"), "kaggle-augmented": (config.ENV_DATA, "bccd"),
                                     "pbc": (ENV_PBC, "pbc")}


class DataLayoutError(ValueError):
    """A data folder does not hold the expected layout; the message names folder, expected and found."""


class DownloadError(RuntimeError):
    """A download or an archive failed; the message names the URL or archive and the problem."""


class UnsafeArchiveError(DownloadError, ValueError):
    """An archive member would land outside the target folder (absolute path, ``..``, link)."""


# --------------------------------------------------------------------------------------------- layout
def _count(folder: Path, pattern: str) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
               and fnmatch.fnmatchcase(p.name, pattern))


def _listing(folder: Path, limit: int = 8) -> str:
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


def _subset_problems(root: Path, subset: str, strict_counts: bool) -> tuple[list[str], dict[str, int]]:
    """Problems (one line each) and file counts of ``root/subset`` against :data:`EXPECTED`."""
    problems: list[str] = []
    counts: dict[str, int] = {}
    base = root / subset
    if not base.is_dir():
        return [f"{root}: expected a folder {subset}/, found {_listing(root)}"], counts
    for rel, (pattern, n) in EXPECTED[subset].items():
        path = base / rel
        if pattern is None:
            if not path.is_file():
                problems.append(f"{base}: expected the file {rel}, found {_listing(path.parent)}")
            continue
        if not path.is_dir():
            problems.append(f"{path.parent}: expected a folder {path.name}/ of {n} {pattern} files, "
                            f"found {_listing(path.parent)}")
            continue
        found = counts[f"{subset}/{rel}"] = _count(path, pattern)
        if strict_counts and found != n:
            problems.append(f"{path}: expected {n} {pattern} files, found {found}")
        elif found == 0:
            problems.append(f"{path}: expected {pattern} files, found none ({_listing(path)})")
    for rel, pattern in _OPTIONAL_COUNTS.items():
        if rel.startswith(subset + "/") and (root / rel).is_dir():
            counts[rel] = _count(root / rel, pattern)
    return problems, counts


def _kind(dataset: str) -> str:
    from bloodlib.data import folders  # lazy: it pulls in the image stack (torchvision)

    return folders.parse_dataset(dataset)[0]


def _parts(kind: str, require_boxes: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The parts a run on ``kind`` reads: (required, read when present)."""
    if require_boxes and kind != "bccd":
        raise ValueError(f"require_boxes is for the bccd smears; {kind} finds the WBC by its stain")
    required, optional = PARTS[kind]
    if require_boxes:
        required, optional = required + ("BCCD_Dataset",), tuple(p for p in optional if p != "BCCD_Dataset")
    return required, optional


def verify_layout(root: str | os.PathLike, *, dataset: str = "bccd", require_boxes: bool = False,
                  strict_counts: bool = True) -> dict:
    """Check what a run on ``dataset`` reads in ``root`` and return its file counts.

    ``bccd``: ``dataset-master``, and ``BCCD_Dataset`` when present (required with ``require_boxes``);
    ``kaggle-augmented``: ``dataset2-master``; ``pbc``: ``PBC_dataset_normal_DIB`` with its 8 class folders
    (:data:`PBC_COUNTS`; a missing one is named); all against :data:`EXPECTED`, ``strict_counts=False`` only
    asking for non-empty folders (synthetic test data). ``folder:``/``csv:``: ``root`` must be
    :func:`own_root`'s; the counts are files per class folder, or the list's rows per label and how many
    listed files exist. Raises :class:`DataLayoutError` listing every problem. Reads only.
    """
    root = Path(root).expanduser()
    kind = _kind(dataset)
    if kind not in PARTS:
        own, _, counts = _own_data(dataset)
        if root.resolve() != own:
            raise ValueError(f"{root}: not the data root of {dataset!r}, which is {own}")
        return {"root": str(own), **counts}
    required, optional = _parts(kind, require_boxes)
    if not root.is_dir():
        raise DataLayoutError(f"{root}: expected a data folder holding {' and '.join(p + '/' for p in required)}, "
                              f"found {_listing(root)}")
    problems: list[str] = []
    counts: dict[str, int] = {}
    for subset in required + tuple(p for p in optional if (root / p).exists()):
        p, c = _subset_problems(root, subset, strict_counts)
        if p and all((root / rel).exists() for rel in EXPECTED[subset]):
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


# ------------------------------------------------------------------------------------------ download
def download(url: str, dest: str | os.PathLike, *, expected_sha256: str | None = None,
             expected_size: int | None = None, timeout: float = 60, progress: bool = True) -> Path:
    """Stream ``url`` to ``dest`` through a temporary file renamed only once it checks out.

    The size is checked against ``Content-Length`` (and ``expected_size``), the hash against
    ``expected_sha256``. On any failure the temporary file is removed, ``dest`` is left as it was, and
    :class:`DownloadError` names the URL and the problem.
    """
    import requests
    from bloodlib.utils.progress import progress_bar

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        written, announced = 0, None
        # identity encoding: Content-Length then counts the bytes we store
        with os.fdopen(fd, "wb") as out, requests.get(
                url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}) as resp:
            if resp.status_code != 200:
                raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}")
            length = resp.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            with progress_bar(total=announced, unit="B", unit_scale=True, desc=dest.name,
                              disable=not progress, leave=False) as bar:
                for chunk in resp.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        if announced is not None and written != announced:
            raise DownloadError(f"{url}: truncated, got {written} of {announced} bytes")
        if expected_size is not None and written != expected_size:
            raise DownloadError(f"{url}: expected {expected_size} bytes, got {written}")
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
            raise DownloadError(f"{url}: sha256 {digest.hexdigest()} does not match the expected "
                                f"{expected_sha256}")
        os.replace(tmp, dest)
        return dest
    except DownloadError:
        tmp.unlink(missing_ok=True)
        raise
    except (requests.RequestException, OSError) as exc:
        tmp.unlink(missing_ok=True)
        got = f"{written} of {announced}" if announced is not None else f"{written}"
        raise DownloadError(f"{url}: download failed after {got} bytes "
                            f"({type(exc).__name__}: {exc})") from exc
    except BaseException:  # KeyboardInterrupt included: never leave a half file behind
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------- archives
def _unsafe_reason(name: str) -> str | None:
    """Why a member name would escape the target folder, or None when it is safe."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "'..' component"
    return None


def _check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        reason = _unsafe_reason(info.filename)
        # zipfile would write a link as a plain file holding its target: refuse links outright
        if reason is None and stat.S_ISLNK(info.external_attr >> 16):
            reason = "symlink member"
        if reason:
            raise UnsafeArchiveError(f"{archive}: refusing member {info.filename!r} ({reason})")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a zip archive (every source the project downloads is one) into ``target``, which must not
    exist yet (or be empty).

    Every member is checked before anything is written: absolute paths, ``..`` and links raise
    :class:`UnsafeArchiveError` naming the archive and the member. Extraction goes to a temporary folder
    beside ``target`` that is renamed at the end, so a failure leaves nothing.
    """
    archive, target = Path(archive), Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target}: extraction target already exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    try:
        if not zipfile.is_zipfile(archive):
            raise DownloadError(f"{archive}: not a zip archive (truncated download?)")
        with zipfile.ZipFile(archive) as zf:
            _check_zip(zf, archive)
            zf.extractall(tmp)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(tmp, target)
        return target
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------- sources
def local_candidates(name: str = "bccd") -> list[Path]:
    """Local data folders tried in ``auto`` mode: ``../shared/data/<name>`` beside the checkout (:data:`HOMES`)."""
    checkouts = [config.project_root(), Path(__file__).resolve().parents[2]]
    found: list[Path] = []
    for repo in checkouts:
        cand = repo.parent / "shared" / "data" / name
        if (repo / "pyproject.toml").is_file() and cand.is_dir() and cand not in found:
            found.append(cand)
    return found


def _find_dir(base: Path, wanted: Callable[[Path], bool], max_depth: int = 4) -> Path | None:
    """The shallowest folder under ``base`` (included) that ``wanted`` accepts; nesting varies."""
    level = [base]
    for _ in range(max_depth + 1):
        for d in level:
            if wanted(d):
                return d
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
    return None


def _is_dataset_master(d: Path) -> bool:
    return (d / "JPEGImages").is_dir() and (d / "labels.csv").is_file()


def _is_bccd_repo(d: Path) -> bool:
    return (d / "BCCD" / "Annotations").is_dir()


def _is_dataset2(d: Path) -> bool:
    return (d / "images" / "TRAIN").is_dir()


def _is_pbc(d: Path) -> bool:
    """The PBC folder, by its name or its class folders (never macOS's ``__MACOSX`` shadow of it)."""
    return "__MACOSX" not in d.parts and (d.name == PBC_FOLDER or all((d / c).is_dir() for c in PBC_COUNTS))


# How each part is recognised inside a download, however deep it is nested: (test, what the test looks for).
_FINDERS: dict[str, tuple[Callable[[Path], bool], str]] = {
    "dataset-master": (_is_dataset_master, "a folder holding labels.csv and JPEGImages/"),
    "BCCD_Dataset": (_is_bccd_repo, "a folder holding BCCD/Annotations/"),
    "dataset2-master": (_is_dataset2, "a folder holding images/TRAIN/"),
    PBC_FOLDER: (_is_pbc, f"a folder {PBC_FOLDER}/ of class folders ({', '.join(PBC_COUNTS)})"),
}


def _record_source(cache: Path, subset: str, origin: str) -> None:
    """Note in the cache where a part came from (provenance for the run record)."""
    path = cache / SOURCES_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record[subset] = {"origin": origin,
                      "fetched": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    fileio.write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _install(stage_root: Path, subset: str, cache: Path, strict_counts: bool, origin: str) -> None:
    """Verify ``stage_root/subset`` and rename it to ``cache/subset``: the cache only holds verified parts."""
    problems, _ = _subset_problems(stage_root, subset, strict_counts)
    if problems:
        raise DataLayoutError(f"{origin} gave a wrong {subset} layout:\n  " + "\n  ".join(problems))
    dest = cache / subset
    try:
        os.replace(stage_root / subset, dest)
    except OSError:
        if not dest.is_dir():  # else another process installed it first: keep theirs
            raise
    _record_source(cache, subset, origin)
    log.info("installed %s from %s into %s", subset, origin, dest)


def _stage_copy(src: Path, subset: str, work: Path) -> Path:
    stage = work / "stage"
    shutil.copytree(src, stage / subset, ignore=shutil.ignore_patterns(".*"))
    return stage


def _from_kaggle(cache: Path, wanted: tuple[str, ...], strict_counts: bool, handle: str = KAGGLE_HANDLE) -> None:
    """The parts of the Kaggle download, copied out of kagglehub's own cache: each of ``wanted`` or an error;
    the others (dataset-master, dataset2-master) too when they verify, for a later run on another dataset."""
    try:
        import kagglehub  # lazy: slow to import, and only needed here
        base = Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # no network, no package, API change: the caller falls through
        raise DownloadError(f"kaggle {handle}: {type(exc).__name__}: {exc}") from exc
    found = {subset: _find_dir(base, _FINDERS[subset][0]) for subset in KAGGLE_PARTS}
    for subset in wanted:
        if found[subset] is None:
            raise DataLayoutError(f"{base}: expected {_FINDERS[subset][1]} in the Kaggle download of {handle}, "
                                  f"found {_listing(base)}")
    for subset, src in found.items():
        if src is None or (cache / subset).exists():
            continue
        try:
            with tempfile.TemporaryDirectory(dir=cache, prefix=".tmp-") as work:
                _install(_stage_copy(src, subset, Path(work)), subset, cache, strict_counts,
                         f"kaggle:{handle}")
        except DataLayoutError as exc:
            if subset in wanted:
                raise
            log.warning("%s from Kaggle skipped: %s", subset, exc)  # this run does not read it


def _from_archive(subset: str, url: str, cache: Path, strict_counts: bool, progress: bool) -> None:
    """One zip archive (GitHub, Mendeley Data): download, extract safely, normalise to the layout, install."""
    with tempfile.TemporaryDirectory(dir=cache, prefix=".tmp-") as work_name:
        work = Path(work_name)
        archive = download(url, work / f"{subset}.archive", progress=progress)
        try:
            extracted = safe_extract(archive, work / "x")
        except DownloadError as exc:  # name the URL, not the temporary file
            raise type(exc)(f"{url}: {exc}") from exc
        archive.unlink()
        wanted, what = _FINDERS[subset]
        src = _find_dir(extracted, wanted)
        if src is None:
            raise DataLayoutError(f"{url}: expected {what} in the archive, found {_listing(extracted)}")
        stage = work / "stage" / subset
        stage.parent.mkdir()
        if subset == "BCCD_Dataset":  # keep the data and its licence, not the repo's scripts
            stage.mkdir()
            for name in ("BCCD", "LICENSE"):
                if (src / name).exists():
                    os.replace(src / name, stage / name)
        else:
            os.replace(src, stage)
        _install(stage.parent, subset, cache, strict_counts, url)


def read_sources(root: str | os.PathLike, dataset: str = "bccd") -> dict:
    """Where each part of a cached data root that ``dataset`` reads came from (empty for a user's own data)."""
    kind = _kind(dataset)
    if kind not in PARTS:
        return {}
    try:
        record = json.loads((Path(root) / SOURCES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {part: origin for part, origin in record.items() if part in PARTS[kind][0] + PARTS[kind][1]}


def _own_data(dataset: str) -> tuple[Path, list[Path], dict[str, int]]:
    """A user's own ``folder:``/``csv:`` dataset: the folder holding every file a run reads, those files
    (for a list: the CSV, then each listed file that exists) and their counts."""
    from bloodlib.data import folders  # lazy: it pulls in the image stack (torchvision)

    kind, path = folders.parse_dataset(dataset)
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


def own_root(dataset: str) -> Path:
    """The folder holding a user's own dataset (``folder:/path``: that folder; ``csv:/path/list.csv``: the
    folder holding the CSV and every file it lists), checked. Only ever read: nothing is copied or cached."""
    return _own_data(dataset)[0]


def find_data(data_dir: str | os.PathLike | None = None, *, dataset: str = "bccd", source: str = "auto",
              cache: str | os.PathLike | None = None, require_boxes: bool = False,
              quiet: bool = False, strict_counts: bool = True, urls: Mapping[str, str] | None = None,
              mendeley_urls: Mapping[str, str] | None = None, kaggle_handle: str = KAGGLE_HANDLE) -> Path:
    """Return a data root holding the parts ``dataset`` reads (:data:`PARTS`), verified, downloading into
    the cache only when nothing usable exists.

    ``dataset`` is ``"bccd"``, ``"kaggle-augmented"`` or ``"pbc"`` (a user's own folder or list:
    :func:`own_root`); ``source`` is one of :data:`SOURCES`. A folder the user names (``data_dir``, else the
    variable of :data:`HOMES`: ``BLOODLIB_DATA``, for pbc ``BLOODLIB_PBC``) is used as it is or refused with
    :class:`DataLayoutError`, never replaced by a download. Downloads land in ``cache`` (default
    ``config.cache_dir()/"bccd"``, for pbc ``.../"pbc"``): the publisher first (Kaggle; for pbc Mendeley Data),
    then GitHub, which also gives what no publisher has whichever source is named (the WBC boxes of bccd);
    dataset2-master is only on Kaggle. ``urls`` overrides :data:`GITHUB_URLS`, ``mendeley_urls``
    :data:`MENDELEY_URLS` (tests point them at 127.0.0.1); ``strict_counts=False`` accepts any non-empty
    folders (tiny synthetic archives). Any image size passes: only folders and file counts are checked.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    kind = _kind(dataset)
    if kind not in PARTS:
        raise ValueError(f"find_data finds the datasets {sorted(PARTS)}; {dataset!r} is a user's own data, read "
                         f"where it is (own_root)")
    required, optional = _parts(kind, require_boxes)
    check = dict(dataset=kind, require_boxes=require_boxes, strict_counts=strict_counts)
    say = log.info if quiet else log.warning  # fall-through reasons
    urls = {**GITHUB_URLS, **(urls or {})}
    mendeley_urls = {**MENDELEY_URLS, **(mendeley_urls or {})}
    env, home = HOMES[kind]

    # 1. a folder the user named: use it as it is, or stop
    if data_dir is not None and source not in ("auto", "local"):
        raise ValueError(f"data_dir names a local folder; source={source!r} downloads: pass one of them")
    named = data_dir
    if named is None and source in ("auto", "local"):
        named = os.environ.get(env) or None
    if named is not None:
        return _checked(Path(named).expanduser(), check, say, urls)

    # 2. a local copy beside the checkout
    if source in ("auto", "local"):
        tried = []
        for cand in local_candidates(home):
            try:
                return _checked(cand, check, say, urls)
            except DataLayoutError as exc:
                tried.append(str(exc))
                say("local data %s not usable: %s", cand, exc)
        if source == "local":
            raise DataLayoutError(f"no local data folder: set {env} or pass data_dir"
                                  + ("; tried:\n" + "\n".join(tried) if tried else ""))

    # 3. the cache: a part that is there was verified on the way in, so return at once
    cache = Path(cache).expanduser() if cache is not None else config.cache_dir() / home
    if all((cache / part).is_dir() for part in required) or source == "cache":
        # a damaged cache says so instead of being overwritten
        return _checked(cache, check, say, urls)

    # 4./5. downloads into the cache, part by part: the publisher, then GitHub
    offers = {"kaggle": KAGGLE_PARTS, "mendeley": tuple(mendeley_urls), "github": tuple(urls)}

    def tries(origin: str, part: str) -> bool:
        """Whether this call fetches ``part`` from ``origin``: any origin with auto, else the one named; GitHub
        also gives what no publisher has (the WBC boxes, with source="kaggle")."""
        published = any(part in offers[o] for o in ("kaggle", "mendeley"))
        return part in offers[origin] and (source in ("auto", origin) or origin == "github" and not published)

    def wanted(origin: str) -> list[str]:
        return [part for part in required + optional if tries(origin, part) and not (cache / part).is_dir()]

    cache.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    from_kaggle = tuple(part for part in wanted("kaggle") if part in required)
    if from_kaggle:
        try:
            _from_kaggle(cache, from_kaggle, strict_counts, kaggle_handle)
        except (DownloadError, DataLayoutError, OSError) as exc:
            failures.append(str(exc))
            if source == "kaggle":
                raise DownloadError(f"could not get the data from Kaggle into {cache}: {exc}") from exc
            say("Kaggle not usable, trying GitHub: %s", exc)
    for origin, table in (("mendeley", mendeley_urls), ("github", urls)):
        for subset in wanted(origin):
            try:
                _from_archive(subset, table[subset], cache, strict_counts, progress=not quiet)
            except (DownloadError, DataLayoutError, OSError) as exc:
                failures.append(str(exc))
                say("%s copy of %s not usable: %s", origin, subset, exc)

    missing = [part for part in required if not (cache / part).is_dir()]
    if missing:
        names = {"kaggle": f"the Kaggle download {kaggle_handle}", "mendeley": "Mendeley Data", "github": "GitHub"}
        failures += [f"{part}: only {' or '.join(names[o] for o in offers if part in offers[o])} has it, and "
                     f"source={source!r} does not try it"
                     for part in missing if not any(tries(o, part) for o in offers)]
        raise DownloadError(f"could not assemble {', '.join(missing)} in {cache} (source={source!r}):\n  "
                            + "\n  ".join(failures or ["nothing was tried"]))
    return _checked(cache, check, say, urls)


def _checked(root: Path, check: dict, say: Callable[..., None], urls: Mapping[str, str]) -> Path:
    """Verify a data root, and say clearly when crop mode on bccd will lack its WBC boxes."""
    layout = verify_layout(root, **check)
    if check["dataset"] == "bccd" and not layout["boxes"]:
        say("no WBC boxes (BCCD_Dataset/BCCD) in %s: crop mode needs them; "
            "find_data(source='github', require_boxes=True) fetches them from %s",
            root, urls["BCCD_Dataset"])
    return root.resolve()


# ------------------------------------------------------------------------------------------ manifest
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_files(dataset: str, root: str | os.PathLike, *, max_images: int | None = None,
                  seed: int = 0) -> list[str]:
    """Every file a run on ``dataset`` reads, as posix paths relative to ``root`` (what :func:`find_data` or
    :func:`own_root` gave), in name order.

    bccd and kaggle-augmented: every file of their :data:`PARTS` present in ``root`` (hidden files ignored);
    pbc: every file under its class folders, hidden ones too (the cleaning reads and reports them), or the
    subset of ``max_images`` a smoke run cleans (:func:`bloodlib.folders.subset_files`, ``seed``);
    ``folder:``: every file under its class folders; ``csv:``: the CSV and each listed file that exists.
    """
    root = Path(root).resolve()
    kind = _kind(dataset)
    if max_images is not None and kind != "pbc":
        raise ValueError(f"max_images takes a subset of pbc, not of {dataset!r}")
    if kind == "pbc":
        from bloodlib.data import folders  # lazy: it pulls in the image stack (torchvision)

        listed = folders.folder_files(root / PBC_FOLDER)
        listed = folders.subset_files(listed, max_images, seed, str(root / PBC_FOLDER))
        return sorted(f"{PBC_FOLDER}/{file}" for file in listed["file"])
    if kind not in PARTS:
        files = _own_data(dataset)[1]
        outside = [f for f in files if not f.is_relative_to(root)]
        if outside:
            raise ValueError(f"{outside[0]}: a file of {dataset!r} outside the data root {root}")
        return sorted(f.relative_to(root).as_posix() for f in files)
    files = []
    for part in PARTS[kind][0] + PARTS[kind][1]:
        if not (root / part).is_dir():
            log.info("manifest: %s has no %s, skipped", root, part)
            continue
        for dirpath, dirnames, filenames in os.walk(root / part):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files += [(Path(dirpath) / name).relative_to(root).as_posix()
                      for name in filenames if not name.startswith(".")]
    return sorted(files)


def data_manifest(root: str | os.PathLike, files: Iterable[str]) -> pd.DataFrame:
    """The fingerprint of ``files`` (posix paths relative to ``root``, see :func:`dataset_files`): path, bytes
    and sha256 of each, in path order."""
    root = Path(root)
    rows = [(f, (root / f).stat().st_size, _sha256(root / f)) for f in files]
    frame = pd.DataFrame(rows, columns=["path", "bytes", "sha256"]).astype({"bytes": "int64"})
    return frame.sort_values("path", ignore_index=True)


def manifest_checksum(manifest: pd.DataFrame) -> str:
    """One id for the data a run used: sha256 over sorted ``"path bytes sha256"`` lines."""
    digest = hashlib.sha256()
    for path, size, sha in sorted(zip(manifest["path"], manifest["bytes"], manifest["sha256"])):
        digest.update(f"{path} {int(size)} {sha}\n".encode())
    return digest.hexdigest()


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the manifest as CSV through a temporary name, so a reader never sees half a file."""
    return fileio.write_csv(path, manifest)
