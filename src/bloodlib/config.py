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
ENV_CACHE = "BLOODLIB_CACHE"

# The layers of defaults, lowest first: TrainConfig's and Settings' own (the base recipe), then the profile,
# then the dataset within the profile, then the model's recipe, then what the caller sets (resolve()).

# A profile fixes how much work a run does; every value can still be overridden one by one.
PROFILES: dict[str, dict] = {
    # seconds per notebook: proves every code path on the real data, numbers mean nothing
    "smoke": dict(image_size=64, epochs=2, batch_size=32, keep_epoch="last", patience=2, folds=2, repeats=1,
                  bootstrap=200, gradcam_per_class=1),
    # the study itself: 4 folds, 30 epochs at 96 px. Notebooks 01-07 took 61 min on 2 fp32 CPU cores (26 min where
    # the CPU has native bf16), 08 another 20 (benchmarks/README.md). A fixed schedule keeps the last epoch: the
    # tuning search (bloodlib.tuning) scores every recipe on the folds' validation parts, which must then not also
    # choose the epoch. Where every default was chosen: docs/defaults.md.
    "full": dict(image_size=96, epochs=30, batch_size=32, keep_epoch="last", patience=12, folds=4, repeats=1,
                 bootstrap=2000, gradcam_per_class=2),
}

# A dataset's own defaults within a profile. dataset2-master trains on 8.6k images an epoch (BCCD: about 470
# with oversampling), so its full profile runs fewer epochs, on 64 px crops around the WBC found by its stain
# (TEST accuracy 0.877 against 0.789 for whole 64x85 fields, resnet18, 8 epochs).
DATASET_DEFAULTS: dict[tuple[str, str], dict] = {
    # Its validation part holds ~1,500 images (15 % of TRAIN, grouped by smear): early stopping there is not the
    # noise it is on BCCD's ~40 images, and the recipe was measured with it.
    ("full", "kaggle-augmented"): dict(mode="crop", image_size=64, epochs=12, keep_epoch="best", patience=4),
    ("smoke", "kaggle-augmented"): dict(mode="crop", epochs=1, patience=1),
    # PBC has no test set of its own: one held-out split (folds=1; 12,195 train, 2,439 val, 2,440 test of 17,074
    # cells), 64 px crops around the stain-located cell. Measured, resnet18 at 64 px on one thread of this 2-core
    # CPU: 71 img/s at batch 64, 55 at batch 32 (benchmarks/throughput.py, best of 3); a whole epoch (17,783
    # images with oversampling) took 628 s (29 img/s) while other runs loaded the machine, val macro-F1 0.84.
    # On 2 cores (~115 img/s) an epoch takes about 2.7 min: 3 epochs stay within ~10 minutes, run to the end.
    # No oversampling: PBC's classes differ by 2.7x at most, and repeating them made an epoch 46% longer. The
    # resnet18 backbone at 96 px (notebook 08): 4 epochs of 4.8 min on 2 cores (43 img/s, fp32), validation
    # macro-F1 0.55, 0.90, 0.93, 0.93; held-out test accuracy 0.939.
    # Its validation part (2,439 cells) keeps the best epoch, like kaggle-augmented's.
    ("full", "pbc"): dict(mode="crop", image_size=64, epochs=4, keep_epoch="best", patience=4, batch_size=64,
                          folds=1, oversample=False),
    # the smoke profile reads a 400-file subset (datasets.SMOKE_SUBSETS)
    ("smoke", "pbc"): dict(mode="crop", folds=1),
    # DeepAPL's normal white cells (6,990 of 106 patients kept): one held-out split by patient (folds=1; at seed 42
    # 5,028 train, 1,008 validation, 971 test cells of 78 / 15 / 13 patients), 64 px crops around the stain-located
    # cell as for PBC (CellaVision crops too). Oversampling stays on: its classes differ by 66x (52 basophils,
    # 3,427 lymphocytes). Epochs as PBC's, not yet measured on DeepAPL.
    ("full", "deepapl"): dict(mode="crop", image_size=64, epochs=4, keep_epoch="best", patience=4, batch_size=64,
                              folds=1),
    # a 400-file subset of whole patients (datasets.SMOKE_SUBSETS); 2 folds grouped by patient: on 7-8 patients a
    # held-out split can leave a class out of its one test patient
    ("smoke", "deepapl"): dict(mode="crop"),
    # "labs": notebook 09's several labs at once (bloodlib.study.labs; each lab is still prepared as its own dataset).
    # Full: as PBC's and DeepAPL's recipes, 64 px and 4 epochs with the best validation epoch kept, since a
    # lab-balanced epoch holds every training lab at the largest one's size (~10k cells each for PBC and DeepAPL).
    # Smoke: 32 px and one epoch, so that the page's six models train in about a minute on two CPU cores.
    # Input colour "lab" (each image's CIELAB channels standardised by its own mean and spread): the recipe with the
    # best mean leave-one-lab-out macro-F1 without adaptation, 0.728 against 0.642 for RGB, 0.595 with HED jitter
    # and 0.561 with GroupNorm (benchmarks/results/lolo_recipes.csv); smoke keeps it so CI runs the same code path.
    ("full", "labs"): dict(mode="crop", image_size=64, epochs=4, keep_epoch="best", patience=4, batch_size=64,
                           input_colour="lab"),
    ("smoke", "labs"): dict(mode="crop", image_size=32, epochs=1, input_colour="lab"),
}

