"""How familiar an image is to a trained model: is it stained and photographed like the model's training
images, and is the model as sure of it as of its own validation images?

A model trained in one lab reads another lab's cells badly (macro-F1 0.1-0.5 across labs, notebook 08) and
says so by no sign: its probabilities stay confident. Two checks, both measured when the model is trained
(:func:`reference`, stored in ``best.pt``'s metadata under ``"familiarity"``) and applied to each new image
(:func:`assess`):

- stain: a few colour statistics of each image (:func:`stain_features`: the mean and spread of the optical
  density per channel over its stained pixels) and their Mahalanobis distance to those of the training images
  (mean and Ledoit-Wolf covariance); an image farther than ``STAIN_MARGIN`` times the distance only
  ``1 - STAIN_QUANTILE`` of the training images exceed is "stain unlike the training labs";
- confidence: the largest class probability; below all but a share ``UNSURE_SHARE`` of the validation images'
  (held out from training), "the model is unsure".

The reference is a few dozen numbers (JSON-able) and is built from at most ``REFERENCE_IMAGES`` images of
each kind, drawn with a fixed seed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.spatial.distance import cdist
from sklearn.covariance import LedoitWolf

REFERENCE_VERSION = 1
REFERENCE_IMAGES = 2000  # images per part of the reference: quantiles and a 6 x 6 covariance need no more
FEATURES = [f"od_{stat}_{channel}" for stat in ("mean", "std") for channel in "rgb"]
COLUMNS = ["stain_distance", "stain_ratio", "max_probability", "unfamiliar", "reason"]
STAIN_REASON, UNSURE_REASON = "stain unlike the training labs", "the model is unsure"

# a pixel is stained (cell, not the light background between cells) when its optical densities add up to more
# than this: a grey level of about 200 of 255 on every channel
STAINED_OD = 0.75
# an image with fewer stained pixels than this share (a blank field, an overexposed photo) is described by
# all its pixels instead: its features stay defined
MIN_STAINED = 0.02
# statistics are taken on a grid of at most this many pixels a side: colour statistics need no more
FEATURE_SIDE = 128
# the training images' distance that only 1% exceed, times a margin: the quantile of a few dozen images is itself
# uncertain, and new images lie a little farther than those the mean and covariance were fitted on, while another
# lab's cells lie several times farther. Measured on 96 px crops, references from 20-250 BCCD smears, 20 draws:
# BCCD smears left out were flagged 2.6% (20 in the reference), 0.6% (40), 0% (80 or more) at 1.5 against 17%,
# 7%, 2% at 1.0; PBC cells 100% and DeepAPL cells 97-99% at 1.5 (88-97% at 2.0)
STAIN_QUANTILE = 0.99
STAIN_MARGIN = 1.5
# the share of familiar images called unsure: below the k-th lowest top probability of n validation images, k =
# floor(share * (n + 1)) but at least 1, a new image like them falls with probability k / (n + 1) (they are
# exchangeable: the split-conformal bound), so 1% with 99 validation images or more, 1 / (n + 1) with fewer;
# an image the model reads more vaguely than that is worth a look
UNSURE_SHARE = 0.01


def subsample(positions, seed: int, limit: int = REFERENCE_IMAGES) -> np.ndarray:
    """At most ``limit`` of ``positions`` (an array, or a count meaning ``range(count)``), drawn with ``seed``
    and sorted; all of them when there are no more."""
    positions = np.arange(positions) if np.ndim(positions) == 0 else np.asarray(positions)
    if len(positions) <= limit:
        return positions
    return np.sort(np.random.default_rng(seed).choice(positions, limit, replace=False))


def stain_features(images: torch.Tensor, *, chunk: int = 256) -> np.ndarray:
    """:data:`FEATURES` of uint8 N x 3 x H x W images (N x 6): mean and standard deviation of the optical
    density, OD = -log((I + 1) / 256), per channel over the stained pixels."""
    images = torch.as_tensor(images)
    step = max(1, -(-max(images.shape[2:], default=1) // FEATURE_SIDE))
    out = []
    for part in torch.split(images[..., ::step, ::step], chunk):
        od = -torch.log((part.cpu().float() + 1) / 256)
        stained = od.sum(1, keepdim=True) > STAINED_OD
        few = stained.flatten(1).float().mean(1) < MIN_STAINED
        weights = (stained | few.view(-1, 1, 1, 1)).float()
        count = weights.sum((2, 3))
        mean = (od * weights).sum((2, 3)) / count
        variance = ((od - mean[..., None, None]) ** 2 * weights).sum((2, 3)) / count
        out.append(torch.cat([mean, variance.sqrt()], 1))
    return torch.cat(out).double().numpy() if out else np.empty((0, len(FEATURES)))


def stain_reference(images: torch.Tensor) -> dict:
    """The stain part of a reference, from (a sample of) the training images."""
    features = stain_features(images)
    if len(features) < 2:
        raise ValueError(f"a stain reference needs at least 2 images, got {len(features)}")
    shrunk = LedoitWolf().fit(features)
    # a feature that never varies (synthetic images) would make the covariance singular: a floor far below the
    # spread of any real stain keeps its inverse finite
    covariance = shrunk.covariance_ + 1e-8 * np.eye(len(FEATURES))
    reference = {"features": FEATURES, "mean": shrunk.location_, "covariance": covariance, "n_images": len(features)}
    distances = _mahalanobis(reference, features)
    # floored: identical training images (distance 0) would otherwise make every ratio 0 / 0
    distance = max(float(np.quantile(distances, STAIN_QUANTILE)), 1e-6)
    return {**reference, "quantile": STAIN_QUANTILE, "distance": distance}


def confidence_reference(probabilities: np.ndarray) -> dict:
    """The confidence part of a reference: the model's class probabilities (N x classes) of validation images."""
    top = np.sort(np.asarray(probabilities, dtype=np.float64).max(1))
    if len(top) == 0:
        raise ValueError("a confidence reference needs the probabilities of at least one validation image")
    rank = max(1, int(UNSURE_SHARE * (len(top) + 1)))
    return {"share": UNSURE_SHARE, "rank": rank, "max_probability": float(top[rank - 1]), "n_images": len(top)}


