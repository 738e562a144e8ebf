"""Where things are and which profile a run uses.

Every notebook's ``parameters`` cell holds plain values, ``None`` meaning "the default": this module turns
them into one :class:`Settings` object, reading the environment (``BLOODLIB_DATA``, ``BLOODLIB_PROFILE``,
``BLOODLIB_OUTPUT``) and the profile's defaults. Papermill, nbmake and JupyterLab all go through here.
"""
from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np

ENV_DATA = "BLOODLIB_DATA"
ENV_PROFILE = "BLOODLIB_PROFILE"
ENV_OUTPUT = "BLOODLIB_OUTPUT"

# A profile fixes how much work a run does; every value can still be overridden one by one.
PROFILES: dict[str, dict] = {
    # seconds per notebook: proves every code path on the real data, numbers mean nothing
    "smoke": dict(image_size=64, epochs=2, batch_size=32, patience=2, folds=2, repeats=1,
                  bootstrap=200, gradcam_per_class=1),
    # the study itself: sized so that notebooks 01-07 finish in about half an hour on 2 CPU cores
    "full": dict(image_size=96, epochs=30, batch_size=32, patience=12, folds=4, repeats=1, bootstrap=2000,
                 gradcam_per_class=2),
}

# A dataset's own defaults within a profile, below anything set explicitly. dataset2-master trains on 8.6k
# images an epoch (BCCD: about 470 with oversampling), so its full profile runs fewer epochs, on 64 px crops
# around the WBC found by its stain (TEST accuracy 0.877 against 0.789 for whole 64x85 fields, resnet18, 8
# epochs); a validation and test set of its own replace the folds.
DATASET_DEFAULTS: dict[tuple[str, str], dict] = {
    ("full", "kaggle-augmented"): dict(mode="crop", image_size=64, epochs=12, patience=4),
    ("smoke", "kaggle-augmented"): dict(mode="crop", epochs=1, patience=1),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved parameters of one notebook run."""
    profile: str
    data_dir: Path | None
    output_dir: Path
    dataset: str = "bccd"
    mode: str = "crop"
    image_size: int = 96
    crop_margin: float = 0.15
    seed: int = 42
    epochs: int = 30
    batch_size: int = 32
    patience: int = 12
    folds: int = 4
    repeats: int = 1
    bootstrap: int = 2000
    gradcam_per_class: int = 2

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def project_root(start: Path | None = None) -> Path:
    """The checkout holding ``pyproject.toml`` above ``start`` (notebooks run from ``notebooks/``)."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "src" / "bloodlib").is_dir():
            return folder
    return start


def resolve(profile: str | None = None, data_dir: str | os.PathLike | None = None,
            output_dir: str | os.PathLike | None = None, **overrides) -> Settings:
    """Fill ``None`` parameters from the environment and the profile; reject unknown names early."""
    profile = profile or os.environ.get(ENV_PROFILE) or "full"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Settings)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}: expected some of {sorted(fields)}")
    values = dict(PROFILES[profile])
    values.update(DATASET_DEFAULTS.get((profile, overrides.get("dataset") or "bccd"), {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    data_dir = data_dir or os.environ.get(ENV_DATA) or None
    output_dir = output_dir or os.environ.get(ENV_OUTPUT) or project_root() / "outputs"
    settings = Settings(profile=profile, data_dir=Path(data_dir).expanduser() if data_dir else None,
                        output_dir=Path(output_dir).expanduser().resolve(), **values)
    if settings.mode not in ("crop", "full"):
        raise ValueError(f"mode must be 'crop' or 'full', got {settings.mode!r}")
    if settings.image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {settings.image_size}")
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    return settings


def cache_dir() -> Path:
    """Decoded-image caches and downloads: ``<repo>/data`` in a checkout, else the user cache."""
    root = project_root()
    if (root / "pyproject.toml").is_file():
        return root / "data"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bloodlib"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run can be repeated."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(prefer: str | None = None):
    """CUDA, then Apple's MPS, then the CPU; ``prefer`` forces one (``"cpu"`` in tests)."""
    import torch

    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
