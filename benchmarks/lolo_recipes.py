"""Which training recipe travels to a lab it never saw: notebook 09's leave-one-lab-out rounds, one run per recipe,
compared on the same held-out cells (:mod:`bloodlib.study.lab_recipes`).

Each recipe is a run of notebook 09 (full profile, its LOLO rounds only), made first, one at a time (or each on one
thread), for example:

    OMP_NUM_THREADS=2 python -m bloodlib run --profile full --report-dir outputs/lolo-plain 09_any_lab \\
        -p single_lab False -p all_labs False
    OMP_NUM_THREADS=2 python -m bloodlib run --profile full --report-dir outputs/lolo-hed 09_any_lab \\
        -p single_lab False -p all_labs False -p stain_jitter 0.05
    OMP_NUM_THREADS=2 python -m bloodlib run --profile full --report-dir outputs/lolo-gn 09_any_lab \\
        -p single_lab False -p all_labs False -p model_name resnet18_gn
    OMP_NUM_THREADS=2 python -m bloodlib run --profile full --report-dir outputs/lolo-lab 09_any_lab \\
        -p single_lab False -p all_labs False -p input_colour lab
    python benchmarks/lolo_recipes.py plain=outputs/lolo-plain hed-0.05=outputs/lolo-hed gn=outputs/lolo-gn \\
        lab=outputs/lolo-lab --table benchmarks/results/lolo_recipes.csv

Each run's ``lolo/<model>`` folder (``lolo.json`` and ``cells/``, predictions gzipped; no checkpoint) is kept
under ``benchmarks/results/lolo_runs/<recipe>/``, so the table can be made again without the runs' folders. The first
recipe is the baseline. The table (per recipe, held-out lab and test-time method: macro-F1 and balanced
accuracy with 95% bootstrap intervals, the change against the baseline and McNemar's p on the same cells) is what
notebook 09 shows; the recipe with the best mean macro-F1 without adaptation is the full profile's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bloodlib.study import lab_recipes
from bloodlib.utils import fileio


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", metavar="NAME=FOLDER",
                        help="a recipe's name and its notebook-09 run (report folder, run folder or lolo/<model>)")
    parser.add_argument("--table", type=Path, help="write the comparison here as CSV")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.recipes):
        parser.error("each recipe is NAME=FOLDER")
    recipes = dict(item.split("=", 1) for item in args.recipes)
    table = lab_recipes.compare(recipes, n=args.bootstrap)
    if args.table:
        fileio.write_text(args.table, table.to_csv(index=False, float_format="%.6g"))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(lab_recipes.display_recipes(table).to_string())
    best, means = lab_recipes.chosen(table)
    print("\nmean leave-one-lab-out macro-F1 without adaptation: "
          + ", ".join(f"{name} {value:.3f}" for name, value in means.items()) + f"; best: {best}")
    return table


if __name__ == "__main__":
    main()
