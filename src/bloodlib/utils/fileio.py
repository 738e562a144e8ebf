"""Atomic writes: a reader (or a crash) never sees half a file; what was on disk stays until replaced."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path

import pandas as pd


def _create_beside(path: Path) -> Path:
    """Create an empty, unique ``.<name>.<random>.tmp`` beside ``path`` with an ordinary file's mode.

    ``tempfile.mkstemp`` would create it 0600 whatever the umask; opening it ourselves with mode 0o666 lets
    the kernel apply the umask, as ``open(path, "w")`` does, without reading (and racing on) the umask.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file written gets the mode ``open(path, "w")`` would give: a new file 0o666 less the umask, a
    replaced file keeps the mode it had (so a file made private, or public, stays so).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path)
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, index: bool = False) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index, lineterminator="\n")
    return Path(path)
