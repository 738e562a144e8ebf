"""One cross-validated training run with a chosen recipe: the experiments behind the full profile's defaults.

Runs :func:`bloodlib.experiment.run_model` (the notebooks' protocol: stratified grouped k-fold, an inner
validation part for early stopping) on the real BCCD images and prints, per fold and pooled, macro-F1,
balanced accuracy and accuracy, plus the training time. One JSON line per run is appended to ``--log``, so a
sweep can be compared afterwards with ``pandas.read_json(log, lines=True)``.

    python benchmarks/quality.py --model resnet18 --size 128 --epochs 60 --folds 4 --repeats 2 --ema 0.99
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bloodlib import config, datasets, evaluate, experiment


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--dataset", default="bccd", help="bccd, kaggle-augmented, folder:PATH (see datasets.prepare)")
    parser.add_argument("--mode", default="crop", choices=["crop", "full"])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=None, help="default: never stop early")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the model registry's)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--jitter", type=float, default=1.0, help="colour jitter strength (TrainConfig.colour_jitter)")
    parser.add_argument("--zoom", type=float, default=0.0, help="random zoom range (TrainConfig.zoom), 0: off")
    parser.add_argument("--shift", type=float, default=0.0, help="random shift range (TrainConfig.shift), 0: off")
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, 0: off")
    parser.add_argument("--mixup", type=float, default=0.0, help="mixup alpha, 0: off")
    parser.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha, 0: off")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/quality"))
    parser.add_argument("--log", type=Path, default=Path("outputs/quality/runs.jsonl"))
    parser.add_argument("--prepare-only", action="store_true", help="build the data's image cache, train nothing")
    return parser


def run_name(args: argparse.Namespace) -> str:
    dataset = args.dataset.replace(":", "_").replace("/", "_")
    lr = "registry" if args.lr is None else f"{args.lr:g}"
    patience = "" if args.patience is None else f"-p{args.patience}"  # default (never stop early): unnamed
    geometry = (f"-z{args.zoom:g}" if args.zoom else "") + (f"-sh{args.shift:g}" if args.shift else "")
    return (f"{dataset}-{args.model}-{args.mode}-{args.size}px-{args.epochs}ep{patience}-f{args.folds}x{args.repeats}"
            f"-lr{lr}-wd{args.weight_decay:g}-ls{args.label_smoothing:g}-j{args.jitter:g}{geometry}-ema{args.ema:g}"
            f"-mix{args.mixup:g}-cut{args.cutmix:g}-b{args.batch_size}-s{args.seed}")


def settings_for(args: argparse.Namespace, name: str) -> config.Settings:
    return config.resolve("full", output_dir=args.out / name, dataset=args.dataset, mode=args.mode,
                          image_size=args.size, epochs=args.epochs, folds=args.folds, repeats=args.repeats,
                          seed=args.seed, batch_size=args.batch_size, patience=args.patience or args.epochs,
                          bootstrap=1000)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = run_name(args)
    settings = settings_for(args, name)
    prepared = datasets.prepare(settings, progress=not args.prepare_only)
    if args.prepare_only:
        return
    start = time.perf_counter()
    recipe = {} if args.lr is None else {"lr": args.lr}
    run = experiment.run_model(prepared, args.model, pretrained=False, progress=False, **recipe,
                               weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                               colour_jitter=args.jitter, zoom=args.zoom, shift=args.shift, ema_decay=args.ema,
                               mixup_alpha=args.mixup, cutmix_alpha=args.cutmix)
    seconds = time.perf_counter() - start
    ev = run.evaluation
    pooled = evaluate.metrics(ev.y_true, ev.y_prob, ev.classes)
    result = dict(name=name, **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  seconds=round(seconds, 1), torch_threads=torch.get_num_threads(), device=run.fits[0].device,
                  precision=run.fits[0].precision, train_config=run.evaluation.extra["train_config"],
                  best_epochs=[f.best_epoch for f in run.fits],
                  validation_accuracy=run.evaluation.extra["validation"]["accuracy"],
                  **{f"pooled_{k}": round(float(v), 4) for k, v in pooled.items() if np.isscalar(v)})
    if ev.fold is not None:
        per_fold = evaluate.fold_metrics(ev)
        print(per_fold.round(3).to_string(index=False))
        result.update(fold_mean_macro_f1=float(per_fold["macro_f1"].mean()),
                      fold_macro_f1=per_fold["macro_f1"].round(4).tolist())
    for split, other in run.extra_evaluations.items():
        scores = evaluate.metrics(other.y_true, other.y_prob, other.classes)
        result.update({f"{split}_accuracy": round(float(scores["accuracy"]), 4),
                       f"{split}_macro_f1": round(float(scores["macro_f1"]), 4)})
    print(json.dumps(result))
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as log:
        log.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