# A model's own recipe for training from scratch on one dataset (TrainConfig fields only), like timm's
# pretrained_cfg: the choice of that model's tuning search on that dataset (`python -m bloodlib tune MODEL`, the
# full profile's 4 folds, scored on their validation parts only; the same trials and budget for every model). Its
# trials: benchmarks/results/tuning/trials.csv (notebook 07 shows them; tests/test_tuning.py checks that these are
# the table's choices). Keyed by dataset too: a recipe chosen on BCCD says nothing of PBC's or DeepAPL's cells, and
# nothing of fine-tuning pretrained weights (run_model leaves it out unless a model trains from scratch).
# BCCD: 12 trials per model (pruned included) of about 54,000 training images x epochs each, best validation
# macro-F1 (fold mean) resnet18 0.859, efficientnet_b0 0.604, alexnet 0.705; the drawn values, not rounded.
MODEL_RECIPES: dict[tuple[str, str], dict] = {
    ("bccd", "resnet18"): dict(lr=0.0011223032830669003, weight_decay=0.22648248189516848, batch_size=16,
                               drop_rate=0.07799726016810132),
    ("bccd", "efficientnet_b0"): dict(lr=0.006871706379103194, weight_decay=0.004121336961311386, batch_size=16,
                                      drop_rate=0.01711069894590228, drop_path_rate=0.14481027210986114),
    ("bccd", "alexnet"): dict(lr=0.0004029411862138224, weight_decay=0.013088145853876892, batch_size=32,
                              drop_rate=0.34896801260262933, optimizer="adamw"),
}

# Fine-tuning from a backbone this study trained on another dataset (notebook 08, bloodlib.study.transfer): layered
# over the home run's recipe without its model's own (MODEL_RECIPES are from-scratch recipes), below what the caller
# sets. Chosen on the validation parts of the full profile's 4 BCCD folds (never their test parts), resnet18 from
# its PBC backbone at 96 px, one thread per run: 15 epochs at one learning rate for all layers, fold-mean validation
# macro-F1 0.895, against 0.873 with the backbone at a tenth of the head's rate (backbone_lr_scale=0.1), and 0.880
# for the 30-epoch recipe from scratch; half the time. kaggle-augmented: half its from-scratch epochs too (12 -> 6),
# by analogy with BCCD, not chosen on its own validation part. Other datasets and the smoke profile fine-tune with
# the home recipe as it is.
FINETUNE_RECIPES: dict[tuple[str, str], dict] = {
    ("full", "bccd"): dict(epochs=15),
    ("full", "kaggle-augmented"): dict(epochs=6),
}


# What a network reads (models.inference.normalize, the model's saved normalization): "rgb", standardised by the
# model's mean and std; or "lab", each image's CIELAB channels standardised by that image's own mean and spread, so
# that a lab's overall colour cast and contrast do not reach the network.
INPUT_COLOURS = ("rgb", "lab")


