"""How each model's recipe was chosen (notebook 07): the tuning search's trials beside what the model scored.

The search (``python -m bloodlib tune``, :mod:`bloodlib.tuning`) writes its trials table under
``benchmarks/results/tuning/``; a finished search's choice goes into ``config.MODEL_RECIPES``. This module reads
that table and each model's saved record (the recipe it was really trained with) and says, per model, whether the
recipe it was trained with is the one the search chose on validation parts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bloodlib import config, evaluation
from bloodlib.tuning import search, space

TRIALS_TABLE = search.RESULTS / "trials.csv"
DEFAULT_RECIPE = config.TrainConfig()


def read_trials(root: Path | None = None) -> pd.DataFrame | None:
    """The committed trials table of the checkout, or None before any search."""
    path = (root or config.project_root()) / TRIALS_TABLE
    return pd.read_csv(path) if path.is_file() else None


def search_progress(trials: pd.DataFrame | None, models) -> pd.DataFrame:
    """The finished trials of ``models``' searches in the order they ran, with the best so far
    (:func:`bloodlib.tuning.search.finished_in_order`); an empty frame before any of them finished a trial."""
    if trials is None or trials.empty:
        return pd.DataFrame(columns=[*(trials.columns if trials is not None else []), "order", "best_so_far"])
    progress = search.finished_in_order(trials)
    return progress[progress["model"].isin(list(models))].reset_index(drop=True)


def describe_recipe(recipe: dict) -> str:
    """``lr 3.1e-03, weight_decay 0.021, batch_size 32``: three significant digits."""
    def shown(value):
        return f"{value:.3g}" if isinstance(value, float) else str(value)
    return ", ".join(f"{name} {shown(value)}" for name, value in recipe.items()) or "(none)"


def status(model: str, trials: pd.DataFrame | None, trained: dict, target: int = search.TRIALS) -> str:
    """Whether ``model`` was trained with the recipe its search chose, and how far that search got."""
    if model not in space.SEARCH_SPACES:
        return "no search space declared"
    mine = None if trials is None else trials[trials["model"] == model]
    if mine is None or mine.empty:
        return "not searched yet: trained with the default recipe"
    finished = int(mine["state"].isin(["COMPLETE", "PRUNED"]).sum())
    if finished < target or (mine["state"] == "COMPLETE").sum() == 0:
        return f"search under way ({finished} of {target} trials): trained with the default recipe"
    chosen = search.chosen_recipe(trials, model)
    same = all(np.isclose(trained.get(k), v) if isinstance(v, float) and trained.get(k) is not None
               else trained.get(k) == v for k, v in chosen.items())
    return "trained with the search's choice" if same else "search finished, but trained with another recipe"


def tuning_table(evaluations: dict[str, evaluation.Evaluation], trials: pd.DataFrame | None = None,
                 target: int = search.TRIALS) -> pd.DataFrame:
    """Per model: its search (trials run and pruned, image-epochs per full trial, the best validation score and
    the recipe chosen), the recipe it was trained with, its test fold-mean macro-F1 and whether the two agree."""
    summary = search.summary_table(trials) if trials is not None and len(trials) else pd.DataFrame()
    rows = {}
    for model, ev in evaluations.items():
        knobs = space.searched_fields(model) if model in space.SEARCH_SPACES else []
        recipe = ev.extra.get("train_config") or {}
        # a field the record lacks was added later, with the default that trains as before it existed
        trained = {k: recipe.get(k, getattr(DEFAULT_RECIPE, k)) for k in knobs}
        found = summary.loc[model] if model in summary.index else None
        fold_mean = float(evaluation.fold_metrics(ev)["macro_f1"].mean()) if ev.fold is not None else np.nan
        rows[model] = {
            "searched knobs": ", ".join(knobs) or "–",
            "trials (pruned)": f"{found['trials']} ({found['pruned']})" if found is not None else "0",
            "image-epochs per full trial": found["image-epochs per full trial"] if found is not None else None,
            "best validation macro-F1": found["best validation macro-F1"] if found is not None else np.nan,
            # where the search stopped improving: a best found late says more trials might still help
            "best found at trial": (f"{found['best at trial']} of {found['trials']}"
                                    if found is not None and pd.notna(found["best at trial"]) else "–"),
            "recipe chosen on validation": (describe_recipe(search.chosen_recipe(trials, model))
                                            if found is not None and found["complete"] else "–"),
            "recipe trained": describe_recipe(trained),
            "test fold-mean macro-F1": fold_mean,
            "status": status(model, trials, trained, target),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


def tuning_sentence(table: pd.DataFrame) -> str:
    """What the conclusion says of the tuning: one protocol and one budget for all, or plainly not."""
    if (table["status"] == "trained with the search's choice").all():
        budgets = table["image-epochs per full trial"].astype(float)
        trials = table["trials (pruned)"].str.split(" ").str[0].astype(int)
        equal = budgets.max() <= 1.05 * budgets.min() and trials.nunique() == 1
        budget = (f"{int(budgets.min()):,}" if budgets.min() == budgets.max()
                  else f"{int(budgets.min()):,}–{int(budgets.max()):,}")
        return (f"Every architecture's recipe was chosen by the same search ({trials.iloc[0]} trials each, "
                f"{budget} training images x epochs per full trial, scored on validation parts "
                f"only; the test parts were read once, afterwards)"
                + ("." if equal else ", though the budgets differ: see the tuning table."))
    return ("The recipes were **not** all chosen the same way (see the tuning table: "
            + "; ".join(f"{model}: {state}" for model, state in table["status"].items())
            + "): part of any gap between models may be the tuning each got, not the architecture.")
