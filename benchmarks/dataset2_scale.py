"""dataset2-master at scale: cleaning time, decoded-cache size and build time, and the training loop's speed.

Prints, for the Kaggle augmented dataset (TRAIN 9957 + TEST 2487 + TEST_SIMPLE 71 images, 320x240):

- the time of :func:`bloodlib.data.folders.clean_kaggle_augmented` (file index + source groups; ``cold`` when
  nothing was cached in ``--cache``, ``warm`` on a second call);
- for each ``--sizes``: the size of the decoded uint8 cache (``images.load_cached``) and the time to build it
  and to read it back, in RAM and memory-mapped (``np.load(mmap_mode="c")``: pages read on demand);
- with ``--ratio`` (needs ``bloodlib.training.train``): the training loop's images/s (``train.fit``, second epoch, on
  ``--train-images`` positions drawn from the whole TRAIN tensor) against raw train steps on a fixed batch;
  the loop keeps up when the ratio stays >= 0.9. Both for the in-RAM and the memory-mapped tensor.

    python benchmarks/dataset2_scale.py                       # cache sizes at 64 and 128 px
    python benchmarks/dataset2_scale.py --sizes 128 --ratio   # + loop/raw throughput at 128 px
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bloodlib import config
from bloodlib.data import folders, images
from bloodlib.data.cleaning import CleaningParams

GIB = 2 ** 30


def clean(root: Path, cache: Path | None) -> tuple[object, float]:
    start = time.perf_counter()
    result = folders.clean_kaggle_augmented(root, CleaningParams(), cache=cache, progress=False)
    return result, time.perf_counter() - start


def cache_row(rows: pd.DataFrame, root: Path, mode: str, size: int, folder: Path) -> dict:
    """Build the decoded cache of ``rows`` (or find it), then read it back in RAM and memory-mapped."""
    key = images.cache_key(rows, root, mode, size, 0.15)
    path = folder / f"{mode}-{size}-{key}.npy"
    existed = path.is_file()
    start = time.perf_counter()
    array = images.load_cached(rows, root, mode, size, cache=folder, progress=False)
    built = time.perf_counter() - start
    del array
    start = time.perf_counter()
    array = np.load(path, allow_pickle=False)
    read = time.perf_counter() - start
    start = time.perf_counter()
    np.load(path, allow_pickle=False, mmap_mode="c")
    mapped_s = time.perf_counter() - start
    return dict(mode=mode, size=f"{array.shape[2]}x{array.shape[3]}", images=len(array),
                GiB=round(array.nbytes / GIB, 3), build_s=None if existed else round(built, 1),
                read_s=round(read, 2), mmap_open_s=round(mapped_s, 4), path=path)


def throughput_ratio(rows: pd.DataFrame, path: Path, model: str, train_images: int, batch_size: int) -> list[dict]:
    """Loop / raw images per second (benchmarks/throughput.py), with the decoded images as the whole
    12.5k-image tensor in RAM, memory-mapped from the cache file, and as a small tensor of only the images
    the loop touches (what a small dataset costs): ``vs_small`` near 1 means the dataset's size costs nothing."""
    spec = importlib.util.spec_from_file_location("throughput", Path(__file__).with_name("throughput.py"))
    try:
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        from bloodlib.data.datasets import ImageSet
    except (ImportError, FileNotFoundError, AttributeError) as err:
        print(f"throughput part skipped: {err}")
        return []
    device = config.select_device("cpu")
    classes = sorted(rows["label"].unique())
    labels = torch.tensor(rows["label"].map({c: i for i, c in enumerate(classes)}).to_numpy())
    rng = np.random.default_rng(0)
    train = rng.choice(np.flatnonzero(rows["split"].to_numpy() == "train"), train_images, replace=False)
    val = np.flatnonzero(rows["split"].to_numpy() == "val")[:batch_size]
    used = np.concatenate([train, val])
    out, raw = [], None
    for how in ("small", "ram", "mmap", "small"):  # small twice: the machine's drift shows in the two
        array = np.load(path, allow_pickle=False, mmap_mode="c" if how == "mmap" else None)
        if how == "small":
            data = ImageSet(images=torch.from_numpy(array[used].copy()), labels=labels[used], classes=classes,
                            rows=rows.iloc[used])
            positions = (np.arange(len(train)), np.arange(len(train), len(used)))
        else:
            data = ImageSet(images=torch.from_numpy(array), labels=labels, classes=classes, rows=rows)
            positions = (train, val)
        raw = raw or bench.raw_throughput(model, data.image_size, batch_size, 8, device)
        loop, precision = bench.loop_throughput(model, data, *positions, batch_size, device)
        out.append(dict(tensor=how, images=len(data), model=model, size="x".join(map(str, data.image_size)),
                        precision=precision, raw_img_s=round(raw, 1), loop_img_s=round(loop, 1),
                        ratio=round(loop / raw, 2)))
        print(pd.DataFrame(out[-1:]).to_string(index=False, header=len(out) == 1), flush=True)
    small = np.mean([r["loop_img_s"] for r in out if r["tensor"] == "small"])
    for r in out:
        r["vs_small"] = round(r["loop_img_s"] / small, 2)
    print(pd.DataFrame(out).to_string(index=False))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="data root holding dataset2-master/")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--mode", choices=("full", "crop"), default="full")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default: a temporary one, so build times are cold)")
    parser.add_argument("--ratio", action="store_true", help="also measure loop/raw training throughput")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--train-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    root = args.data or Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"
    if not (root / folders.KAGGLE_IMAGES).is_dir():
        raise SystemExit(f"{root / folders.KAGGLE_IMAGES}: not found (pass --data)")
    temporary = args.cache is None
    cache = Path(tempfile.mkdtemp(prefix="dataset2-")) if temporary else args.cache
    try:
        result, cold = clean(root, cache / "index")
        _, warm = clean(root, cache / "index")
        kept = result.kept
        train = kept[kept["subset"] == "TRAIN"]
        print(f"{root}: {len(kept)} images kept ({len(train)} TRAIN in {train['group'].nunique()} source groups), "
              f"{(~result.manifest['kept']).sum()} dropped")
        print(f"clean_kaggle_augmented: {cold:.1f} s cold, {warm:.2f} s warm (torch threads {torch.get_num_threads()})")
        rows, paths = [], {}
        for size in args.sizes:  # one cache for every kept image (TRAIN + TEST + TEST_SIMPLE), as prepare builds it
            row = cache_row(kept, root, args.mode, size, cache / "images")
            paths[size] = row.pop("path")
            rows.append(dict(row, TRAIN_GiB=round(row["GiB"] * len(train) / len(kept), 3)))
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
        if args.ratio:
            throughput_ratio(kept, paths[max(args.sizes)], args.model, args.train_images, args.batch_size)
    finally:
        if temporary:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