@dataclasses.dataclass
class TrainConfig:
    """How one model is trained: the base recipe, below the profile, the dataset and the model (see :func:`resolve`).

    Every field is a notebook parameter and is saved with the checkpoint."""
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 0.05  # AdamW; biases and norm layers are not decayed
    warmup: float = 0.1  # fraction of the steps spent warming up (one-cycle's pct_start)
    # which epoch's weights a run keeps: "best" validation macro-F1 (early stopping after `patience` epochs
    # without a better one) or "last" (a fixed schedule: every epoch runs, validation is only watched)
    keep_epoch: str = "best"
    patience: int = 12  # epochs without a better validation macro-F1 before stopping (keep_epoch="best")
    label_smoothing: float = 0.1
    optimizer: str = "adamw"  # timm's name: "adamw", or "sgd" (SGD with Nesterov momentum 0.9)
    drop_rate: float | None = None  # dropout before the classifier; None: the model's own default
    drop_path_rate: float | None = None  # stochastic depth (timm models that have it); None: the model's default
    augment: bool = True  # random flips, rotations, colour jitter (training batches only)
    colour_jitter: float = 1.0  # scales the colour jitter of augment_batch (0: geometry only)
    stain_jitter: float = 0.0  # > 0: random stain (HED) jitter of that strength (augment_batch): other labs' stains
    input_colour: str = "rgb"  # what the network reads (INPUT_COLOURS)
    zoom: float = 0.0  # > 0: random zoom by a factor in [1 / (1 + zoom), 1 + zoom] (augment_batch)
    shift: float = 0.0  # > 0: random shift by up to this fraction of the side, on each axis (augment_batch)
    ema_decay: float = 0.0  # > 0: validate, select and keep an exponential moving average of the weights
    mixup_alpha: float = 0.0  # > 0: timm's Mixup blends pairs of training images and their labels
    cutmix_alpha: float = 0.0  # > 0: ... or pastes a patch of one into the other (with both, one per batch)
    oversample: bool = True  # ImageSet.training_indices: repeat the rare classes
    # fine-tuning a pretrained backbone: its learning rate relative to the new head's (train.make_optimizer);
    # 1: one rate for all (from scratch), 0: the backbone stays as it was (a linear probe, BatchNorm aside)
    backbone_lr_scale: float = 1.0
    seed: int = 42
    eval_batch_size: int = 128
    channels_last: bool | None = None  # None: on CUDA yes, on CPU where precision.CPU_SPEEDUPS measured a gain
    cpu_bf16: bool | None = None  # None: bf16 autocast on CPU where precision.CPU_SPEEDUPS measured a gain
    cuda_autocast: bool = True  # CUDA: fp16 autocast (fast); False: fp32 there too, TF32 off (a search pins it)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.zoom < 1 or not 0 <= self.shift < 0.5:
            raise ValueError(f"TrainConfig.zoom must be in [0, 1) and shift in [0, 0.5), got {self.zoom}, {self.shift}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("TrainConfig.mixup_alpha and cutmix_alpha must be >= 0")
        if self.keep_epoch not in ("best", "last"):
            raise ValueError(f"TrainConfig.keep_epoch must be 'best' or 'last', got {self.keep_epoch!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.backbone_lr_scale < 0:
            raise ValueError(f"TrainConfig.backbone_lr_scale must be >= 0, got {self.backbone_lr_scale}")
        if self.input_colour not in INPUT_COLOURS:
            raise ValueError(f"TrainConfig.input_colour must be one of {list(INPUT_COLOURS)}, got {self.input_colour!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"TrainConfig.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        for name in ("drop_rate", "drop_path_rate"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be None or in [0, 1), got {getattr(self, name)}")

    def model_kwargs(self) -> dict:
        """What ``create_model`` takes from the recipe: the regularisation set here (None: the model's own)."""
        return {name: getattr(self, name) for name in ("drop_rate", "drop_path_rate") if getattr(self, name) is not None}

@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved parameters of one notebook run; ``train`` is the recipe for ``model`` (see :func:`resolve`)."""
    profile: str
    data_dir: Path | None
    output_dir: Path
    image_size: int
    folds: int  # cross-validation folds; 1: a holdout split (see bloodlib.data.splits)
    repeats: int
    bootstrap: int
    gradcam_per_class: int
    train: TrainConfig
    model: str | None = None
    dataset: str = "bccd"
    mode: str = "crop"
    crop_margin: float = 0.15
    seed: int = 42
    requested: dict = dataclasses.field(default_factory=dict)  # what the caller set, to resolve for another model

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}

    def for_model(self, model: str, *, from_scratch: bool = True) -> "Settings":
        """The same parameters with ``model``'s recipe (a notebook resolved before the model was known); without
        it when the model starts from pretrained weights (``from_scratch=False``)."""
        if model == self.model and from_scratch:
            return self
        return resolve(self.profile, self.data_dir, self.output_dir, model=model, from_scratch=from_scratch,
                       **self.requested)


SETTINGS_FIELDS = ("dataset", "mode", "image_size", "crop_margin", "seed", "folds", "repeats", "bootstrap",
                   "gradcam_per_class")
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed")
PARAMETERS = ("profile", "data_dir", "output_dir", "model_name", *SETTINGS_FIELDS, *TRAIN_FIELDS)


def project_root(start: Path | None = None) -> Path:
    """The checkout holding ``pyproject.toml`` above ``start`` (notebooks run from ``notebooks/``)."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "src" / "bloodlib").is_dir():
            return folder
    return start


def resolve(profile: str | None = None, data_dir: str | os.PathLike | None = None,
            output_dir: str | os.PathLike | None = None, *, model: str | None = None, from_scratch: bool = True,
            **overrides) -> Settings:
    """Fill ``None`` parameters from the environment and the layers of defaults; reject unknown names early.

    Lowest first: the base recipe (TrainConfig, Settings), the profile, the dataset within the profile,
    ``model``'s recipe on the dataset (MODEL_RECIPES; only ``from_scratch``: it was chosen for training from
    scratch), then ``overrides`` (any field of Settings or TrainConfig).
    """
    profile = profile or os.environ.get(ENV_PROFILE) or "full"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(PROFILES)}")
    unknown = set(overrides) - set(SETTINGS_FIELDS) - set(TRAIN_FIELDS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}: expected some of "
                         f"{sorted(SETTINGS_FIELDS + TRAIN_FIELDS)}")
    requested = {k: v for k, v in overrides.items() if v is not None}
    dataset = requested.get("dataset") or "bccd"
    values = {**PROFILES[profile], **DATASET_DEFAULTS.get((profile, dataset), {}),
              **(MODEL_RECIPES.get((dataset, model), {}) if from_scratch else {}), **requested}
    seed = values.get("seed", Settings.seed)
    train = TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_FIELDS}, seed=seed)
    data_dir = data_dir or os.environ.get(ENV_DATA) or None
    output_dir = output_dir or os.environ.get(ENV_OUTPUT) or project_root() / "outputs"
    settings = Settings(profile=profile, data_dir=Path(data_dir).expanduser() if data_dir else None,
                        output_dir=Path(output_dir).expanduser().resolve(), train=train, model=model,
                        requested=requested, **{k: v for k, v in values.items() if k in SETTINGS_FIELDS})
    if settings.mode not in ("crop", "full"):
        raise ValueError(f"mode must be 'crop' or 'full', got {settings.mode!r}")
    if settings.image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {settings.image_size}")
    if settings.folds < 1 or settings.repeats < 1:
        raise ValueError(f"folds and repeats must be at least 1, got {settings.folds} and {settings.repeats}")
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    return settings


def notebook_parameters(namespace: dict) -> dict:
    """The values of a notebook's ``parameters`` cell found in ``namespace`` (its ``globals()``), as
    :func:`resolve` takes them: ``settings = config.resolve(**config.notebook_parameters(globals()))``."""
    found = {name: namespace[name] for name in PARAMETERS if name in namespace}
    if "model_name" in found:
        found["model"] = found.pop("model_name")
    return found


def cache_dir() -> Path:
    """Decoded-image caches and downloads: ``$BLOODLIB_CACHE``, else ``<repo>/data`` in a checkout, else the
    user cache."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
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
