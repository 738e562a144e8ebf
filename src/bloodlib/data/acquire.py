"""Find the data of a run, whichever dataset it uses, downloading it into the cache only when nothing usable exists.

The datasets, their data roots and the parts each reads are named in :mod:`bloodlib.data.sources`.
:func:`find_data` tries, in order (unless ``source`` names one): a local folder (``data_dir``, the
``BLOODLIB_DATA`` environment variable (pbc: ``BLOODLIB_PBC``, deepapl: ``BLOODLIB_DEEPAPL``), or
``../shared/data/bccd`` (pbc: ``../shared/data/pbc``, deepapl: ``../shared/data/deepapl``) beside the checkout), the
project's cache (``config.cache_dir()/"bccd"``, pbc: ``.../"pbc"``, deepapl: ``.../"deepapl"``), the publisher
(Kaggle through ``kagglehub``; pbc: the Mendeley Data record), and the public GitHub archives (deepapl: its own
repository, of which only ``Data/All`` is kept). Downloads are assembled into the cache in the same layout, each
part renamed into place only after it verifies (:mod:`bloodlib.data.layout`), so a second call finds the cache and
does no network and no copying. A user's own data (``folder:/path``, ``csv:/path/list.csv``) is read where it
is (:func:`own_root`), never copied. :mod:`bloodlib.data.fingerprint` lists and hashes the files a run reads.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from bloodlib import config
from bloodlib.data.download import DownloadError, download, safe_extract
from bloodlib.data.layout import (PBC_COUNTS, DataLayoutError, contents, own_data, parts_read, subset_problems,
                                  verify_layout)
from bloodlib.data.sources import (DEEPAPL_FOLDER, GITHUB_URLS, HOMES, KAGGLE_HANDLE, KAGGLE_PARTS, MENDELEY_URLS,
                                   PARTS, PBC_FOLDER, SOURCES, SOURCES_FILE, parse_dataset)
from bloodlib.utils import fileio

log = logging.getLogger(__name__)


def local_candidates(name: str = "bccd") -> list[Path]:
    """Local data folders tried in ``auto`` mode: ``../shared/data/<name>`` beside the checkout (:data:`HOMES`)."""
    checkouts = [config.project_root(), config.project_root(Path(__file__).parent)]
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


def _is_deepapl(d: Path) -> bool:
    """DeepAPL's folder of patients, ``Data/All`` of the repository (the rest of the repository is not kept)."""
    return "__MACOSX" not in d.parts and d.name == "All" and d.parent.name == "Data"


# How each part is recognised inside a download, however deep it is nested: (test, what the test looks for).
_FINDERS: dict[str, tuple[Callable[[Path], bool], str]] = {
    "dataset-master": (_is_dataset_master, "a folder holding labels.csv and JPEGImages/"),
    "BCCD_Dataset": (_is_bccd_repo, "a folder holding BCCD/Annotations/"),
    "dataset2-master": (_is_dataset2, "a folder holding images/TRAIN/"),
    PBC_FOLDER: (_is_pbc, f"a folder {PBC_FOLDER}/ of class folders ({', '.join(PBC_COUNTS)})"),
    DEEPAPL_FOLDER: (_is_deepapl, f"a folder {DEEPAPL_FOLDER}/ of patient folders"),
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
    problems, _ = subset_problems(stage_root, subset, strict_counts)
    if problems:
        raise DataLayoutError(f"{origin} gave a wrong {subset} layout:\n  " + "\n  ".join(problems))
    dest = cache / subset
    dest.parent.mkdir(parents=True, exist_ok=True)  # deepapl's Data/, once its part has verified
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
        # imported here, inside the try: a missing or broken kagglehub makes the caller fall through to
        # GitHub instead of breaking every import of this module (and it is slow to import)
        import kagglehub
        base = Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # no network, no package, API change: the caller falls through
        raise DownloadError(f"kaggle {handle}: {type(exc).__name__}: {exc}") from exc
    found = {subset: _find_dir(base, _FINDERS[subset][0]) for subset in KAGGLE_PARTS}
    for subset in wanted:
        if found[subset] is None:
            raise DataLayoutError(f"{base}: expected {_FINDERS[subset][1]} in the Kaggle download of {handle}, "
                                  f"found {contents(base)}")
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
            raise DataLayoutError(f"{url}: expected {what} in the archive, found {contents(extracted)}")
        stage_root = work / "stage"
        stage = stage_root / subset
        stage.parent.mkdir(parents=True)  # deepapl's part is two levels deep: Data/All
        if subset == "BCCD_Dataset":  # keep the data and its licence, not the repo's scripts
            stage.mkdir()
            for name in ("BCCD", "LICENSE"):
                if (src / name).exists():
                    os.replace(src / name, stage / name)
        else:
            os.replace(src, stage)
        _install(stage_root, subset, cache, strict_counts, url)


def read_sources(root: str | os.PathLike, dataset: str = "bccd") -> dict:
    """Where each part of a cached data root that ``dataset`` reads came from (empty for a user's own data)."""
    kind = parse_dataset(dataset)[0]
    if kind not in PARTS:
        return {}
    try:
        record = json.loads((Path(root) / SOURCES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {part: origin for part, origin in record.items() if part in PARTS[kind][0] + PARTS[kind][1]}


def own_root(dataset: str) -> Path:
    """The folder holding a user's own dataset (``folder:/path``: that folder; ``csv:/path/list.csv``: the
    folder holding the CSV and every file it lists), checked. Only ever read: nothing is copied or cached."""
    return own_data(dataset)[0]


def find_data(data_dir: str | os.PathLike | None = None, *, dataset: str = "bccd", source: str = "auto",
              cache: str | os.PathLike | None = None, require_boxes: bool = False,
              quiet: bool = False, strict_counts: bool = True, urls: Mapping[str, str] | None = None,
              mendeley_urls: Mapping[str, str] | None = None, kaggle_handle: str = KAGGLE_HANDLE) -> Path:
    """Return a data root holding the parts ``dataset`` reads (:data:`PARTS`), verified, downloading into
    the cache only when nothing usable exists.

    ``dataset`` is ``"bccd"``, ``"kaggle-augmented"``, ``"pbc"`` or ``"deepapl"`` (a user's own folder or list:
    :func:`own_root`); ``source`` is one of :data:`SOURCES`. A folder the user names (``data_dir``, else the
    variable of :data:`HOMES`: ``BLOODLIB_DATA``, for pbc ``BLOODLIB_PBC``, for deepapl ``BLOODLIB_DEEPAPL``) is
    used as it is or refused with :class:`DataLayoutError`, never replaced by a download. Downloads land in
    ``cache`` (default ``config.cache_dir()/"bccd"``, for pbc ``.../"pbc"``, for deepapl ``.../"deepapl"``): the
    publisher first (Kaggle; for pbc Mendeley Data), then GitHub, which also gives what no publisher has whichever
    source is named (the WBC boxes of bccd; deepapl, whose publisher is its GitHub repository);
    dataset2-master is only on Kaggle. ``urls`` overrides :data:`GITHUB_URLS`, ``mendeley_urls``
    :data:`MENDELEY_URLS` (tests point them at 127.0.0.1); ``strict_counts=False`` accepts any non-empty
    folders (tiny synthetic archives). Any image size passes: only folders and file counts are checked.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    kind = parse_dataset(dataset)[0]
    if kind not in PARTS:
        raise ValueError(f"find_data finds the datasets {sorted(PARTS)}; {dataset!r} is a user's own data, read "
                         f"where it is (own_root)")
    required, optional = parts_read(kind, require_boxes)
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
