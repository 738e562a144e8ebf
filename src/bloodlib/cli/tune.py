"""``python -m bloodlib tune MODEL [MODEL ...]``: the tuning search (:mod:`bloodlib.tuning`), resumable.

Every model named gets the same number of trials, run in turn; each trial trains the profile's splits with a
recipe drawn from the model's declared space and is scored on their validation parts only. The study lives in
``--storage`` (an SQLite file in the checkout by default; any SQLAlchemy URL to share one search between
machines), so a search stopped at any moment, by ``--timeout`` or otherwise, goes on where it was when run again.
After each trial the trials table is rewritten (``--table``), and at the end a summary per model is printed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from bloodlib import config
from bloodlib.data import datasets
from bloodlib.tuning import search


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("models", nargs="+", metavar="MODEL", help="models with a declared search space")
    parser.add_argument("--trials", type=int, default=search.TRIALS,
                        help=f"finished trials (complete or pruned) per model (default {search.TRIALS})")
    parser.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite in benchmarks/results/tuning/)")
    parser.add_argument("--table", type=Path, help="trials table to rewrite after each trial "
                                                   "(default: benchmarks/results/tuning/trials.csv)")
    parser.add_argument("--profile", default="full", help="whose splits, epochs and image size (default full)")
    parser.add_argument("--dataset", default="bccd")
    parser.add_argument("--data-dir", help="the dataset's folder (default: $BLOODLIB_DATA, else found or fetched)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--cpu-bf16", action="store_true",
                        help="train the trials in bf16 autocast (a CPU with native bf16): a study of its own; "
                             "by default every trial trains in fp32, on any CPU")
    parser.add_argument("--progress", action="store_true", help="progress bars per epoch")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    root = config.project_root()
    storage = args.storage or search.default_storage(root)
    table = args.table or root / search.RESULTS / "trials.csv"
    settings = config.resolve(args.profile, args.data_dir, dataset=args.dataset)
    prepared = datasets.prepare(settings, progress=args.progress)
    studies = search.tune(prepared, args.models, trials=args.trials, storage=storage, timeout=args.timeout,
                          cpu_bf16=args.cpu_bf16, progress=args.progress,
                          after_trial=lambda studies: search.write_trials_table(studies, table))
    search.write_trials_table(studies, table)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(search.summary_table(pd.read_csv(table)))
    print(f"trials table: {table}")
    return 0

