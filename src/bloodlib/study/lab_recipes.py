"""Which training recipe travels to a lab it never saw (notebook 09): leave-one-lab-out rounds under several
training recipes (for example without and with HED stain jitter, another network such as GroupNorm's ResNet, or
each image's colour standardised in CIELAB before the network), compared on the same held-out cells.

``benchmarks/lolo_recipes.py`` reads one notebook-09 run per recipe and writes :func:`compare`'s table,
``benchmarks/results/lolo_recipes.csv``, which is committed. :func:`chosen` names the recipe with the best
macro-F1 averaged over the held-out labs without test-time adaptation: the one the full profile's notebook 09
trains (``config.DATASET_DEFAULTS[("full", "labs")]``). That choice reads the three project labs' LOLO rounds, which
are its validation; their numbers are therefore optimistic for the chosen recipe, and only labs kept out of the
project test the model the report publishes. Notebook 09 shows the table and says how its recipe was chosen.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from bloodlib import config, evaluation
from bloodlib.evaluation.significance import format_p
from bloodlib.study import lolo

RECIPE_TABLE = Path("benchmarks") / "results" / "lolo_recipes.csv"
SHOWN = ("macro_f1", "balanced_accuracy")
# the training settings a recipe may change besides the network, with their defaults (a table or record written
# before one of them existed trained at its default)
RECIPE_FIELDS = {name: config.TrainConfig.__dataclass_fields__[name].default for name in ("stain_jitter", "input_colour")}


def lolo_folder(path: str | Path) -> Path:
    """The ``lolo/<model>`` folder of a report folder holding one run, a run folder, or that folder itself."""
    path = Path(path)
    if (path / lolo.RECORD).is_file():
        return path
    found = (sorted(path.glob(f"{lolo.FOLDER}/*/{lolo.RECORD}"))
             or sorted(path.glob(f"runs/*/{lolo.FOLDER}/*/{lolo.RECORD}")))
    if not found:
        raise FileNotFoundError(f"{path}: no leave-one-lab-out run (notebook 09) here")
    if len(found) > 1:
        raise ValueError(f"{path}: several leave-one-lab-out runs ({', '.join(str(f.parent) for f in found)}); "
                         f"name one")
    return found[0].parent


def compare(recipes: Mapping[str, str | Path], *, n: int = 2000, seed: int = 42) -> pd.DataFrame:
    """A row per recipe, held-out lab and test-time method: the recipe's network (``model``) and
    :data:`RECIPE_FIELDS`, the images, each metric of :data:`SHOWN` with its 95% bootstrap interval, and (against the first recipe, the
    baseline, on the same cells) the change in macro-F1 and McNemar's p on the two models' errors."""
    folders = {name: lolo_folder(folder) for name, folder in recipes.items()}
    rounds = {name: [c for c in lolo.load_cells(folder) if c.images == lolo.HELD_OUT]
              for name, folder in folders.items()}
    baseline = next(iter(folders))  # its rows come first: the later recipes' changes read them
    first = {(c.tested_on, c.method): c.evaluation for c in rounds[baseline]}
    baseline_f1, rows = {}, []
    for name, cells in rounds.items():
        record = json.loads((folders[name] / lolo.RECORD).read_text(encoding="utf-8"))
        for cell in cells:
            ev = cell.evaluation
            ci = evaluation.evaluation_ci(ev, n=n, seed=seed)
            row = {"recipe": name, "model": cell.model,
                   **{field: record["settings"]["train"].get(field, default) for field, default in RECIPE_FIELDS.items()},
                   "held out": cell.tested_on, "method": cell.method, "trained on": cell.trained_on,
                   "images": len(ev.y_true)}
            for metric in SHOWN:
                row[metric] = ci.loc[metric, "value"]
                row[f"{metric}_low"], row[f"{metric}_high"] = ci.loc[metric, "low"], ci.loc[metric, "high"]
            key, base = (cell.tested_on, cell.method), first.get((cell.tested_on, cell.method))
            if name == baseline:
                baseline_f1[key] = row["macro_f1"]
            elif base is not None:
                if not np.array_equal(base.ids, ev.ids):
                    raise ValueError(f"{cell.tested_on}: recipes {baseline} and {name} were scored on other images")
                row["macro_f1_change"] = row["macro_f1"] - baseline_f1[key]
                row["mcnemar_p"] = evaluation.mcnemar(ev.y_true, base.y_pred, ev.y_pred)["p_value"]
            rows.append(row)
    return pd.DataFrame(rows)


def chosen(table: pd.DataFrame) -> tuple[str, pd.Series]:
    """The recipe with the best macro-F1 averaged over the held-out labs without adaptation, and each recipe's
    mean (in the table's order)."""
    means = table[table["method"] == "none"].groupby("recipe", sort=False)["macro_f1"].mean()
    return str(means.idxmax()), means


def read_recipes(root: Path | None = None) -> pd.DataFrame | None:
    """The committed comparison of the checkout, or None before any was made."""
    path = (root or config.project_root()) / RECIPE_TABLE
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    return table.assign(**{field: table[field] if field in table else default
                           for field, default in RECIPE_FIELDS.items()})


def display_recipes(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a reader wants it: per held-out lab and method, a column per recipe, "0.912 [0.881, 0.940]"
    (macro-F1), then each later recipe's change and McNemar's p."""
    shown = table.assign(**{"macro-F1": [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
                                         zip(table["macro_f1"], table["macro_f1_low"], table["macro_f1_high"])]})
    wide = shown.pivot_table(index=["held out", "method"], columns="recipe", values="macro-F1", aggfunc="first",
                             sort=False)
    for name in list(dict.fromkeys(table["recipe"]))[1:]:
        part = table[table["recipe"] == name].set_index(["held out", "method"])
        wide[f"{name}: change"] = part["macro_f1_change"].map("{:+.3f}".format)
        wide[f"{name}: McNemar p"] = part["mcnemar_p"].map(format_p)
    return wide


def describe(model_name: str, train: Mapping) -> str:
    """A recipe in words: the network, then each of :data:`RECIPE_FIELDS` as ``train`` (a TrainConfig's fields, or a
    table's row) sets it."""
    return ", ".join([model_name, *(f"{field}={_shown(train.get(field, default))}"
                                    for field, default in RECIPE_FIELDS.items())])


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def recipe_sentence(table: pd.DataFrame | None, model_name: str, train: config.TrainConfig) -> str:
    """How this run's training recipe (``model_name`` trained with ``train``'s :data:`RECIPE_FIELDS`) was chosen,
    in words, from the committed comparison."""
    settings = {field: getattr(train, field) for field in RECIPE_FIELDS}
    this = describe(model_name, settings)
    if table is None:
        return (f"This run trained {this}. No recipe comparison is committed yet (`benchmarks/lolo_recipes.py`), "
                f"so this recipe was not chosen by one." + colour_note(train))
    best, means = chosen(table)
    recipes = table.drop_duplicates("recipe").set_index("recipe")
    listed = ", ".join(f"{name} ({describe(recipes.at[name, 'model'], recipes.loc[name])}) {value:.3f}"
                       for name, value in means.items())
    best_row = recipes.loc[best]
    trained_best = best_row["model"] == model_name and all(
        np.isclose(best_row[field], value) if isinstance(value, float) else best_row[field] == value
        for field, value in settings.items())
    agree = ("this run trained it" if trained_best else
             f"this run trained {this} instead, so it is not the chosen recipe")
    return (f"Mean leave-one-lab-out macro-F1 without adaptation, per training recipe (`{RECIPE_TABLE.as_posix()}`): "
            f"{listed}. The best, **{best}**, is the full profile's recipe; {agree}. It was chosen on these three "
            f"labs' rounds, so its numbers here are optimistic by that choice; only labs outside the project test "
            f"the published model." + colour_note(train))


def colour_note(train: config.TrainConfig) -> str:
    """What the input colour means for the page's test-time methods: Reinhard moves an image's CIELAB means and
    spreads to the training labs', which a network reading per-image standardised CIELAB takes out again."""
    if train.input_colour != "lab":
        return ""
    return (" With this recipe the network standardises each image's CIELAB channels itself, which undoes most of "
            "what Reinhard normalisation does (it moves those same means and spreads towards the training labs'), so "
            "Reinhard's rows differ little from those without adaptation.")
