"""One training loop for every model of the study.

The decoded images stay a uint8 tensor (an :class:`~bloodlib.datasets.ImageSet`) on the training device;
each step gathers a batch, augments it as a whole (:func:`augment_batch`: per-image random draws, no
per-image Python loop), normalises it and takes an AdamW step under a one-cycle schedule. Validation
macro-F1 picks the best epoch and stops the run early. ``out_dir`` receives two checkpoints:

- ``best.pt``: the weights of the best epoch and the metadata needed to use them (model, classes, image
  size, mode, normalisation, ...), written atomically whenever validation improves, so it survives any
  interruption;
- ``last.pt``: everything needed to continue an interrupted run (``fit(..., resume=True)``): weights,
  optimizer, scheduler, random state and history, written after the first epoch and then at most every
  ``save_every`` seconds (weights plus AdamW's state are 12 bytes a parameter: 135 MB for resnet18, written
  after every 0.2-second epoch on a GPU would dominate the run). Once the run ends it is replaced by a small
  record without weights, so a finished run keeps one copy of its weights.

Every checkpoint holds tensors and plain values only and is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from . import config, fileio
from .datasets import ImageSet
from .models import check_input_size, create_model, get_spec

CHECKPOINT_FORMAT = "bloodlib-checkpoint"
CHECKPOINT_VERSION = 1
BEST, LAST = "best.pt", "last.pt"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: training cannot go on."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"training loss is {value} at epoch {epoch}, step {step}: stopped (check the images "
                         f"for NaN/inf values, or lower the learning rate)")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint, or one made for another model, class list or image size."""


