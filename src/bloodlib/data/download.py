"""Download a file and extract a zip archive safely: nothing half-written is ever left under the final name.

Every source :mod:`bloodlib.data.acquire` downloads is a zip archive fetched over HTTP(S); tests serve theirs on
127.0.0.1.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import requests

from bloodlib.utils.progress import progress_bar


class DownloadError(RuntimeError):
    """A download or an archive failed; the message names the URL or archive and the problem."""


class UnsafeArchiveError(DownloadError, ValueError):
    """An archive member would land outside the target folder (absolute path, ``..``, link)."""


# ------------------------------------------------------------------------------------------ download
def download(url: str, dest: str | os.PathLike, *, expected_sha256: str | None = None,
             expected_size: int | None = None, timeout: float = 60, progress: bool = True) -> Path:
    """Stream ``url`` to ``dest`` through a temporary file renamed only once it checks out.

    The size is checked against ``Content-Length`` (and ``expected_size``), the hash against
    ``expected_sha256``. On any failure the temporary file is removed, ``dest`` is left as it was, and
    :class:`DownloadError` names the URL and the problem.
    """
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
