"""One cross-validated training run with a chosen recipe: the experiments behind the full profile's defaults.

Runs :func:`bloodlib.experiment.run_model` (the notebooks' protocol: stratified grouped k-fold, an inner
validation part for early stopping) on the real BCCD images and prints, per fold and pooled, macro-F1,
balanced accuracy and accuracy, plus the training time. One JSON line per run is appended to ``--log``, so a
sweep can be compared afterwards with ``pandas.read_json(log, lines=True)``.

    python benchmarks/quality.py --model resnet18 --size 128 --epochs 60 --folds 4 --repeats 2 --ema 0.99

Every option left out takes the layered default of ``config.resolve`` (``--profile``, the dataset, the model's
recipe), so a bare ``python benchmarks/quality.py`` runs the full profile's recipe for resnet18.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bloodlib import config, datasets, evaluate, experiment


# option -> Settings / TrainConfig field (None: the layered default of config.resolve for --profile and --model)
FIELDS = dict(dataset="dataset", mode="mode", size="image_size", epochs="epochs", patience="patience",
              folds="folds", repeats="repeats", batch_size="batch_size", lr="lr", weight_decay="weight_decay",
              label_smoothing="label_smoothing", jitter="colour_jitter", zoom="zoom", shift="shift", ema="ema_decay",
              mixup="mixup_alpha", cutmix="cutmix_alpha", seed="seed")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", help="the profile whose defaults fill what is not given")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--dataset", help="bccd, kaggle-augmented, folder:PATH (see datasets.prepare)")
    parser.add_argument("--mode", choices=["crop", "full"])
    parser.add_argument("--size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--patience", type=int, help="epochs without improvement before stopping")
    parser.add_argument("--folds", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--jitter", type=float, help="colour jitter strength (TrainConfig.colour_jitter)")
    parser.add_argument("--zoom", type=float, help="random zoom range (TrainConfig.zoom), 0: off")
    parser.add_argument("--shift", type=float, help="random shift range (TrainConfig.shift), 0: off")
    parser.add_argument("--ema", type=float, help="EMA decay of the weights, 0: off")
    parser.add_argument("--mixup", type=float, help="mixup alpha, 0: off")
    parser.add_argument("--cutmix", type=float, help="cutmix alpha, 0: off")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/quality"))
    parser.add_argument("--log", type=Path, default=Path("outputs/quality/runs.jsonl"))
    parser.add_argument("--prepare-only", action="store_true", help="build the data's image cache, train nothing")
    return parser


def settings_for(args: argparse.Namespace, output_dir: Path | None = None) -> config.Settings:
    """The layered settings (profile, dataset, the model's recipe), then what the options set."""
    chosen = {field: getattr(args, option) for option, field in FIELDS.items() if getattr(args, option) is not None}
    return config.resolve(args.profile, output_dir=output_dir, model=args.model, **chosen)


def run_name(settings: config.Settings, model: str) -> str:
    """A folder name that changes with anything that changes the result."""
    t = settings.train
    dataset = settings.dataset.replace(":", "_").replace("/", "_")
    geometry = (f"-z{t.zoom:g}" if t.zoom else "") + (f"-sh{t.shift:g}" if t.shift else "")
    return (f"{dataset}-{model}-{settings.mode}-{settings.image_size}px-{t.epochs}ep-p{t.patience}"
            f"-f{settings.folds}x{settings.repeats}-lr{t.lr:g}-wd{t.weight_decay:g}-ls{t.label_smoothing:g}"
            f"-j{t.colour_jitter:g}{geometry}-ema{t.ema_decay:g}-mix{t.mixup_alpha:g}-cut{t.cutmix_alpha:g}"
            f"-b{t.batch_size}-s{settings.seed}")


def name_of(args: argparse.Namespace) -> str:
    return run_name(settings_for(args, args.out), args.model)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = name_of(args)
    settings = settings_for(args, args.out / name)
    prepared = datasets.prepare(settings, progress=not args.prepare_only)
    if args.prepare_only:
        return
    start = time.perf_counter()
    run = experiment.run_model(prepared, args.model, pretrained="scratch", progress=False)
    seconds = time.perf_counter() - start
    ev = run.evaluation
    pooled = evaluate.metrics(ev.y_true, ev.y_prob, ev.classes)
    resolved = {k: v for k, v in settings.as_dict().items() if k not in ("data_dir", "output_dir", "train", "requested")}
    result = dict(name=name, **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **resolved,
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
