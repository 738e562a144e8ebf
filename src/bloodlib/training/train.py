"""One training loop for every model of the study: :func:`fit`.

The decoded images stay a uint8 tensor (an :class:`~bloodlib.data.datasets.ImageSet`) on the training device;
each step gathers a batch, augments it as a whole (:func:`bloodlib.training.augment.augment_batch`), normalises it
and takes an AdamW step under a one-cycle schedule, in the precision :mod:`bloodlib.models.precision` chooses for
the model and device. The run keeps either the epoch of the best validation macro-F1 (and stops early) or,
with ``keep_epoch="last"``, the last epoch of a fixed schedule. ``out_dir`` receives ``best.pt`` (the kept
epoch) and ``last.pt`` (what ``resume`` continues from); see
:mod:`bloodlib.models.checkpoints` for what each holds and when it is written.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from bloodlib import config
from bloodlib.config import TrainConfig
from bloodlib.training.augment import COLOUR_JITTER, augment_batch
from bloodlib.models.checkpoints import (BEST, LAST, CheckpointError, check_metadata, load_checkpoint, plain_values, read_checkpoint,
                          save_checkpoint)
from bloodlib.data.datasets import ImageSet
from bloodlib.models import check_input_size, familiarity
from bloodlib.models.precision import Precision, autocast_for, choose_precision, deterministic
from bloodlib.models.inference import normalize, predict_logits, with_input_colour
from bloodlib.utils.progress import progress_bar


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: training cannot go on."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(f"training loss is {value} at epoch {epoch}, step {step}: stopped (check the images "
                         f"for NaN/inf values, or lower the learning rate)")


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns; the model itself holds the kept epoch's weights (``TrainConfig.keep_epoch``)."""
    history: pd.DataFrame  # one row per epoch, see HISTORY_COLUMNS
    kept_epoch: int  # the best on validation, or the last with keep_epoch="last"
    kept_val: dict  # loss, accuracy, macro_f1 of the kept epoch
    checkpoint: Path | None  # best.pt, or None without out_dir
    train_seconds: float  # wall time of all its epochs, those run before a resume included
    device: str
    images_per_second: float  # training images per second of training steps (augmentation included)
    precision: str  # "fp32", "bf16" (CPU autocast) or "fp16" (CUDA autocast + GradScaler)


HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "train_macro_f1", "val_loss", "val_accuracy",
                   "val_macro_f1", "lr", "seconds", "images_per_second"]


# ------------------------------------------------------------------------------------------------ steps

def make_optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """``cfg.optimizer`` (timm's AdamW or SGD: no weight decay on biases and norms) under a one-cycle schedule
    stepped per batch.

    With ``cfg.backbone_lr_scale != 1`` (fine-tuning) the head (``model.get_classifier()``) peaks at
    ``cfg.lr`` and everything else at ``cfg.lr * backbone_lr_scale``: the head's groups come first, so
    ``param_groups[0]["lr"]`` is the head's."""
    import timm.optim

    # the fused kernel: on the CPU it cuts AdamW's step ~10x (945 -> 87 ms for AlexNet's 57M parameters)
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    groups = model if cfg.backbone_lr_scale == 1 else _head_and_backbone_groups(model, cfg)
    optimizer = timm.optim.create_optimizer_v2(groups, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                               fused=fused)
    total = cfg.epochs * steps_per_epoch
    # OneCycleLR's warm-up ends at step pct_start * total - 1: keep it past step 0 (else it divides by zero
    # on short runs) and before the last step
    warmup = min(max(cfg.warmup, 1.5 / total), 0.75)
    peaks = [group["lr"] for group in optimizer.param_groups]  # one per group: the backbone's may be scaled
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=warmup,
                                                    anneal_strategy="cos", cycle_momentum=False)
    return optimizer, scheduler


def _head_and_backbone_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """timm's weight-decay groups (the same rule as for a whole model), each split into head and backbone."""
    import timm.optim

    if not hasattr(model, "get_classifier"):
        raise TypeError(f"backbone_lr_scale needs the model's head: {type(model).__name__} has no get_classifier()")
    head = {id(p) for p in model.get_classifier().parameters()}
    decay_groups = timm.optim.param_groups_weight_decay(
        model, cfg.weight_decay, no_weight_decay_list=getattr(model, "no_weight_decay", lambda: set())())
    groups = []
    for in_head, lr in ((True, cfg.lr), (False, cfg.lr * cfg.backbone_lr_scale)):
        for group in decay_groups:
            params = [p for p in group["params"] if (id(p) in head) == in_head]
            if params:
                groups.append({**group, "params": params, "lr": lr})
    return groups


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
    for batch in progress_bar(batches, desc=f"epoch {epoch}", leave=False, disable=not progress):
        x = images[batch.to(images.device)].to(device, non_blocking=True)
        x = augment_batch(x, generator, enabled=cfg.augment, zoom=cfg.zoom, shift=cfg.shift, stain=cfg.stain_jitter,
                          **jitter)
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


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 128) -> dict:
    """Loss (plain cross-entropy, comparable across label smoothing), accuracy and macro-F1 of a split."""
    return validate(model, images, labels, batch_size=batch_size)[0]