def reference(stain: dict, val_probabilities: np.ndarray) -> dict:
    """The whole reference (JSON-able): ``stain`` from :func:`stain_reference` and the kept model's
    probabilities of the validation images."""
    return {"version": REFERENCE_VERSION, "stain": {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v
                                                    for k, v in stain.items()},
            "confidence": confidence_reference(val_probabilities)}


def _mahalanobis(stain: dict, features: np.ndarray) -> np.ndarray:
    mean = np.asarray(stain["mean"], dtype=np.float64)[None]
    inverse = np.linalg.inv(np.asarray(stain["covariance"], dtype=np.float64))
    return cdist(features, mean, "mahalanobis", VI=inverse)[:, 0] if len(features) else np.empty(0)


def assess(reference: dict, images: torch.Tensor, probabilities: np.ndarray) -> pd.DataFrame:
    """One row per image (:data:`COLUMNS`): the stain distance, its ratio to the limit (above 1: unfamiliar),
    the largest class probability, whether the image is unfamiliar and why ("" when it is familiar)."""
    if reference.get("version") != REFERENCE_VERSION:
        raise ValueError(f"familiarity reference version {reference.get('version')!r}, this bloodlib reads "
                         f"version {REFERENCE_VERSION}")
    distance = _mahalanobis(reference["stain"], stain_features(images))
    ratio = distance / (reference["stain"]["distance"] * STAIN_MARGIN)
    top = np.asarray(probabilities, dtype=np.float64).max(1) if len(distance) else np.empty(0)
    unlike, unsure = ratio > 1, top < reference["confidence"]["max_probability"]
    reason = np.select([unlike & unsure, unlike, unsure], [f"{STAIN_REASON}; {UNSURE_REASON}", STAIN_REASON,
                                                           UNSURE_REASON], "")
    return pd.DataFrame({"stain_distance": distance, "stain_ratio": ratio, "max_probability": top,
                         "unfamiliar": unlike | unsure, "reason": reason}, columns=COLUMNS)
