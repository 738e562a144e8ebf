"""A trained checkpoint scored on another labelled dataset (``bloodlib evaluate``), and test-time ways of
narrowing the gap between the two labs, measured before and after on the same images.

The target dataset is prepared as every notebook prepares it (:func:`bloodlib.data.datasets.prepare`: cleaned,
decoded, cached) at the checkpoint's image size and mode. Class names meet through
:mod:`bloodlib.data.classes`: only images of the classes both sides have are scored, with the model's outputs
restricted to those classes (softmax over their logits), and what was left out on each side is said. The
result is an ordinary :class:`bloodlib.evaluation.Evaluation` (classes: the canonical names), so
:func:`~bloodlib.evaluation.evaluation_ci`, :func:`~bloodlib.evaluation.per_class_table` and
:func:`~bloodlib.evaluation.confusion_tables` apply unchanged; where the target's images share source groups
(kaggle-augmented) the intervals resample whole groups.

Adaptations (``adapt``), applied in this order whatever order they are given in:

- ``"reinhard"`` / ``"macenko"``: each target image's colours are normalised towards the source dataset's
  (Reinhard et al. 2001: LAB means and spreads; Macenko et al. 2009: stain vectors and concentrations),
  with torchstain fitted on a mosaic of up to :data:`REFERENCE_IMAGES` source images;
- ``"adabn"``: AdaBN (Li et al. 2016), a copy of the model whose BatchNorm statistics are re-estimated on
  the target images (running statistics reset, a cumulative average over one pass in train mode, no
  gradients). It reads the images only, never their labels: every image of the chosen part, of every
  class, as an unlabelled deployment would see them.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchstain.torch.normalizers import TorchMacenkoNormalizer, TorchReinhardNormalizer
from torchstain.torch.utils.rgb2lab import rgb2lab
from torchstain.torch.utils.split import lab_split

from bloodlib.data import classes, datasets, images
from bloodlib import config, evaluation
from bloodlib.models.checkpoints import CheckpointError, load_model
from bloodlib.models.inference import normalize, predict_logits
from bloodlib.utils.progress import progress_bar

STAIN_METHODS = ("reinhard", "macenko")
ADAPTATIONS = (*STAIN_METHODS, "adabn")  # the order they are applied in
REFERENCE_IMAGES = 256  # source images the stain normaliser is fitted on (seeded sample)
SHOWN = ("accuracy", "balanced_accuracy", "macro_f1")  # what the command prints
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclasses.dataclass
class CrossDataset:
    """What a cross-dataset score rests on: the images, the classes compared, and what was left out."""
    checkpoint: str
    model: str
    trained_on: str | None  # the checkpoint's dataset, where its metadata says
    dataset: str
    mode: str
    image_size: tuple[int, int]
    split: str | None  # None: every image of the dataset; else the test part of this split
    classes: list[str]  # canonical names of the shared classes: the evaluation's classes
    model_only: list[str]  # the model's classes the dataset lacks (its own spelling)
    dataset_left_out: pd.DataFrame  # the dataset's classes the model lacks: class left out, images
    n_selected: int  # images of the chosen part, every class
    n_images: int  # of them scored (the shared classes)
    adapt: list[str]
    notes: list[str]  # what an adaptation could not do
    reference: str | None = None  # the source images a stain normaliser was fitted on
    before: evaluation.Evaluation | None = None  # without adaptation, on the same images (None without adapt)
    cleaning: dict = dataclasses.field(default_factory=dict)  # files listed, and images each cleaning step dropped

    @property
    def images_left_out(self) -> int:
        return self.n_selected - self.n_images

    def as_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "model": self.model, "trained_on": self.trained_on,
                "dataset": self.dataset, "split": self.split, "mode": self.mode, "image_size": list(self.image_size),
                "n_selected": self.n_selected, "n_images": self.n_images, "shared_classes": self.classes,
                "left_out": {"model_classes": self.model_only,
                             "dataset_classes": self.dataset_left_out["images"].astype(int).to_dict(),
                             "images": self.images_left_out},
                "cleaning": self.cleaning, "adapt": self.adapt, "reference": self.reference, "notes": self.notes}


# ---------------------------------------------------------------------------------------------- scoring

def evaluate_checkpoint(checkpoint: str | Path, settings: config.Settings, *, adapt: str | Sequence[str] | None = None,
                        split: str | None = None, reference: config.Settings | torch.Tensor | None = None,
                        device: torch.device | str | None = None, batch_size: int = 128,
                        progress: bool = False) -> tuple[evaluation.Evaluation, CrossDataset]:
    """Score ``checkpoint`` on ``settings.dataset``: an :class:`~bloodlib.evaluation.Evaluation` over the classes
    both share, and the :class:`CrossDataset` details.

    ``settings`` names the target (dataset, data_dir, seed, folds); its mode, image size and crop margin are
    the checkpoint's. ``split``: score only the test part of this split of the target (a name of
    ``prepare(settings).splits``: ``"holdout"``, ``"fold 1/4, repeat 1"``, ...); default every image.
    ``adapt``: any of :data:`ADAPTATIONS`; the unadapted evaluation on the same images is then in
    ``details.before``. ``reference``: the source images a stain normaliser is fitted to, as the Settings of a
    dataset or uint8 images (default: the dataset the checkpoint's metadata names, found as ``resolve`` finds it).
    """
    steps = adaptation_steps(adapt)
    device = config.select_device(str(device) if device else None)
    model = load_model(checkpoint, device=device)
    metadata = model.checkpoint_metadata
    target = target_settings(metadata, settings)
    # every image is scored unsplit: a class of a few images is scored too, not dropped as too small to split
    prepared = datasets.prepare(target, progress=progress, split_parts=split is not None)
    data = prepared.data
    selected = _selected(prepared, split)
    try:
        shared = classes.shared(metadata["classes"], data.classes)
    except ValueError:
        raise ValueError(f"{checkpoint} ({metadata['model']}, classes {metadata['classes']}) and dataset "
                         f"{target.dataset!r} (classes {data.classes}) share no class (names compared by "
                         f"bloodlib.data.classes.canonical)") from None
    columns = _columns(metadata["classes"], shared, checkpoint)
    target_names = np.asarray(data.classes)[data.labels.numpy()[selected]]
    mask, left_out = classes.restriction(target_names, shared)
    scored = selected[mask.to_numpy()]
    if len(scored) == 0:
        raise ValueError(f"dataset {target.dataset!r}{f' (test part of {split})' if split else ''} holds no image of "
                         f"the shared classes {shared}")
    y_true = [shared.index(classes.canonical(c)) for c in np.asarray(data.classes)[data.labels.numpy()[scored]]]
    details = CrossDataset(
        checkpoint=str(checkpoint), model=metadata["model"], trained_on=trained_on(metadata),
        dataset=target.dataset, mode=target.mode, image_size=tuple(metadata["image_size"]), split=split,
        classes=shared, model_only=[c for c in metadata["classes"] if classes.canonical(c) not in shared],
        dataset_left_out=left_out, n_selected=len(selected), n_images=len(scored), adapt=steps, notes=[],
        cleaning=prepared.cleaning.summary())
    if target.mode == "crop" and "box_source" in data.rows:  # a folder of the user's: framed by the stain
        centred = int((data.rows["box_source"].to_numpy()[scored] == "centre").sum())
        if centred:
            details.notes.append(f"{centred} of the {len(scored)} images scored show no stained cell: each was cut "
                                 f"to its centred square, not around a white cell (bloodlib.data.images.stain_box)")

    def score(net: nn.Module, pixels: torch.Tensor, adapted: list[str]) -> evaluation.Evaluation:
        logits = predict_logits(net, pixels, batch_size=batch_size, device=device)
        return evaluation.Evaluation(
            model=metadata["model"], classes=shared, y_true=y_true, y_prob=torch.softmax(logits[:, columns], 1).numpy(),
            ids=data.rows["id"].to_numpy()[scored], groups=data.rows["group"].to_numpy()[scored],
            pretrained_source=metadata.get("pretrained_source"),
            extra={"checkpoint": str(checkpoint), "trained_on": trained_on(metadata), "dataset": target.dataset,
                   "split": split, "adapt": adapted})

    if not steps:
        return score(model, data.images[torch.as_tensor(scored)], []), details
    shown = data.images[torch.as_tensor(selected)]  # everything adaptation may look at: no labels used
    kept = torch.as_tensor(np.flatnonzero(mask.to_numpy()))
    details.before = score(model, shown[kept], [])
    source = None
    if any(s in STAIN_METHODS for s in steps):
        source, details.reference = _reference_images(reference, target, metadata, progress)
    model, shown, details.notes = apply_adaptations(model, shown, steps, reference=source, batch_size=batch_size,
                                                    device=device, progress=progress)
    return score(model, shown[kept], steps), details


def apply_adaptations(model: nn.Module, images: torch.Tensor, steps: Sequence[str], *,
                      reference: torch.Tensor | None = None, batch_size: int = 128,
                      device: torch.device | str | None = None, progress: bool = False
                      ) -> tuple[nn.Module, torch.Tensor, list[str]]:
    """The adaptations ``steps`` (:func:`adaptation_steps`) applied to ``model`` and the target ``images`` (uint8,
    every image the adaptation may look at, labels never used): the images stain-normalised towards
    ``reference`` (uint8 source images, needed by a stain method), then the model's BatchNorm statistics
    re-estimated on them (a copy; ``model`` is not touched). Returns the model, the images and notes on what an
    adaptation could not do."""
    notes = []
    method = next((s for s in steps if s in STAIN_METHODS), None)
    if method is not None:
        if reference is None:
            raise ValueError(f"{method} needs reference images of the source to normalise towards")
        fitted = stain_normalizer(method, reference)
        images, unchanged = stain_normalize(images, fitted, method, progress=progress)
        if unchanged:
            notes.append(f"{method}: {unchanged} of {len(images)} images have no colour spread to "
                         f"normalise (flat or grey) and were left as they are")
    if "adabn" in steps:
        model, layers = adabn(model, images, batch_size=batch_size, device=device)
        if layers == 0:
            name = getattr(model, "model_name", type(model).__name__)
            notes.append(f"adabn: {name} has no BatchNorm layer; the model is left as it is")
    return model, images, notes


def trained_on(metadata: dict) -> str | None:
    """What a checkpoint trained on, as its metadata says: a dataset, or several labs joined by ``+``."""
    return metadata.get("dataset") or ("+".join(metadata["labs"]) if metadata.get("labs") else None)


def target_settings(metadata: dict, settings: config.Settings) -> config.Settings:
    """``settings`` with the checkpoint's mode, image size and crop margin; a different one the caller asked
    for is refused (the model could only be fed images it was not trained on)."""
    height, width = metadata["image_size"]
    mode = metadata.get("mode", "crop" if height == width else "full")
    if images.target_size(mode, height) != (height, width):
        raise CheckpointError(f"checkpoint image size {height}x{width} is not a shape {mode!r} images are cached at "
                              f"({images.target_size(mode, height)})")
    for name, own in (("mode", mode), ("image_size", height)):
        asked = settings.requested.get(name)
        if asked is not None and asked != own:
            raise ValueError(f"the checkpoint was trained on {name} {own!r}; {name}={asked!r} would feed it "
                             f"other images: leave {name} unset")
    margin = metadata.get("crop_margin", settings.crop_margin)
    return config.resolve(settings.profile, settings.data_dir, settings.output_dir, model=settings.model,
                          **{**settings.requested, "mode": mode, "image_size": height, "crop_margin": margin})


def adaptation_steps(adapt: str | Sequence[str] | None) -> list[str]:
    """``adapt`` (a name of :data:`ADAPTATIONS`, several, or None) as the list :func:`apply_adaptations` applies,
    in its order; unknown names and two stain normalisations at once are refused."""
    asked = [adapt] if isinstance(adapt, str) else list(adapt or [])
    unknown = sorted(set(asked) - set(ADAPTATIONS))
    if unknown:
        raise ValueError(f"unknown adaptation(s) {unknown}: expected some of {list(ADAPTATIONS)}")
    if len(set(asked) & set(STAIN_METHODS)) > 1:
        raise ValueError(f"one stain normalisation at a time, got {[a for a in asked if a in STAIN_METHODS]}")
    return [a for a in ADAPTATIONS if a in asked]


def _selected(prepared: datasets.Prepared, split: str | None) -> np.ndarray:
    """Positions scored: every image, or the test part of the split named ``split``."""
    if split is None:
        return np.arange(len(prepared.data))
    names = [s.name for s in prepared.splits]
    if split not in names:
        raise ValueError(f"no split {split!r} in dataset {prepared.settings.dataset!r}: expected one of {names}")
    return np.sort(prepared.splits[names.index(split)].test)


def _columns(model_classes: list[str], shared: list[str], checkpoint) -> list[int]:
    """The model's output column of each shared class."""
    names = [classes.canonical(c) for c in model_classes]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"{checkpoint}: the model's classes {model_classes} name {doubled} twice once compared "
                         f"(bloodlib.data.classes.canonical): which output is which is ambiguous")
    return [names.index(c) for c in shared]


