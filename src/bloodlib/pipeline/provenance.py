"""Where a run comes from: the checkout and its commit, the packages, the device, the run's id, its data.

What the run record says about a run's origin, and what a resume compares: :func:`git_info` fingerprints the
uncommitted code, :func:`data_checksum` the data the notebooks would read now.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from bloodlib import config
from bloodlib.data import datasets

PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "matplotlib", "grad-cam",
            "papermill", "nbconvert", "nbclient", "bloodlib")


def repo_root() -> Path:
    """The checkout: the current folder's if it is one, else the one this module was installed from. Paths
    in the files of a run are written relative to it (:func:`bloodlib.utils.paths.portable`)."""
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        root = config.project_root(start)
        if (root / "pyproject.toml").is_file():
            return root
    return Path.cwd()


def git_info(root: Path, exclude: Path | None = None) -> dict:
    """Commit and dirty flag of the checkout (read only: no index refresh); None outside git. ``changes``:
    the SHA-256 of every changed or untracked file (None: deleted), so that a resume can tell whether the
    uncommitted code is still the run's; files under ``exclude`` (the report folder) are not code."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                                  capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip("\n") if done.returncode == 0 else None

    commit, top = git("rev-parse", "HEAD"), git("rev-parse", "--show-toplevel")
    pathspec = []
    if top and exclude is not None and Path(exclude).resolve().is_relative_to(Path(top).resolve()):
        inside = Path(exclude).resolve().relative_to(Path(top).resolve()).as_posix()
        pathspec = ["--", ":/", f":(top,exclude){inside}"]  # the whole work tree but the report folder
    status = git("status", "--porcelain", "-z", "--untracked-files=all", *pathspec)
    changes = None
    if status is not None and top:  # porcelain paths are relative to the top of the repository
        # entries "XY path", NUL-separated; a rename or copy ("R"/"C" in X) is followed by its bare source path
        paths, tokens = set(), iter(status.split("\0"))
        for entry in tokens:
            if len(entry) > 3:
                paths.add(entry[3:])
                if entry[0] in "RC":
                    paths.add(next(tokens, ""))
        changes = {path: _file_sha256(Path(top) / path) for path in sorted(paths - {""})}
    return {"commit": commit, "short": commit[:7] if commit else None,
            "dirty": bool(changes) if changes is not None else None, "changes": changes}


def _file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_run_id(runs: Path, short_sha: str | None) -> str:
    """``YYYYmmdd-HHMMSS-<sha>``, with a counter when two runs start in the same second."""
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{short_sha or 'nogit'}"
    run_id, n = base, 2
    while (runs / run_id).exists():
        run_id, n = f"{base}-{n}", n + 1
    return run_id


def device_info() -> dict:
    """What the notebooks' ``config.select_device()`` picks on this machine, by name."""
    device = config.select_device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple Metal (MPS)"
    else:
        cpu = platform.processor() or platform.machine()
        name = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return {"device": device.type, "name": name}


def versions() -> dict:
    """Installed versions of the packages a run depends on."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def data_checksum(profile: str, values: Mapping, run_dir: Path) -> tuple[Path, str]:
    """Where the data of a run with these parameter values is found now, and its checksum: what notebook 01
    writes in ``data/data_record.json`` (:func:`bloodlib.data.datasets.write_data_record`), same files, same sum."""
    wanted = config.notebook_parameters(dict(values))
    for name in ("profile", "output_dir", "model"):
        wanted.pop(name, None)
    settings = config.resolve(profile, output_dir=run_dir, **wanted)
    root = datasets.locate(settings)
    return root, datasets.data_checksum(settings, root)