def validate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             batch_size: int = 128) -> tuple[dict, torch.Tensor]:
    """:func:`evaluate`'s scores and the logits behind them (fit reuses them for best.pt's familiarity)."""
    logits = predict_logits(model, images, batch_size=batch_size)
    return _scores_of(logits, labels), logits


def _scores_of(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    truth = labels.cpu()
    loss = F.cross_entropy(logits, truth, reduction="sum").item()
    return _scores(truth, logits.argmax(1), loss, num_classes=logits.shape[1])


# ---------------------------------------------------------------------------------------------------- fit

def _run_metadata(model: nn.Module, data: ImageSet, cfg: TrainConfig, precision: Precision, extra: dict | None) -> dict:
    h, w = data.image_size
    metadata = dict(extra or {})
    metadata.setdefault("mode", "crop" if h == w else "full")  # crops are square, full smears 4:3
    metadata.update(model=model.model_name, classes=list(data.classes), image_size=[h, w], seed=cfg.seed,
                    pretrained_source=model.pretrained_source, initial_weights=model.initial_weights,
                    normalization=model.normalization,
                    precision=precision.name, train_config=dataclasses.asdict(cfg))
    return plain_values(metadata)


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
        progress: bool = True, callback: Callable[[int, dict, nn.Module], None] | None = None,
        save_every: float = 60.0) -> FitResult:
    """Train ``model`` (from :func:`~bloodlib.models.create_model`) on ``data[train_idx]``, validate every epoch
    on ``data[val_idx]``; the model ends with the kept epoch's weights (``cfg.keep_epoch``: the best validation
    macro-F1, with early stopping, or the last), in eval mode.

    The training positions go through ``data.training_indices`` (oversampling) and augmentation; the
    validation positions never do. ``metadata`` (e.g. mode, fold) is saved in the checkpoints; with
    ``resume`` an interrupted run in ``out_dir`` continues where its ``last.pt`` left it; ``last.pt`` is
    rewritten when ``save_every`` seconds have passed since it was last written (0: after every epoch), so an
    interruption costs at most that much training. ``callback(epoch, row, model)`` runs after each epoch with the
    model being validated (the weight average with ``ema_decay``). Seed the
    global RNG before ``create_model`` for repeatable initial weights.
    """
    if not hasattr(model, "model_name"):
        raise TypeError(f"fit trains models made by bloodlib.models.create_model, got a bare {type(model).__name__}")
    device = config.select_device(str(device) if device else None)
    check_input_size(model.model_name, data.image_size)
    val_idx = np.asarray(val_idx)
    if len(val_idx) == 0:
        raise ValueError("fit needs validation images (val_idx is empty) to validate every epoch")
    config.seed_everything(cfg.seed)
    precision = choose_precision(model.model_name, device, channels_last=cfg.channels_last, cpu_bf16=cfg.cpu_bf16,
                                 cuda_autocast=cfg.cuda_autocast)
    # the recipe's input colour becomes the model's: its checkpoint, prediction and AdaBN read images the same way
    model.normalization = with_input_colour(model.normalization, cfg.input_colour)
    metadata = _run_metadata(model, data, cfg, precision, metadata)
    out_dir = Path(out_dir) if out_dir is not None else None
    model.to(device, memory_format=torch.channels_last if precision.channels_last else torch.contiguous_format)
    images, labels = _placed(data.images, device), data.labels.to(device)
    train_positions = torch.as_tensor(data.training_indices(np.asarray(train_idx), cfg.oversample))
    val_images, val_labels = images[torch.as_tensor(val_idx)], labels[torch.as_tensor(val_idx)]
    # best.pt's familiarity reference (models/familiarity.py): the stain of a sample of the training images, now;
    # the kept model's confidence on a sample of the validation images, whenever an epoch is kept
    familiar = None if out_dir is None else (
        familiarity.stain_reference(data.images[torch.as_tensor(familiarity.subsample(train_idx, cfg.seed))]),
        torch.as_tensor(familiarity.subsample(len(val_idx), cfg.seed)))
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
    train_images, train_time, last_saved = 0, 0.0, -math.inf
    # counted by hand, a line per epoch even in a batch run's log (progress.py): the postfix names this epoch
    epochs = progress_bar(total=cfg.epochs, initial=state["epoch"], desc=model.model_name, disable=not progress,
                          mininterval=0, delay=0)
    with deterministic(), epochs:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            if state["stopped"]:
                break
            start = time.perf_counter()
            train = train_one_epoch(model, images, labels, train_positions, optimizer=optimizer, scheduler=scheduler,
                                    scaler=scaler, criterion=criterion, cfg=cfg, precision=precision, epoch=epoch,
                                    ema=ema, mixer=mixer, progress=progress)
            val, val_logits = validate(judged, val_images, val_labels, batch_size=cfg.eval_batch_size)
            row = dict(epoch=epoch, **{f"train_{k}": train[k] for k in ("loss", "accuracy", "macro_f1")},
                       **{f"val_{k}": v for k, v in val.items()}, lr=optimizer.param_groups[0]["lr"],
                       seconds=time.perf_counter() - start, images_per_second=train["images_per_second"])
            state["history"].append(row)
            train_images += train["images_per_second"] * train["seconds"]
            train_time += train["seconds"]
            sample = None if familiar is None else (familiar[0], val_logits[familiar[1]].softmax(1).numpy())
            best_weights = _update_kept(state, row, judged, metadata, out_dir, cfg, sample) or best_weights
            state["epoch"] = epoch
            state["stopped"] = cfg.keep_epoch == "best" and state["bad_epochs"] >= cfg.patience
            if out_dir is not None and time.perf_counter() - last_saved >= save_every:
                _save_last(out_dir / LAST, model, metadata, state, optimizer, scheduler, scaler, ema)
                last_saved = time.perf_counter()
            kept = {"best": state["best_epoch"]} if cfg.keep_epoch == "best" else {}
            epochs.set_postfix(val_f1=f"{val['macro_f1']:.3f}", **kept, refresh=False)
            epochs.update()
            if callback is not None:
                callback(epoch, row, judged)
    state["stopped"] = True
    if out_dir is not None:  # finished: a record of the run without weights replaces the resumable state
        save_checkpoint(out_dir / LAST, None, metadata, kind="last", train_state=plain_values(state))
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    history = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    kept_row = history.loc[history["epoch"] == state["best_epoch"]].iloc[0]
    return FitResult(history=history, kept_epoch=state["best_epoch"],
                     kept_val={k: float(kept_row[f"val_{k}"]) for k in ("loss", "accuracy", "macro_f1")},
                     checkpoint=out_dir / BEST if out_dir is not None else None,
                     # the history's, so a model resumed (or loaded finished) reports what training it took
                     train_seconds=float(history["seconds"].sum()), device=str(device),
                     images_per_second=(train_images / train_time if train_time
                                        else float(history["images_per_second"].mean())),
                     precision=precision.name)


