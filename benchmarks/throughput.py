"""Training throughput: raw train steps against the real training loop, per model and image size.

``raw``: forward, loss, backward and AdamW step on a fixed random batch (no data pipeline at all).
``loop``: :func:`bloodlib.training.train.fit` on cached uint8 images, so with batch gathering, augmentation and
normalisation; its epochs after the first (a warm-up) are timed. ``ratio`` = loop / raw: the data pipeline
is not the bottleneck when it stays near 1 (>= 0.9 on the CPU). Both use the precision ``fit`` chooses.
``pipeline_ms``: gathering, augmenting and normalising one batch alone, the loop's extra work per step.
On a shared machine the best of ``--repeats`` timings is reported (as ``timeit`` does).

    python benchmarks/throughput.py --models resnet18 efficientnet_b0 alexnet --sizes 64 96 128 --steps 8
    python benchmarks/throughput.py --real   # the real image cache (needs the data and datasets.prepare)
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from bloodlib import config
from bloodlib.models.inference import normalize
from bloodlib.training.augment import augment_batch
from bloodlib.models import create_model
from bloodlib.models.precision import autocast_for, choose_precision
from bloodlib.data.synthetic import toy_imageset
from bloodlib.config import TrainConfig
from bloodlib.training.train import fit, make_optimizer


def raw_throughput(name: str, size: tuple[int, int], batch_size: int, steps: int, device: torch.device,
                   repeats: int = 3) -> float:
    """Images per second of bare training steps on one random, already normalised batch (best of repeats)."""
    config.seed_everything(0)
    model = create_model(name, 4, pretrained="scratch").to(device).train()
    cfg = TrainConfig(epochs=1, batch_size=batch_size)
    precision = choose_precision(name, device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = make_optimizer(model, cfg, steps * repeats + 2)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    x = torch.randn(batch_size, 3, *size, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if precision.channels_last else x
    y = torch.randint(0, 4, (batch_size,), device=device)

    def step():
        with autocast_for(device, precision):
            logits = model(x)
        loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.detach()  # kept on the device, as the loop does: read once the timed steps are queued

    float(step() + step())  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        float(sum(step() for _ in range(steps)))  # waits for the device
        best = max(best, steps * batch_size / (time.perf_counter() - start))
    return best


def loop_throughput(name: str, data, train_idx, val_idx, batch_size: int, device: torch.device,
                    repeats: int = 3) -> tuple[float, str]:
    """Images per second of fit's epochs after the first (best of repeats), and the precision it used."""
    config.seed_everything(0)
    model = create_model(name, len(data.classes), pretrained="scratch")
    cfg = TrainConfig(epochs=1 + repeats, batch_size=batch_size, patience=99, oversample=False)
    result = fit(model, data, train_idx, val_idx, cfg, device=device, progress=False)
    return float(result.history["images_per_second"].iloc[1:].max()), result.precision


def pipeline_ms(data, batch_size: int, device: torch.device, repeats: int = 10) -> float:
    """Milliseconds to gather, augment and normalise one training batch (best of repeats)."""
    images, generator = data.images.to(device), torch.Generator().manual_seed(0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        batch = torch.randperm(len(images), generator=generator)[:batch_size].to(device)
        x = normalize(augment_batch(images[batch], generator), {"mean": [0.5] * 3, "std": [0.25] * 3})
        float(x[0, 0, 0, 0])  # wait for the device
        best = min(best, time.perf_counter() - start)
    return best * 1000


def synthetic(size: tuple[int, int], batch_size: int, steps: int):
    """Random uint8 images: ``steps`` full training batches, validated on one batch."""
    n = steps * batch_size
    data = toy_imageset((n // 4 + 1,) * 4, size=size, separable=False)
    return data, np.arange(n), np.arange(batch_size)


def real(name_size: int, mode: str):
    """The real cache at one size (smoke profile settings) and its first split's training and validation
    positions, or None when it cannot be had."""
    try:
        from bloodlib.data.datasets import prepare
    except ImportError:
        return None
    settings = config.resolve("smoke", image_size=name_size, mode=mode)
    prepared = prepare(settings, progress=False)
    first = prepared.splits[0]  # the first training run the notebooks make: its train part, oversampled as they do
    return prepared.data, prepared.data.training_indices(first.train), first.val


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_b0", "alexnet"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128], help="image height (px)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement; the best is kept")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--mode", choices=("crop", "full"), default="crop", help="square or 4:3 images")
    parser.add_argument("--real", action="store_true", help="the loop on the real image cache, not random images")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest available)")
    args = parser.parse_args(argv)
    device = config.select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device}, {torch.get_num_threads()} threads, load average {load:.1f}, batch {args.batch_size}")
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    rows = []
    for size in args.sizes:
        shape = (size, size) if args.mode == "crop" else (size, round(size * 4 / 3))
        source = real(size, args.mode) if args.real else None
        if args.real and source is None:
            print("bloodlib.data.datasets.prepare is not available: synthetic images instead")
        data, train_idx, val_idx = source or synthetic(shape, args.batch_size, args.steps)
        pipeline = pipeline_ms(data, args.batch_size, device)
        for name in args.models:
            raw = raw_throughput(name, data.image_size, args.batch_size, args.steps, device, args.repeats)
            loop, precision = loop_throughput(name, data, train_idx, val_idx, args.batch_size, device, args.repeats)
            rows.append(dict(model=name, size="x".join(map(str, data.image_size)), precision=precision,
                             raw_img_s=round(raw, 1), loop_img_s=round(loop, 1), ratio=round(loop / raw, 2),
                             pipeline_ms=round(pipeline, 1), step_ms=round(1000 * args.batch_size / raw, 1)))
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