@dataclasses.dataclass
class TrainConfig:
    """How one model is trained; every field is saved with the checkpoint."""
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 0.05  # AdamW; biases and norm layers are not decayed
    warmup: float = 0.1  # fraction of the steps spent warming up (one-cycle's pct_start)
    patience: int = 12  # epochs without a better validation macro-F1 before stopping
    label_smoothing: float = 0.1
    augment: bool = True  # random flips, rotations, colour jitter (training batches only)
    colour_jitter: float = 1.0  # scales the colour jitter of augment_batch (0: geometry only)
    zoom: float = 0.0  # > 0: random zoom by a factor in [1 / (1 + zoom), 1 + zoom] (augment_batch)
    shift: float = 0.0  # > 0: random shift by up to this fraction of the side, on each axis (augment_batch)
    ema_decay: float = 0.0  # > 0: validate, select and keep an exponential moving average of the weights
    mixup_alpha: float = 0.0  # > 0: timm's Mixup blends pairs of training images and their labels
    cutmix_alpha: float = 0.0  # > 0: ... or pastes a patch of one into the other (with both, one per batch)
    oversample: bool = True  # ImageSet.training_indices: repeat the rare classes
    seed: int = 42
    eval_batch_size: int = 128
    channels_last: bool | None = None  # None: on CUDA yes, on CPU where the model registry measured a gain
    cpu_bf16: bool | None = None  # None: bf16 autocast on CPU where the registry measured a gain

    @classmethod
    def from_settings(cls, settings: config.Settings, **overrides) -> "TrainConfig":
        """The fields a notebook's :class:`~bloodlib.config.Settings` fixes, plus ``overrides``."""
        values = dict(epochs=settings.epochs, batch_size=settings.batch_size, patience=settings.patience,
                      seed=settings.seed)
        return cls(**{**values, **overrides})

    def __post_init__(self):
        for name in ("epochs", "batch_size", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.zoom < 1 or not 0 <= self.shift < 0.5:
            raise ValueError(f"TrainConfig.zoom must be in [0, 1) and shift in [0, 0.5), got {self.zoom}, {self.shift}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("TrainConfig.mixup_alpha and cutmix_alpha must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns; the model itself holds the best epoch's weights."""
    history: pd.DataFrame  # one row per epoch, see HISTORY_COLUMNS
    best_epoch: int
    best_val: dict  # loss, accuracy, macro_f1 of the best epoch
    checkpoint: Path | None  # best.pt, or None without out_dir
    train_seconds: float  # wall time of the epochs run by this call
    device: str
    images_per_second: float  # training images per second of training steps (augmentation included)
    precision: str  # "fp32", "bf16" (CPU autocast) or "fp16" (CUDA autocast + GradScaler)


HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "train_macro_f1", "val_loss", "val_accuracy",
                   "val_macro_f1", "lr", "seconds", "images_per_second"]


# ------------------------------------------------------------------------------------------ input pipeline

# augment_batch's colour jitter at strength 1 (TrainConfig.colour_jitter scales all four)
COLOUR_JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03)


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None, *, enabled: bool = True,
                  flip: bool = True, rotate: bool = True, zoom: float = 0.0, shift: float = 0.0,
                  brightness: float = COLOUR_JITTER["brightness"], contrast: float = COLOUR_JITTER["contrast"],
                  saturation: float = COLOUR_JITTER["saturation"], hue: float = COLOUR_JITTER["hue"]) -> torch.Tensor:
    """Random flips, rotation by any angle, optional zoom and shift, and colour jitter, drawn per image,
    applied to the batch at once.

    A smear has no up, down, left or right, so every rotation and flip is a valid training image; zoom and
    shift imitate a WBC box drawn a little larger, smaller or off-centre; the jitter imitates stain and
    illumination differences. Same dtype and shape out as in (uint8 stays uint8); the identity when
    ``enabled`` is False. Random numbers come from ``generator`` (CPU) for repeatability.
    """
    if not enabled:
        return images
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if flip or rotate or zoom or shift:
        x = _random_geometry(x, generator, flip=flip, rotate=rotate, zoom=zoom, shift=shift)
    x = _random_colour(x, generator, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
    if images.dtype == torch.uint8:
        return x.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return x.to(images.dtype)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


def _random_geometry(x: torch.Tensor, generator, *, flip: bool, rotate: bool, zoom: float = 0.0,
                     shift: float = 0.0) -> torch.Tensor:
    """One affine matrix per image (rotation about the centre, flips, zoom, shift), one ``grid_sample`` call.

    Zoom and shift draw their random numbers only when asked for, so runs without them repeat earlier runs.
    """
    n, _, h, w = x.shape
    angle = _uniform(n, 0, 2 * math.pi, generator, x.device) if rotate else torch.zeros(n, device=x.device)
    fx, fy = (torch.ones(n, device=x.device),) * 2
    if flip:
        fx, fy = (torch.where(_uniform(n, 0, 1, generator, x.device) < 0.5, -1.0, 1.0) for _ in range(2))
    # the grid maps output to input pixels: sampling a window 1/z of the side shows the image z times larger;
    # the zoom factor is drawn log-uniformly so that zooming in and out are equally likely
    inverse_zoom = torch.exp(_uniform(n, -math.log1p(zoom), math.log1p(zoom), generator, x.device)) if zoom else 1.0
    tx, ty = ((_uniform(n, -2 * shift, 2 * shift, generator, x.device) for _ in range(2)) if shift
              else (torch.zeros(n, device=x.device),) * 2)
    cos, sin = torch.cos(angle) * inverse_zoom, torch.sin(angle) * inverse_zoom
    # affine_grid works in [-1, 1] coordinates on both axes: rescale so that the rotation is one in pixels
    theta = torch.stack([torch.stack([cos * fx, -sin * fy * h / w, tx], 1),
                         torch.stack([sin * fx * w / h, cos * fy, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # corners rotated in from outside the image are filled by reflection: more smear, not black wedges
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# RGB <-> YIQ: saturation scales the chroma (I, Q) plane and hue rotates it
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)  # once: linalg.inv on a GPU waits for the device (error check)


def _random_colour(x: torch.Tensor, generator, *, brightness: float, contrast: float, saturation: float,
                   hue: float) -> torch.Tensor:
    """Brightness, contrast, then saturation and hue as one 3x3 colour matrix per image (values in [0, 1])."""
    n = len(x)
    b = _uniform(n, 1 - brightness, 1 + brightness, generator, x.device).view(n, 1, 1, 1)
    x = (x * b).clamp_(0, 1)
    c = _uniform(n, 1 - contrast, 1 + contrast, generator, x.device).view(n, 1, 1, 1)
    grey = (x * _RGB_TO_YIQ[0].to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - grey) * c + grey).clamp_(0, 1)
    s = _uniform(n, 1 - saturation, 1 + saturation, generator, x.device)
    a = _uniform(n, -hue, hue, generator, x.device) * 2 * math.pi
    chroma = torch.zeros(n, 3, 3, device=x.device)
    chroma[:, 0, 0] = 1
    chroma[:, 1, 1], chroma[:, 1, 2] = s * torch.cos(a), -s * torch.sin(a)
    chroma[:, 2, 1], chroma[:, 2, 2] = s * torch.sin(a), s * torch.cos(a)
    matrix = _YIQ_TO_RGB.to(x.device) @ chroma @ _RGB_TO_YIQ.to(x.device)
    return torch.einsum("nij,njhw->nihw", matrix, x).clamp_(0, 1)


def normalize(images: torch.Tensor, normalization: dict, channels_last: bool = False) -> torch.Tensor:
    """uint8 images to the float input of the network: [0, 1], then (x - mean) / std per channel."""
    mean = torch.tensor(normalization["mean"], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(normalization["std"], device=images.device).view(1, 3, 1, 1)
    x = (images.float() / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------------------------- precision

@dataclasses.dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: fp32) and memory format chosen for one device and model."""
    autocast: torch.dtype | None
    channels_last: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]


def choose_precision(model_name: str, device: torch.device, cfg: TrainConfig) -> Precision:
    """CUDA: fp16 autocast and channels_last. CPU: bf16 and channels_last only where measured faster for
    this model (see the registry) and, for bf16, only on CPUs with native bf16. MPS: fp32."""
    spec = get_spec(model_name)
    if device.type == "cuda":
        return Precision(torch.float16, True if cfg.channels_last is None else cfg.channels_last)
    if device.type != "cpu":
        return Precision(None, bool(cfg.channels_last))
    native_bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    bf16 = spec.cpu_bf16 and native_bf16 if cfg.cpu_bf16 is None else cfg.cpu_bf16
    channels_last = spec.cpu_channels_last if cfg.channels_last is None else cfg.channels_last
    return Precision(torch.bfloat16 if bf16 else None, channels_last)


def autocast_for(device: torch.device, precision: Precision):
    """torch.autocast for the chosen precision, or nothing for fp32."""
    if precision.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast)


@contextlib.contextmanager
def deterministic():
    """Deterministic algorithms while training (warn, not fail, where an op has none), then as before."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


# ------------------------------------------------------------------------------------------------ steps

def make_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """AdamW (timm's: no weight decay on biases and norms) under a one-cycle schedule stepped per batch."""
    import timm.optim

    # the fused kernel: on the CPU it cuts AdamW's step ~10x (945 -> 87 ms for AlexNet's 57M parameters)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    optimizer = timm.optim.create_optimizer_v2(model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               fused=fused)
    total = cfg.epochs * steps_per_epoch
    # OneCycleLR's warm-up ends at step pct_start * total - 1: keep it past step 0 (else it divides by zero
    # on short runs) and before the last step
    warmup = min(max(cfg.warmup, 1.5 / total), 0.75)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=warmup,
                                                    anneal_strategy="cos", cycle_momentum=False)
    return optimizer, scheduler


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Shuffling and augmentation draws of one epoch: the same whether the run was resumed or not."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def train_one_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor, *,
                    optimizer, scheduler, scaler, criterion, cfg: TrainConfig, precision: Precision, epoch: int,
                    ema=None, mixer=None, progress: bool = True) -> dict:
    """One pass over ``positions`` (shuffled, oversampled): augment, normalise, step. Returns train metrics."""
    model.train()
    device = labels.device  # the images may stay on the host (see _placed): batches are copied over
    generator = _epoch_generator(cfg.seed, epoch)
    order = positions[torch.randperm(len(positions), generator=generator)]
    if mixer is not None:  # timm's Mixup draws from NumPy's global generator: seeded per epoch, like the rest
        np.random.seed((cfg.seed * 100_003 + epoch) % 2 ** 32)
    batches = list(torch.split(order, cfg.batch_size))
    if len(batches) > 1 and len(batches[-1]) < cfg.batch_size:
        batches.pop()  # a reshuffle every epoch: no image is always left out; BatchNorm never sees 1 image
    # losses and predictions stay on the device until the epoch ends: reading one every step would make the
    # host wait for a GPU each step instead of queueing the next (the non-finite check names the step anyway)
    losses, predicted, truth = [], [], []
    jitter = {k: v * cfg.colour_jitter for k, v in COLOUR_JITTER.items()}
    start = time.perf_counter()
    for batch in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not progress):
        x = images[batch.to(images.device)].to(device, non_blocking=True)
        x = augment_batch(x, generator, enabled=cfg.augment, zoom=cfg.zoom, shift=cfg.shift, **jitter)
        x, y = normalize(x, model.normalization, precision.channels_last), labels[batch.to(device)]
        x, target = mixer(x, y) if mixer is not None else (x, y)
        with autocast_for(device, precision):
            logits = model(x)
        loss = criterion(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        losses.append(loss.detach())
        predicted.append(logits.detach().argmax(1))
        truth.append(y)
    losses = torch.stack(losses).cpu()
    non_finite = torch.nonzero(~torch.isfinite(losses)).flatten()
    if len(non_finite):
        raise NonFiniteLossError(epoch, int(non_finite[0]) + 1, float(losses[non_finite[0]]))
    sizes = torch.tensor([len(batch) for batch in batches], dtype=torch.float64)
    total_loss = float((losses.double() * sizes).sum())
    num_classes = logits.shape[1]
    seconds = time.perf_counter() - start
    return dict(_scores(torch.cat(truth).cpu(), torch.cat(predicted).cpu(), total_loss, num_classes), seconds=seconds,
                images_per_second=sum(map(len, batches)) / seconds)


def _placed(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The uint8 images on the training device when they fit in a quarter of its free memory; otherwise (or a
    memory-mapped array on the CPU) they stay where they are and each batch is gathered there, then copied."""
    if device.type == "cpu" or images.device == device:
        return images
    if device.type == "cuda" and images.numel() > torch.cuda.mem_get_info(device)[0] // 4:
        return images
    return images.to(device)


def _scores(truth: torch.Tensor, predicted: torch.Tensor, total_loss: float, num_classes: int | None = None) -> dict:
    labels = list(range(num_classes)) if num_classes else None
    return dict(loss=total_loss / len(truth), accuracy=float((truth == predicted).float().mean()),
                macro_f1=float(f1_score(truth.numpy(), predicted.numpy(), average="macro", labels=labels,
                                        zero_division=0)))


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int = 128,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits (float32, on the CPU) of uint8 images: eval mode, no augmentation, in batches."""
    device = torch.device(device) if device else next(model.parameters()).device
    images = torch.as_tensor(images)
    was_training = model.training
    model.eval()
    precision = Precision(torch.float16 if device.type == "cuda" else None, False)
    try:
        out = []
        for chunk in torch.split(images, batch_size):
            with autocast_for(device, precision):
                out.append(model(normalize(chunk.to(device), model.normalization)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def predict_proba(model: nn.Module, images: torch.Tensor, *, batch_size: int = 128,
                  device: torch.device | str | None = None) -> np.ndarray:
    """Softmax probabilities (N x classes) of uint8 images, on the model's device unless ``device``."""
    return torch.softmax(predict_logits(model, images, batch_size=batch_size, device=device), 1).numpy()


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 128) -> dict:
    """Loss (plain cross-entropy, comparable across label smoothing), accuracy and macro-F1 of a split."""
    logits = predict_logits(model, images, batch_size=batch_size)
    truth = labels.cpu()
    loss = F.cross_entropy(logits, truth, reduction="sum").item()
    return _scores(truth, logits.argmax(1), loss, num_classes=logits.shape[1])


# ------------------------------------------------------------------------------------------- checkpoints

def _plain(value):
    """Metadata as JSON-able plain values (numpy scalars, paths, tuples...): what weights_only can read."""
    def default(obj):
        if isinstance(obj, (np.generic, torch.Tensor)) and np.ndim(obj) == 0:
            return obj.item()
        if isinstance(obj, (np.ndarray, torch.Tensor)):
            return obj.tolist()
        if isinstance(obj, (Path, torch.device, torch.dtype)):
            return str(obj)
        raise TypeError(f"checkpoint metadata cannot hold {type(obj).__name__}: {obj!r}")
    return json.loads(json.dumps(value, default=default))


def _atomic_save(obj, path: Path) -> None:
    """torch.save through a temporary file renamed into place: readers never see half a checkpoint."""
    with fileio.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | os.PathLike, model: nn.Module | None, metadata: dict, **extra) -> Path:
    """Write ``model``'s weights (CPU tensors), its metadata and ``extra`` entries atomically to ``path``."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()} if model is not None else None
    _atomic_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "state_dict": state,
                  "metadata": _plain(metadata), **extra}, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The whole checkpoint dictionary, or :class:`CheckpointError` naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save's format is a zip archive
        raise CheckpointError(f"{path} is not a checkpoint: not a file written by torch.save")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path} is refused: it holds Python objects other than tensors and plain values, "
                              f"which a checkpoint never does (loading them could run code): "
                              f"{str(error).splitlines()[-1][:200]}") from None
    except Exception as error:  # a damaged archive, a zip of something else, ...
        raise CheckpointError(f"{path} is not a readable checkpoint: {type(error).__name__}: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a bloodlib checkpoint (no format marker)")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {checkpoint.get('version')}, "
                              f"this bloodlib reads version {CHECKPOINT_VERSION}")
    return checkpoint


def check_metadata(path: str | os.PathLike, metadata: dict, *, model_name: str | None = None,
                   classes: list[str] | None = None, image_size: int | tuple[int, int] | None = None) -> None:
    """Refuse a checkpoint made for another model, class list or image size, naming the file and the field."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    expected = {"model": model_name, "classes": list(classes) if classes is not None else None,
                "image_size": list(image_size) if image_size is not None else None}
    for key, want in expected.items():
        if want is not None and metadata.get(key) != want:
            raise CheckpointError(f"{path} was made for {key} {metadata.get(key)!r}, expected {want!r}")


def load_checkpoint(path: str | os.PathLike, *, model_name: str | None = None, classes: list[str] | None = None,
                    image_size: int | tuple[int, int] | None = None) -> tuple[dict, dict]:
    """``(state_dict, metadata)`` of a checkpoint, refused if it does not match what is expected."""
    checkpoint = read_checkpoint(path)
    metadata = checkpoint["metadata"]
    if checkpoint["state_dict"] is None:
        raise CheckpointError(f"{path} holds no weights (a finished run's last.pt): use best.pt")
    check_metadata(path, metadata, model_name=model_name, classes=classes, image_size=image_size)
    metadata["image_size"] = tuple(metadata["image_size"])
    return checkpoint["state_dict"], metadata


def load_model(path: str | os.PathLike, *, device: torch.device | str | None = None, **expect) -> nn.Module:
    """The model of a checkpoint, built with ``create_model(pretrained=False)``, in eval mode.

    ``expect`` (model_name, classes, image_size) refuses checkpoints made for something else. The metadata
    is kept on the model as ``model.checkpoint_metadata``.
    """
    state_dict, metadata = load_checkpoint(path, **expect)
    if "model" not in metadata or "classes" not in metadata:
        raise CheckpointError(f"{path} does not say which model and classes it holds")
    model = create_model(metadata["model"], len(metadata["classes"]), pretrained=False)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: its weights do not fit {metadata['model']!r}: {error}") from None
    model.pretrained_source = metadata.get("pretrained_source", "scratch")
    model.normalization = metadata.get("normalization", model.normalization)
    model.checkpoint_metadata = metadata
    return model.to(device or "cpu").eval()


# ---------------------------------------------------------------------------------------------------- fit

def _run_metadata(model: nn.Module, data: ImageSet, cfg: TrainConfig, precision: Precision, extra: dict | None) -> dict:
    h, w = data.image_size
    metadata = dict(extra or {})
    metadata.setdefault("mode", "crop" if h == w else "full")  # crops are square, full smears 4:3
    metadata.update(model=model.model_name, classes=list(data.classes), image_size=[h, w], seed=cfg.seed,
                    pretrained_source=model.pretrained_source, normalization=model.normalization,
                    precision=precision.name, train_config=dataclasses.asdict(cfg))
    return _plain(metadata)


def _new_state() -> dict:
    return dict(epoch=0, best_epoch=0, best_f1=-1.0, best_loss=math.inf, bad_epochs=0, stopped=False, history=[])


def _make_mixup(cfg: TrainConfig, num_classes: int):
    """timm's Mixup (batch mode; label smoothing moves into its soft targets), or None when both alphas are 0."""
    if not (cfg.mixup_alpha or cfg.cutmix_alpha):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, label_smoothing=cfg.label_smoothing,
                 num_classes=num_classes)


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (Mixup's blended one-hot labels)."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def _make_ema(model: nn.Module, decay: float):
    """timm's ModelEmaV3 of ``model`` (parameters and BatchNorm buffers), or None when ``decay`` is 0."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)


def _resume(path: Path, model, optimizer, scheduler, scaler, metadata: dict, ema=None) -> tuple[dict, dict | None]:
    """Train state and best weights of an interrupted run; refuse one made with another set-up."""
    checkpoint = read_checkpoint(path)
    saved = checkpoint["metadata"]
    check_metadata(path, saved, model_name=metadata["model"], classes=metadata["classes"],
                   image_size=metadata["image_size"])
    changed = {k: (v, metadata["train_config"].get(k)) for k, v in saved["train_config"].items()
               if metadata["train_config"].get(k) != v}
    if changed:
        raise CheckpointError(f"{path} was made with another training set-up; (saved, now): {changed}")
    state = checkpoint["train_state"]
    best = None
    # best.pt is written at every improvement, last.pt only every save_every seconds: best.pt may come from an
    # epoch after last.pt's, which is then trained again (the same way: its draws are seeded per epoch)
    if state["best_epoch"]:
        best, _ = load_checkpoint(path.with_name(BEST), model_name=metadata["model"], classes=metadata["classes"],
                                  image_size=metadata["image_size"])
    if checkpoint["state_dict"] is not None:  # an interrupted run: continue from its last epoch
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"])
        if ema is not None:
            ema.module.load_state_dict(checkpoint["ema"])
    return state, best


def fit(model: nn.Module, data: ImageSet, train_idx, val_idx, cfg: TrainConfig, *, out_dir: str | os.PathLike | None = None,
        metadata: dict | None = None, device: torch.device | str | None = None, resume: bool = False,
        progress: bool = True, callback: Callable[[int, dict], None] | None = None,
        save_every: float = 60.0) -> FitResult:
    """Train ``model`` (from :func:`~bloodlib.models.create_model`) on ``data[train_idx]``, select and stop on
    ``data[val_idx]``; the model ends with the best epoch's weights, in eval mode.

    The training positions go through ``data.training_indices`` (oversampling) and augmentation; the
    validation positions never do. ``metadata`` (e.g. mode, fold) is saved in the checkpoints; with
    ``resume`` an interrupted run in ``out_dir`` continues where its ``last.pt`` left it; ``last.pt`` is
    rewritten when ``save_every`` seconds have passed since it was last written (0: after every epoch), so an
    interruption costs at most that much training. ``callback(epoch, row)`` runs after each epoch. Seed the
    global RNG before ``create_model`` for repeatable initial weights.
    """
    if not hasattr(model, "model_name"):
        raise TypeError(f"fit trains models made by bloodlib.models.create_model, got a bare {type(model).__name__}")
    device = config.select_device(str(device) if device else None)
    check_input_size(model.model_name, data.image_size)
    val_idx = np.asarray(val_idx)
    if len(val_idx) == 0:
        raise ValueError("fit needs validation images (val_idx is empty) to select the best epoch")
    config.seed_everything(cfg.seed)
    precision = choose_precision(model.model_name, device, cfg)
    metadata = _run_metadata(model, data, cfg, precision, metadata)
    out_dir = Path(out_dir) if out_dir is not None else None
    model.to(device, memory_format=torch.channels_last if precision.channels_last else torch.contiguous_format)
    images, labels = _placed(data.images, device), data.labels.to(device)
    train_positions = torch.as_tensor(data.training_indices(np.asarray(train_idx), cfg.oversample))
    val_images, val_labels = images[torch.as_tensor(val_idx)], labels[torch.as_tensor(val_idx)]
    steps_per_epoch = max(1, len(train_positions) // cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.autocast == torch.float16)
    mixer = _make_mixup(cfg, len(data.classes))
    criterion = _soft_cross_entropy if mixer is not None else nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    # the averaged weights are what is validated, selected and kept: smoother than any single step's
    ema = _make_ema(model, cfg.ema_decay)
    judged = ema.module if ema is not None else model
    state, best_weights = _new_state(), None
    if resume and out_dir is not None and (out_dir / LAST).is_file():
        state, best_weights = _resume(out_dir / LAST, model, optimizer, scheduler, scaler, metadata, ema)
    started, train_images, train_time, last_saved = time.perf_counter(), 0, 0.0, -math.inf
    epochs = tqdm(range(state["epoch"] + 1, cfg.epochs + 1), desc=model.model_name, disable=not progress)
    with deterministic():
        for epoch in epochs:
            if state["stopped"]:
                break
            start = time.perf_counter()
            train = train_one_epoch(model, images, labels, train_positions, optimizer=optimizer, scheduler=scheduler,
                                    scaler=scaler, criterion=criterion, cfg=cfg, precision=precision, epoch=epoch,
                                    ema=ema, mixer=mixer, progress=progress)
            val = evaluate(judged, val_images, val_labels, batch_size=cfg.eval_batch_size)
            row = dict(epoch=epoch, **{f"train_{k}": train[k] for k in ("loss", "accuracy", "macro_f1")},
                       **{f"val_{k}": v for k, v in val.items()}, lr=optimizer.param_groups[0]["lr"],
                       seconds=time.perf_counter() - start, images_per_second=train["images_per_second"])
            state["history"].append(row)
            train_images += train["images_per_second"] * train["seconds"]
            train_time += train["seconds"]
            best_weights = _update_best(state, row, judged, metadata, out_dir) or best_weights
            state["epoch"], state["stopped"] = epoch, state["bad_epochs"] >= cfg.patience
            if out_dir is not None and time.perf_counter() - last_saved >= save_every:
                _save_last(out_dir / LAST, model, metadata, state, optimizer, scheduler, scaler, ema)
                last_saved = time.perf_counter()
            epochs.set_postfix(val_f1=f"{val['macro_f1']:.3f}", best=state["best_epoch"])
            if callback is not None:
                callback(epoch, row)
    state["stopped"] = True
    if out_dir is not None:  # finished: a record of the run without weights replaces the resumable state
        save_checkpoint(out_dir / LAST, None, metadata, kind="last", train_state=_plain(state))
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    best_row = history.loc[history["epoch"] == state["best_epoch"]].iloc[0]
    return FitResult(history=history, best_epoch=state["best_epoch"],
                     best_val={k: float(best_row[f"val_{k}"]) for k in ("loss", "accuracy", "macro_f1")},
                     checkpoint=out_dir / BEST if out_dir is not None else None,
                     train_seconds=time.perf_counter() - started, device=str(device),
                     images_per_second=train_images / train_time if train_time else float("nan"),
                     precision=precision.name)


def _update_best(state: dict, row: dict, model: nn.Module, metadata: dict, out_dir: Path | None) -> dict | None:
    """Early stopping's bookkeeping: a better macro-F1 (ties: lower loss) saves best.pt and returns the weights."""
    better = row["val_macro_f1"] > state["best_f1"] or (
        row["val_macro_f1"] == state["best_f1"] and row["val_loss"] < state["best_loss"])
    if not better:
        state["bad_epochs"] += 1
        return None
    state.update(best_epoch=row["epoch"], best_f1=row["val_macro_f1"], best_loss=row["val_loss"], bad_epochs=0)
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if out_dir is not None:
        metrics = {k[4:]: row[k] for k in ("val_loss", "val_accuracy", "val_macro_f1")}
        save_checkpoint(out_dir / BEST, model, {**metadata, "epoch": row["epoch"], "metrics": metrics}, kind="best")
    return weights


def _save_last(path: Path, model, metadata, state, optimizer, scheduler, scaler, ema=None) -> None:
    extra = {"ema": {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}} if ema is not None else {}
    save_checkpoint(path, model, metadata, kind="last", train_state=_plain(state), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), rng=torch.get_rng_state(), **extra)


# ------------------------------------------------------------------------------------------ synthetic data

def toy_imageset(counts: tuple[int, ...] = (16, 16, 16, 16), size: int | tuple[int, int] = 32, *,
                 separable: bool = True, seed: int = 0) -> ImageSet:
    """A synthetic ImageSet for tests and benchmarks: ``counts[k]`` images of class k, each a colour of its
    class plus noise (``separable``) or pure noise. Splits 60/20/20 % per class (train/val/test), 2 folds."""
    h, w = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    colours = torch.rand(len(counts), 3, generator=generator) * 200 + 28
    noise = torch.randn(len(labels), 3, h, w, generator=generator) * 30
    base = colours[labels].view(-1, 3, 1, 1) if separable else torch.full((len(labels), 3, 1, 1), 128.0)
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    rank = torch.cat([torch.arange(c) / c for c in counts]).numpy()  # position within its class, in [0, 1)
    split = np.select([rank < 0.6, rank < 0.8], ["train", "val"], "test")
    classes = [f"CLASS_{k}" for k in range(len(counts))]
    rows = pd.DataFrame({"id": np.arange(len(labels)), "split": split, "fold": np.arange(len(labels)) % 2,
                         "label": [classes[k] for k in labels]})
    return ImageSet(images=images, labels=labels.long(), classes=classes, rows=rows)
