"""Which training recipe travels to a lab it never saw: notebook 09's leave-one-lab-out rounds, one run per recipe,
compared on the same images.

Each recipe is a run of notebook 09 (full profile, its LOLO rounds only), made first, one at a time or each on one
thread, for example:

    OMP_NUM_THREADS=1 python -m bloodlib run --profile full --report-dir outputs/lolo-plain 09_any_lab \\
        -p single_lab False -p all_labs False
    OMP_NUM_THREADS=1 python -m bloodlib run --profile full --report-dir outputs/lolo-hed 09_any_lab \\
        -p single_lab False -p all_labs False -p stain_jitter 0.05
    python benchmarks/lolo_recipes.py plain=outputs/lolo-plain hed-0.05=outputs/lolo-hed \\
        --table benchmarks/results/lolo_recipes.csv

Per held-out lab and test-time method, the table gives each recipe's macro-F1 and balanced accuracy with 95%
bootstrap intervals (whole patients resampled where a lab has them), the change against the first recipe, and
McNemar's test on the two models' errors over the same cells. The recipe with the best macro-F1 averaged over the
held-out labs, without test-time adaptation, is the one the full profile's notebook 09 then trains for its lab x lab
matrix and the model it publishes (``config.DATASET_DEFAULTS[("full", "labs")]``). That choice reads the three
project labs' LOLO rounds, which serve as its validation; its numbers here are thus optimistic by the choice, and
only labs kept out of the project test the published model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bloodlib import evaluation
from bloodlib.study import lolo


def lolo_folder(path: Path) -> Path:
    """The ``lolo/<model>`` folder of a report folder, a run folder, or that folder itself."""
    path = Path(path)
    if (path / lolo.RECORD).is_file():
        return path
    if (path / "published.json").is_file():
        path = path / json.loads((path / "published.json").read_text())["run"]
    found = sorted(path.glob(f"{lolo.FOLDER}/*/{lolo.RECORD}")) or sorted(path.glob(f"runs/*/{lolo.FOLDER}/*/{lolo.RECORD}"))
    if not found:
        raise FileNotFoundError(f"{path}: no leave-one-lab-out run (notebook 09) here")
    if len(found) > 1:
        raise ValueError(f"{path}: several leave-one-lab-out runs ({', '.join(str(f.parent) for f in found)}); name one")
    return found[0].parent


def compare(recipes: dict[str, Path], *, n: int = 2000, seed: int = 42) -> pd.DataFrame:
    """A row per held-out lab, method and recipe (module doc)."""
    rounds = {name: [c for c in lolo.load_cells(lolo_folder(folder)) if c.images == lolo.HELD_OUT]
              for name, folder in recipes.items()}
    settings = {name: json.loads((lolo_folder(folder) / lolo.RECORD).read_text())["settings"]
                for name, folder in recipes.items()}
    baseline = next(iter(recipes))
    by_key = {name: {(c.tested_on, c.method): c.evaluation for c in cells} for name, cells in rounds.items()}
    rows = []
    for name, cells in rounds.items():
        for cell in cells:
            ev, first = cell.evaluation, by_key[baseline].get((cell.tested_on, cell.method))
            ci = evaluation.evaluation_ci(ev, n=n, seed=seed)
            row = {"held out": cell.tested_on, "method": cell.method, "recipe": name,
                   "stain_jitter": settings[name]["train"].get("stain_jitter", 0.0), "trained on": cell.trained_on,
                   "images": len(ev.y_true)}
            for metric in ("macro_f1", "balanced_accuracy"):
                row[metric] = ci.loc[metric, "value"]
                row[f"{metric}_low"], row[f"{metric}_high"] = ci.loc[metric, "low"], ci.loc[metric, "high"]
            if first is not None and name != baseline:
                if not np.array_equal(first.ids, ev.ids):
                    raise ValueError(f"{cell.tested_on}: recipes {baseline} and {name} were scored on other images")
                baseline_f1 = evaluation.metrics(first.y_true, first.y_prob, first.classes)["macro_f1"]
                row["macro_f1_change"] = row["macro_f1"] - baseline_f1
                row["mcnemar_p"] = evaluation.mcnemar(ev.y_true, first.y_pred, ev.y_pred)["p_value"]
            rows.append(row)
    return pd.DataFrame(rows)


def chosen(table: pd.DataFrame) -> tuple[str, pd.Series]:
    """The recipe with the best macro-F1 averaged over the held-out labs without adaptation, and every recipe's mean."""
    means = table[table["method"] == "none"].groupby("recipe", sort=False)["macro_f1"].mean()
    return str(means.idxmax()), means


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", metavar="NAME=FOLDER",
                        help="a recipe's name and its notebook-09 run (report folder, run folder or lolo/<model>); "
                             "the first is the baseline")
    parser.add_argument("--table", type=Path, help="write the comparison here as CSV")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    recipes = dict(item.split("=", 1) for item in args.recipes)
    table = compare({name: Path(folder) for name, folder in recipes.items()}, n=args.bootstrap)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.table.with_name(args.table.name + ".tmp")
        table.to_csv(tmp, index=False, float_format="%.6g")
        tmp.replace(args.table)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    best, means = chosen(table)
    print("\nmean leave-one-lab-out macro-F1 without adaptation: "
          + ", ".join(f"{name} {value:.3f}" for name, value in means.items()) + f"; best: {best}")
    return table


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