def track_best(state: dict, row: dict) -> bool:
    """Early stopping's bookkeeping for one epoch's ``row``: whether it is the best so far (a better validation
    macro-F1; ties: a lower loss), counting the epochs without one in ``state["bad_epochs"]``."""
    better = row["val_macro_f1"] > state["best_f1"] or (
        row["val_macro_f1"] == state["best_f1"] and row["val_loss"] < state["best_loss"])
    if better:
        _mark_kept(state, row)
    else:
        state["bad_epochs"] += 1
    return better


def early_stopping_epoch(history: pd.DataFrame, patience: int) -> int:
    """The epoch early stopping keeps, replayed on a run's validation ``history`` (:data:`HISTORY_COLUMNS`) with
    ``patience``: what a run that had stopped would have kept (benchmarks/quality.py --replay-selection)."""
    state = _new_state()
    for row in history.to_dict("records"):
        track_best(state, row)
        if state["bad_epochs"] >= patience:
            break
    return state["best_epoch"]


def _mark_kept(state: dict, row: dict) -> None:
    state.update(best_epoch=row["epoch"], best_f1=row["val_macro_f1"], best_loss=row["val_loss"], bad_epochs=0)


def _update_kept(state: dict, row: dict, model: nn.Module, metadata: dict, out_dir: Path | None,
                 cfg: TrainConfig, familiar: tuple | None = None) -> dict | None:
    """The epoch to keep (:func:`track_best`, or the schedule's last) saves best.pt and returns the weights;
    ``familiar`` (stain reference, this epoch's probabilities of the validation sample) goes into best.pt's
    familiarity reference."""
    if cfg.keep_epoch == "best":
        keep = track_best(state, row)
    else:
        keep = row["epoch"] == cfg.epochs
        if keep:
            _mark_kept(state, row)
    if not keep:
        return None
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if out_dir is not None:
        metrics = {k[4:]: row[k] for k in ("val_loss", "val_accuracy", "val_macro_f1")}
        kept = {**metadata, "epoch": row["epoch"], "metrics": metrics}
        if familiar is not None:  # the validation pass already scored the sample: no second pass
            kept["familiarity"] = familiarity.reference(*familiar)
        save_checkpoint(out_dir / BEST, model, kept, kind="best")
    return weights


def _save_last(path: Path, model, metadata, state, optimizer, scheduler, scaler, ema=None) -> None:
    extra = {"ema": {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}} if ema is not None else {}
    save_checkpoint(path, model, metadata, kind="last", train_state=plain_values(state),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                    rng=torch.get_rng_state(), **extra)

