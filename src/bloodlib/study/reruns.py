"""How much a rerun moves the answer (notebook 07): each model's fold-mean macro-F1 over several study seeds.

``benchmarks/spread.py`` reruns the study's protocol (``benchmarks/quality.py``) for every model with other seeds:
other folds, initial weights, batches and augmentations; the models of one seed share its folds. Its table,
``benchmarks/results/seed_spread.csv``, is committed; this module reads it, sets it beside the bootstrap interval
of the run being reported, and says whether the ranking holds for every seed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bloodlib import config

SPREAD_TABLE = Path("benchmarks") / "results" / "seed_spread.csv"


def read_spread(root: Path | None = None) -> pd.DataFrame | None:
    """The committed seed-spread table of the checkout, or None before any was made."""
    path = (root or config.project_root()) / SPREAD_TABLE
    return pd.read_csv(path) if path.is_file() else None


def spread_table(spread: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per model of ``table`` (notebook 07's comparison, ranked): the seeds run, the fold-mean macro-F1 per seed,
    their mean, range and spread (max - min), beside this run's fold-mean and pooled bootstrap interval."""
    rows = {}
    for model in table.index:
        runs = spread[spread["model"] == model].sort_values("seed")
        values = runs["fold_mean_macro_f1"]
        rows[model] = {
            "seeds": ", ".join(str(s) for s in runs["seed"]) or "–",
            "fold-mean macro-F1 per seed": ", ".join(f"{v:.3f}" for v in values) or "–",
            "mean": values.mean() if len(values) else float("nan"),
            "range": f"{values.min():.3f}–{values.max():.3f}" if len(values) else "–",
            "spread": values.max() - values.min() if len(values) else float("nan"),
            "this run: fold-mean": table.loc[model, "fold_macro_f1"],
            "this run: pooled 95% bootstrap CI": f"{table.loc[model, 'macro_f1_low']:.3f}–"
                                                 f"{table.loc[model, 'macro_f1_high']:.3f}",
            "precision": ", ".join(sorted(set(runs["precision"].astype(str)))) if len(runs) else "–",
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


def ranking_holds(spread: pd.DataFrame, order: list[str]) -> dict[str, bool]:
    """For each neighbouring pair of ``order`` ("a > b"): whether a's fold-mean beats b's under every seed both
    ran (the models of one seed share its folds, so the comparison is paired)."""
    wide = spread.pivot_table(index="seed", columns="model", values="fold_mean_macro_f1")
    held = {}
    for better, worse in zip(order, order[1:]):
        if better in wide and worse in wide:
            both = wide[[better, worse]].dropna()
            held[f"{better} > {worse}"] = bool(len(both)) and bool((both[better] > both[worse]).all())
    return held


def ranking_sentence(spread: pd.DataFrame, order: list[str]) -> str:
    held = ranking_holds(spread, order)
    if not held:
        return "No two ranked models share a seed in the spread table: the ranking is not checked against reruns."
    seeds = spread["seed"].nunique()
    return (f"Over {seeds} seeds: " + "; ".join(f"{pair} {'under every seed' if ok else '**not** under every seed'}"
                                                for pair, ok in held.items()) + ".")