# ------------------------------------------------------------------------------------------------ AdaBN

@torch.no_grad()
def adabn(model: nn.Module, images: torch.Tensor, *, batch_size: int = 128,
          device: torch.device | str | None = None) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every BatchNorm layer's running statistics re-estimated on ``images``
    (uint8 N x 3 x H x W), and how many layers that was (0: no BatchNorm, the copy is unchanged).

    Statistics are reset and ``momentum=None`` makes them the plain average over one pass in batches of
    about ``batch_size`` (sizes differ by at most one, so none holds a lone image); only the BatchNorm
    layers run in train mode (dropout stays off). The copy ends in eval mode; ``model`` is not touched.
    """
    adapted = copy.deepcopy(model).eval()
    device = torch.device(device) if device else next(adapted.parameters()).device
    norms = [m for m in adapted.modules() if isinstance(m, BATCH_NORMS)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for chunk in torch.tensor_split(images, max(1, math.ceil(len(images) / batch_size))):
        adapted(normalize(chunk.to(device), adapted.normalization))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return adapted.eval(), len(norms)


# ------------------------------------------------------------------------------------ stain normalisation

def stain_normalizer(method: str, reference: torch.Tensor):
    """A torchstain normaliser (``"reinhard"`` or ``"macenko"``) fitted on ``reference`` (uint8 N x 3 x H x W)
    laid side by side as one mosaic: the pooled colour statistics of the source images."""
    normalizers = {"reinhard": TorchReinhardNormalizer, "macenko": TorchMacenkoNormalizer}
    if method not in normalizers:
        raise ValueError(f"unknown stain normalisation {method!r}: expected one of {list(normalizers)}")
    if reference.dtype != torch.uint8 or reference.ndim != 4 or len(reference) == 0:
        raise ValueError(f"reference images must be uint8 N x 3 x H x W, got {reference.dtype} "
                         f"{tuple(reference.shape)}")
    fitted = normalizers[method]()
    fitted.fit(torch.cat(list(reference), dim=2))
    return fitted


def stain_normalize(images: torch.Tensor, normalizer, method: str, *, progress: bool = False
                    ) -> tuple[torch.Tensor, int]:
    """Each image (uint8 N x 3 x H x W) normalised by the fitted torchstain ``normalizer`` (a copy), and how
    many were left as they were: without colour spread (flat or grey) the LAB standardisation divides by
    zero and Macenko finds no stained pixel."""
    out = images.clone()
    unchanged = 0
    for i in progress_bar(range(len(images)), desc=method, disable=not progress, leave=False):
        image = images[i]
        if _colourless(image):
            unchanged += 1
            continue
        if method == "reinhard":
            result = normalizer.normalize(image)
        else:
            try:
                result = normalizer.normalize(image, stains=False)[0]
            except (IndexError, RuntimeError):  # no pixel above the stain threshold: nothing to normalise
                unchanged += 1
                continue
        out[i] = result.clamp(0, 255).to(torch.uint8).permute(2, 0, 1)  # torchstain returns H x W x 3
    return out, unchanged


def _colourless(image: torch.Tensor) -> bool:
    """Whether some LAB channel of ``image`` is constant (its standardisation would divide by zero)."""
    return any(float(channel.std()) < 1e-3 for channel in lab_split(rgb2lab(image.float() / 255)))


def _reference_images(reference, target: config.Settings, metadata: dict, progress: bool, *,
                      limit: int = REFERENCE_IMAGES) -> tuple[torch.Tensor, str]:
    """Up to ``limit`` source images (a seeded sample) at the checkpoint's size and mode, and what they are; for
    a checkpoint trained on several labs (its metadata's ``labs``), as many of each lab's."""
    if reference is None and metadata.get("labs") and not metadata.get("dataset"):  # trained on several labs
        each = limit // len(metadata["labs"])  # the same number from each: no lab sets the colours
        parts = [_reference_images(config.resolve(target.profile, None, target.output_dir, dataset=lab), target,
                                   metadata, progress, limit=each)[0] for lab in metadata["labs"]]
        return torch.cat(parts), f"{' + '.join(metadata['labs'])}: up to {each} images of each"
    if reference is None:
        if not metadata.get("dataset"):
            raise ValueError("stain normalisation needs the source images: the checkpoint's metadata names no "
                             "dataset, so pass reference= (the Settings of its training dataset, or images)")
        reference = config.resolve(target.profile, None, target.output_dir, dataset=metadata["dataset"])
    name = "the images given"
    if isinstance(reference, config.Settings):
        name = reference.dataset
        reference = datasets.prepare(target_settings(metadata, reference), progress=progress).data.images
    reference = torch.as_tensor(reference)
    total = len(reference)
    if total > limit:
        chosen = np.random.default_rng(target.seed).choice(total, limit, replace=False)
        reference = reference[torch.as_tensor(np.sort(chosen))]
    return reference, f"{name}: {len(reference)} of its {total} images"


# ------------------------------------------------------------------------------------------ what is shown

def summary(ev: evaluation.Evaluation, details: CrossDataset, *, n: int = 2000, seed: int = 0) -> dict:
    """Everything the command prints: the details, the shown metrics with bootstrap intervals, per-class
    recall; with an adaptation, the same before it and the paired test of the change."""
    out = {**details.as_dict(), **_scores(ev, n=n, seed=seed)}
    if details.before is not None:
        out["before"] = _scores(details.before, n=n, seed=seed)
        change = evaluation.pairwise_mcnemar({"before": details.before, "after": ev}).iloc[0]
        out["change"] = {**{m: out[m]["value"] - out["before"][m]["value"] for m in SHOWN},
                         **{k: change[k] for k in ("n01", "n10", "p_value", "method")}}
    return evaluation.jsonable(out)


def _scores(ev: evaluation.Evaluation, *, n: int, seed: int) -> dict:
    ci = evaluation.evaluation_ci(ev, n=n, seed=seed)
    per_class = evaluation.per_class_table(ev.y_true, ev.y_prob, ev.classes)
    return {**{m: ci.loc[m, ["value", "low", "high"]].astype(float).to_dict() for m in SHOWN},
            "ci_method": ci.attrs["method"],
            "per_class": per_class[["recall", "support"]].astype({"support": int}).to_dict(orient="index")}
