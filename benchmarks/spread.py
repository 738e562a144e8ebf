"""How much the headline moves with things that should not matter: seed and thread count.

Runs ``quality.py`` (the notebooks' protocol and the full profile's recipe unless options say otherwise) once
per model, seed and thread count, one run at a time (two at once would oversubscribe the cores and change
nothing but the wall time), then prints per run the pooled and fold-mean macro-F1, and their spread (max - min).
A seed is the whole study's seed: the folds are shuffled again and every model trains from other initial
weights, batches and augmentations (repeated cross-validation); the models of one seed share its folds.
``--table`` writes the runs as the committed table notebook 07 shows (``benchmarks/results/seed_spread.csv``):

    python benchmarks/spread.py --models resnet18 efficientnet_b0 alexnet --threads 2 \
        --table benchmarks/results/seed_spread.csv
    python benchmarks/spread.py                       # resnet18, seeds 42 43 44, 1 and 2 threads
    python benchmarks/spread.py --seeds 42 43 -- --epochs 40 --ema 0.99   # options after -- go to quality.py
    python benchmarks/spread.py -- --replay-selection    # and the spread of each epoch-selection rule
    python benchmarks/spread.py --threads 2 --precisions fp32 bf16 \
        --table benchmarks/results/precision.csv        # bf16 against fp32, seed by seed (a CPU with native bf16)

With ``--replay-selection`` each run trains every epoch once and scores every rule of ``quality.RULES`` on it,
so the table before and after a change of the rule comes from the same trainings.

Runs already in the log (same recipe, seed, thread count and precision) are not repeated; a run that left the
precision to the CPU counts for the precision it trained in.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import quality  # noqa: E402  (a sibling script, not a package)


PINNED = {"auto": []} | {p: ["--precision", p] for p in ("fp32", "bf16")}  # quality.py's words for each
LOG_KEYS = ["name", "torch_threads", "precision"]


def logged(log: pd.DataFrame, model: str, seed: int, threads: int, precision: str, recipe: list[str]) -> pd.Series:
    """Which runs of the log are this model, seed, thread count and precision under ``recipe``. A run with the
    precision left to the CPU ("auto") that trained in the one asked for is the same training as a pinned one (the
    seed spread's bf16 runs are the bf16 half of the precision comparison), so it counts too."""
    def name(pin: str) -> str:
        words = ["--model", model, "--seed", str(seed), *PINNED[pin], *recipe]
        return quality.name_of(quality.parser().parse_args(words))

    same = log["name"] == name(precision)
    if precision != "auto":
        same |= (log["name"] == name("auto")) & (log["precision"] == precision)
    return same & (log["torch_threads"] == threads)


def pinned_last(names: pd.Series) -> pd.Series:
    """A sort key that puts runs with a pinned precision after those that left it to the CPU."""
    return names.str.endswith(("-bf16", "-fp32"))


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", choices=["auto", "fp32", "bf16"], default=["auto"],
                        help="CPU precisions to run each seed in (auto: the product's choice, models.precision)")
    parser.add_argument("--log", type=Path, default=Path("outputs/quality/spread.jsonl"))
    parser.add_argument("--table", type=Path, help="write the runs here as CSV (e.g. benchmarks/results/seed_spread.csv)")
    parser.add_argument("recipe", nargs=argparse.REMAINDER, help="-- then quality.py options")
    args = parser.parse_args(argv)
    recipe = [w for w in args.recipe if w != "--"]
    wanted = list(itertools.product(args.models, args.seeds, args.threads, args.precisions))
    done = pd.read_json(args.log, lines=True) if args.log.is_file() else pd.DataFrame(columns=LOG_KEYS)
    for model, seed, threads, precision in wanted:
        if logged(done, model, seed, threads, precision, recipe).any():
            continue
        words = ["--model", model, "--seed", str(seed), "--threads", str(threads), *PINNED[precision], *recipe]
        print(f"{quality.name_of(quality.parser().parse_args(words))}, {threads} thread(s)", flush=True)
        subprocess.run([sys.executable, str(HERE / "quality.py"), *words, "--log", str(args.log)], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                       stdout=subprocess.DEVNULL)
    log = pd.read_json(args.log, lines=True)
    # one run per model, seed, thread count and precision: the last logged, a pinned one before an unpinned one
    runs = pd.concat([log[logged(log, *key, recipe)].sort_values("name", key=pinned_last, kind="stable").tail(1)
                      for key in wanted])
    table = runs[["model", "seed", "torch_threads", "precision", "pooled_macro_f1", "fold_mean_macro_f1",
                  "pooled_accuracy", "seconds", "train_config"]].copy()
    table["train_config"] = table["train_config"].map(lambda c: json.dumps(c, sort_keys=True))
    table = table.sort_values(["model", "seed", "torch_threads", "precision"]).reset_index(drop=True)
    print(table.drop(columns="train_config").round(3).to_string(index=False))
    for (model, precision), runs_of in table.groupby(["model", "precision"]):
        for column in ("pooled_macro_f1", "fold_mean_macro_f1"):
            print(f"{model} {precision} {column}: min {runs_of[column].min():.3f}, max {runs_of[column].max():.3f}, "
                  f"spread {runs_of[column].max() - runs_of[column].min():.3f}")
    if table["precision"].nunique() > 1:  # the same seeds in each precision: paired differences
        paired = table.pivot_table(index=["model", "seed", "torch_threads"], columns="precision",
                                   values="fold_mean_macro_f1")
        print("fold-mean macro-F1 by precision, seed by seed:\n" + paired.round(3).to_string())
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.table.with_name(args.table.name + ".tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(args.table)  # whole or not at all
    if "rules" in runs:
        for rule in quality.RULES:
            scores = pd.DataFrame([{"seed": seed, "torch_threads": threads, **rules[rule]} for seed, threads, rules
                                   in runs[["seed", "torch_threads", "rules"]].itertuples(index=False)])
            print(f"\n{rule}:")
            print(scores[["seed", "torch_threads", "epochs", "fold_macro_f1", "fold_mean_macro_f1", "pooled_macro_f1"]]
                  .sort_values(["seed", "torch_threads"]).round(3).to_string(index=False))
            print(f"fold_mean_macro_f1: min {scores['fold_mean_macro_f1'].min():.3f}, max "
                  f"{scores['fold_mean_macro_f1'].max():.3f}, spread "
                  f"{scores['fold_mean_macro_f1'].max() - scores['fold_mean_macro_f1'].min():.3f}")
    print(json.dumps({"recipe": recipe, "runs": len(table)}))
    return table


if __name__ == "__main__":
    main()
