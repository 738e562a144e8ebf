"""Synthetic image sets for tests and benchmarks: no data download, any size, built in milliseconds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from bloodlib.data.datasets import ImageSet


def toy_imageset(counts: tuple[int, ...] = (16, 16, 16, 16), size: int | tuple[int, int] = 32, *,
                 separable: bool = True, seed: int = 0) -> ImageSet:
    """A synthetic ImageSet: ``counts[k]`` images of class k, each a colour of its class plus noise
    (``separable``) or pure noise. Splits 60/20/20 % per class (train/val/test), 2 folds."""
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
