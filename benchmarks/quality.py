"""One cross-validated training run with a chosen recipe: the experiments behind the full profile's defaults.

Runs :func:`bloodlib.study.experiment.run_model` (the notebooks' protocol: stratified grouped k-fold, an inner
validation part for early stopping) on the real BCCD images and prints, per fold and pooled, macro-F1,
balanced accuracy and accuracy, plus the training time. One JSON line per run is appended to ``--log``, so a
sweep can be compared afterwards with ``pandas.read_json(log, lines=True)``.

    python benchmarks/quality.py --model resnet18 --size 128 --epochs 60 --folds 4 --repeats 2 --ema 0.99

``--replay-selection`` trains every epoch (no early stopping), predicts each split's test part after every epoch
and scores the epoch each rule would have kept (:data:`RULES`): one run measures several selection rules on the
same training trajectory (early stopping only ever cuts it short; it never changes it).

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

from bloodlib import config, evaluation
from bloodlib.data import datasets
from bloodlib.study import experiment
from bloodlib.models import inference
from bloodlib.training import train

# which epoch a run keeps, from its validation history and the early stopping patience
RULES = {
    "early stopping": train.early_stopping_epoch,
    "best validation epoch, no stopping": lambda history, patience: train.early_stopping_epoch(history, len(history)),
    "last epoch": lambda history, patience: int(history["epoch"].max()),
}


# option -> Settings / TrainConfig field (None: the layered default of config.resolve for --profile and --model)
FIELDS = dict(dataset="dataset", mode="mode", size="image_size", epochs="epochs", patience="patience",
              folds="folds", repeats="repeats", keep="keep_epoch", batch_size="batch_size", lr="lr",
              weight_decay="weight_decay",
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
    parser.add_argument("--keep", choices=["best", "last"], help="the epoch kept: best on validation or last")
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
    parser.add_argument("--precision", dest="pinned_precision", choices=["fp32", "bf16"],
                        help="pin the CPU precision (TrainConfig.cpu_bf16); default: bf16 where models.precision."
                             "CPU_SPEEDUPS measured a gain and the CPU has native bf16, else fp32")
    parser.add_argument("--out", type=Path, default=Path("outputs/quality"))
    parser.add_argument("--log", type=Path, default=Path("outputs/quality/runs.jsonl"))
    parser.add_argument("--prepare-only", action="store_true", help="build the data's image cache, train nothing")
    parser.add_argument("--replay-selection", action="store_true",
                        help="train every epoch and score each selection rule of RULES on the test parts")
    return parser


def settings_for(args: argparse.Namespace, output_dir: Path | None = None) -> config.Settings:
    """The layered settings (profile, dataset, the model's recipe), then what the options set."""
    chosen = {field: getattr(args, option) for option, field in FIELDS.items() if getattr(args, option) is not None}
    if getattr(args, "pinned_precision", None):  # the result's "precision" is what the run trained in
        chosen["cpu_bf16"] = args.pinned_precision == "bf16"
    return config.resolve(args.profile, output_dir=output_dir, model=args.model, **chosen)


def run_name(settings: config.Settings, model: str) -> str:
    """A folder name that changes with anything that changes the result."""
    t = settings.train
    dataset = settings.dataset.replace(":", "_").replace("/", "_")
    geometry = (f"-z{t.zoom:g}" if t.zoom else "") + (f"-sh{t.shift:g}" if t.shift else "")
    # what a tuned recipe sets besides lr, weight decay and batch (left out at their defaults: older names stay)
    tuned = ((f"-dr{t.drop_rate:g}" if t.drop_rate is not None else "")
             + (f"-dp{t.drop_path_rate:g}" if t.drop_path_rate is not None else "")
             + (f"-{t.optimizer}" if t.optimizer != config.TrainConfig.optimizer else ""))
    return (f"{dataset}-{model}-{settings.mode}-{settings.image_size}px-{t.epochs}ep-p{t.patience}"
            f"-f{settings.folds}x{settings.repeats}-lr{t.lr:g}-wd{t.weight_decay:g}-ls{t.label_smoothing:g}"
            f"-j{t.colour_jitter:g}{geometry}-ema{t.ema_decay:g}-mix{t.mixup_alpha:g}-cut{t.cutmix_alpha:g}"
            f"-b{t.batch_size}{tuned}-s{settings.seed}" + ("-last" if t.keep_epoch == "last" else "")
            + ("" if t.cpu_bf16 is None else "-bf16" if t.cpu_bf16 else "-fp32"))  # pinned precision only


def name_of(args: argparse.Namespace) -> str:
    return run_name(settings_for(args, args.out), args.model) + ("-replay" if args.replay_selection else "")


def replayed_rules(run: experiment.ModelRun, test_probs: dict[str, list[np.ndarray]], patience: int) -> dict:
    """Per rule of RULES: the epoch kept in each split, its test macro-F1, their mean, and the pooled macro-F1."""
    labels = run.evaluation.classes
    # run.evaluation holds the splits' test parts one after the other, in the splits' order
    ends = np.cumsum([len(split.test) for split in run.splits])[:-1]
    y = dict(zip([split.name for split in run.splits], np.split(run.evaluation.y_true, ends)))
    result = {}
    for rule, kept_epoch in RULES.items():
        epochs = [kept_epoch(fit.history, patience) for fit in run.fits]
        probs = [test_probs[split.name][epoch - 1] for split, epoch in zip(run.splits, epochs)]
        per_split = [evaluation.metrics(y[split.name], p, labels)["macro_f1"] for split, p in zip(run.splits, probs)]
        pooled = evaluation.metrics(np.concatenate(list(y.values())), np.concatenate(probs), labels)
        result[rule] = dict(epochs=epochs, fold_macro_f1=[round(float(f), 4) for f in per_split],
                            fold_mean_macro_f1=float(np.mean(per_split)), pooled_macro_f1=float(pooled["macro_f1"]),
                            pooled_accuracy=float(pooled["accuracy"]))
    return result


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = name_of(args)
    settings = settings_for(args, args.out / name)
    prepared = datasets.prepare(settings, progress=not args.prepare_only)
    if args.prepare_only:
        return
    test_probs: dict[str, list[np.ndarray]] = {}

    def predict_test(split, epoch, row, model):
        test_probs.setdefault(split.name, []).append(
            inference.predict_proba(model, prepared.data.images[torch.as_tensor(split.test)]))

    replay = dict(callback=predict_test, patience=settings.train.epochs) if args.replay_selection else {}
    start = time.perf_counter()
    run = experiment.run_model(prepared, args.model, pretrained="scratch", progress=False, **replay)
    seconds = time.perf_counter() - start
    ev = run.evaluation
    pooled = evaluation.metrics(ev.y_true, ev.y_prob, ev.classes)
    resolved = {k: v for k, v in settings.as_dict().items() if k not in ("data_dir", "output_dir", "train", "requested")}
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = dict(name=name, **{**options, **resolved},  # the options, then what they resolved to
                  seconds=round(seconds, 1), torch_threads=torch.get_num_threads(), device=run.fits[0].device,
                  precision=run.fits[0].precision, train_config=run.evaluation.extra["train_config"],
                  kept_epochs=[f.kept_epoch for f in run.fits],
                  validation_accuracy=run.evaluation.extra["validation"]["accuracy"],
                  **{f"pooled_{k}": round(float(v), 4) for k, v in pooled.items() if np.isscalar(v)})
    if ev.fold is not None:
        per_fold = evaluation.fold_metrics(ev)
        print(per_fold.round(3).to_string(index=False))
        result.update(fold_mean_macro_f1=float(per_fold["macro_f1"].mean()),
                      fold_macro_f1=per_fold["macro_f1"].round(4).tolist())
    if args.replay_selection:
        result["rules"] = replayed_rules(run, test_probs, settings.train.patience)
        for rule, scores in result["rules"].items():
            print(f"{rule}: epochs {scores['epochs']}, fold macro-F1 {scores['fold_macro_f1']}, "
                  f"mean {scores['fold_mean_macro_f1']:.3f}")
    for split, other in run.extra_evaluations.items():
        scores = evaluation.metrics(other.y_true, other.y_prob, other.classes)
        result.update({f"{split}_accuracy": round(float(scores["accuracy"]), 4),
                       f"{split}_macro_f1": round(float(scores["macro_f1"]), 4)})
    print(json.dumps(result))
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as log:
        log.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
