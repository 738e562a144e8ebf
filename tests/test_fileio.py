"""Atomic writes: files get the mode an ordinary open() gives, and a failed write changes nothing."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from bloodlib.utils import fileio

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")

WRITERS = {
    "write_text": lambda path: fileio.write_text(path, "text\n"),
    "write_json": lambda path: fileio.write_json(path, {"a": 1}),
    "write_csv": lambda path: fileio.write_csv(path, pd.DataFrame({"a": [1, 2]})),
}


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=oct)
def umask(request) -> int:
    """Run the test under this umask, then restore the process's own."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("writer", WRITERS)
def test_new_files_get_the_mode_open_gives(tmp_path, umask, writer):
    with open(tmp_path / "reference", "w"):
        pass
    written = WRITERS[writer](tmp_path / "out")
    assert mode(written) == mode(tmp_path / "reference") == 0o666 & ~umask


@pytest.mark.parametrize("writer", WRITERS)
def test_a_replaced_file_keeps_its_mode(tmp_path, umask, writer):
    target = tmp_path / "out"
    target.write_text("old\n")
    target.chmod(0o640)
    WRITERS[writer](target)
    assert mode(target) == 0o640 and target.read_text() != "old\n"


def test_a_failing_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.txt"
    fileio.write_text(target, "old\n")
    with pytest.raises(UnicodeEncodeError):
        fileio.write_text(target, "half written \ud800")  # a lone surrogate fails mid-write in any encoding
    with pytest.raises(RuntimeError, match="writer failed"):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


class Unprintable:
    def __str__(self):
        raise ValueError("cannot be written")


def test_a_failing_first_write_leaves_nothing(tmp_path):
    frame = pd.DataFrame({"a": [1, Unprintable()]})  # the header and first row are written, then it fails
    with pytest.raises(ValueError, match="cannot be written"):
        fileio.write_csv(tmp_path / "sub" / "out.csv", frame)
    assert list((tmp_path / "sub").iterdir()) == []
