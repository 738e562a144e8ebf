"""Notebook 07: every model side by side, paired tests, and a conclusion written from the numbers."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pandas as pd

from bloodlib import evaluation
from bloodlib.evaluation.significance import format_p
from bloodlib.study import recipes, reruns
from bloodlib.utils import fileio

ALPHA = 0.05
P_COLUMNS = ("p_value", "p_holm")  # the p-values of evaluation.pairwise_mcnemar and pairwise_fold_tests
NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclasses.dataclass
class Comparison:
    table: pd.DataFrame  # one row per model: metrics with CIs, parameters, FLOPs, times
    mcnemar: pd.DataFrame  # every pair on the same test images
    fold_tests: pd.DataFrame | None  # every pair over the same folds (cross-validation only)
    evaluations: dict[str, evaluation.Evaluation]
    tuning: pd.DataFrame | None = None  # how each recipe was chosen (recipes.tuning_table), when asked
    spread: pd.DataFrame | None = None  # the models' reruns over seeds (reruns.read_spread), when given


def compare(models_dir: str | Path, *, n: int = 2000, seed: int = 0, trials: pd.DataFrame | None = None,
            tuning: bool = False, spread: pd.DataFrame | None = None) -> Comparison:
    """Load every saved evaluation under ``models_dir`` and compare them on the same test images; ranked by
    fold-mean macro-F1 under cross-validation (the folds are the unit of the claim), else by macro-F1.
    ``tuning``: also say how each recipe was chosen, from the search's ``trials`` table
    (:func:`bloodlib.study.recipes.tuning_table`). ``spread``: the seed-spread table
    (:func:`bloodlib.study.reruns.read_spread`), so that the conclusion says whether the ranking holds under every
    seed."""
    evals = evaluation.load_all(models_dir)
    if not evals:
        raise FileNotFoundError(f"{models_dir}: no saved evaluation (metrics.json); run notebooks 04-06 first")
    table = evaluation.comparison_table(evals, n=n, seed=seed)
    table.insert(0, "mode", [ev.extra.get("mode") for ev in evals.values()])
    table.insert(1, "image_size", [str(ev.extra.get("image_size")) for ev in evals.values()])
    table["fold_macro_f1"] = [_fold_mean(ev) for ev in evals.values()]
    table["validation_accuracy"] = [(ev.extra.get("validation") or {}).get("accuracy", float("nan"))
                                    for ev in evals.values()]
    cv = all(ev.fold is not None for ev in evals.values())
    table = table.sort_values("fold_macro_f1" if cv else "macro_f1", ascending=False)
    folds = evaluation.pairwise_fold_tests(evals) if cv and len(evals) > 1 else None
    return Comparison(table, evaluation.pairwise_mcnemar(evals), folds, evals,
                      recipes.tuning_table({m: evals[m] for m in table.index}, trials) if tuning else None, spread)


def further_test_sets(output_dir: str | Path, *, n: int = 2000, seed: int = 0) -> dict[str, Comparison]:
    """The models compared on each further test set of the dataset (``output_dir/extra/<split>``, such as
    TEST_SIMPLE of kaggle-augmented), kept apart from the main comparison."""
    root = Path(output_dir) / "extra"
    found = sorted({path.parent.parent for path in root.glob("*/*/metrics.json")})
    return {p.name: compare(p, n=n, seed=seed) for p in found}


def _fold_mean(ev: evaluation.Evaluation) -> float:
    if ev.fold is None:
        return float("nan")
    return float(evaluation.fold_metrics(ev)["macro_f1"].mean())


def display_table(comparison: Comparison) -> pd.DataFrame:
    """The table a reader wants: "0.912 [0.881, 0.940]" per metric, sizes and times rounded."""
    table = comparison.table
    shown = pd.DataFrame(index=table.index)
    for metric in evaluation.HEADLINE:
        shown[evaluation.METRIC_LABELS[metric]] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in
                       zip(table[metric], table[f"{metric}_low"], table[f"{metric}_high"])]
    if "validation_accuracy" in table and table["validation_accuracy"].notna().any():
        shown["validation accuracy"] = table["validation_accuracy"].round(3)  # beside the test's: is it honest?
    shown["parameters (M)"] = (table["params"] / 1e6).round(2)
    shown["GFLOPs / image"] = (table["flops"] / 1e9).round(3)
    shown["training time (s)"] = table["train_seconds"].round(0)
    shown["inference (images/s)"] = table["throughput"].round(0)
    shown["weights"] = [initial_weights(comparison.evaluations[model]) for model in table.index]
    shown["test images"] = table["n_test"]
    return shown


def display_tuning(comparison: Comparison) -> pd.DataFrame:
    """The tuning table (:func:`bloodlib.study.recipes.tuning_table`), scores to three decimals."""
    if comparison.tuning is None:
        raise ValueError("compare(..., tuning=True) makes the tuning table")
    return comparison.tuning.round(3)


def display_tests(tests: pd.DataFrame, *, p_columns=P_COLUMNS, decimals: int = 4) -> pd.DataFrame:
    """Paired tests as a reader wants them: each p-value by :func:`~bloodlib.evaluation.significance.format_p`
    ("3.8e-14", "0.26": rounded to decimals a small p would read 0.0), other numbers to ``decimals``. For display
    only: the saved tables keep the full numbers."""
    shown = tests.round(decimals)
    for column in p_columns:
        shown[column] = [format_p(p) for p in tests[column]]
    return shown


def initial_weights(ev: evaluation.Evaluation) -> str:
    """How ``ev``'s model started, from its record (``extra["initial_weights"]``, else ``pretrained_source``),
    as a past participle: "trained from scratch", "fine-tuned from a resnet18 backbone trained on pbc (96x96 px)"."""
    record = ev.extra.get("initial_weights") or {}
    kind = record.get("kind") or ev.pretrained_source
    if kind == "checkpoint":
        size = "x".join(str(side) for side in record.get("image_size") or [])
        return (f"fine-tuned from a {record.get('model') or 'saved'} backbone trained on "
                f"{record.get('dataset') or record.get('path')}" + (f" ({size} px)" if size else ""))
    known = {"scratch": "trained from scratch", "imagenet": "fine-tuned from ImageNet weights"}
    return known.get(kind, f"started from {kind}" if kind else "started from weights that were not recorded")


def weights_sentence(comparison: Comparison) -> str:
    """Which initial weights each model of the table had, models with the same start named together."""
    starts: dict[str, list[str]] = {}
    for model in comparison.table.index:
        starts.setdefault(initial_weights(comparison.evaluations[model]), []).append(str(model))
    if len(starts) == 1 and len(comparison.table) > 1:
        (start, names), = starts.items()
        count = len(names)
        every = "both" if count == 2 else f"all {NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else count}"
        return f"Initial weights, from each model's record: {every} models were {start}."
    return "Initial weights, from each model's record: " + "; ".join(
        f"{_listed(names)} {'was' if len(names) == 1 else 'were'} {start}" for start, names in starts.items()) + "."


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def conclusion(comparison: Comparison, alpha: float = ALPHA) -> str:
    """Paragraphs that state the ranking and say plainly which differences are significant: over folds first (the
    unit of the claim under cross-validation), then on the pooled predictions, then how the recipes were chosen."""
    table, pairs = comparison.table, comparison.mcnemar
    p = functools.partial(format_p, alpha=alpha)  # never rounded across alpha
    lines = []
    folds = comparison.fold_tests
    if folds is not None and len(folds):
        k = int(folds["folds"].iloc[0])
        lines.append(f"Ranked by fold-mean macro-F1 over the {k} folds (each fold's model scored on cells it never "
                     f"saw; the folds are the unit of the claim): "
                     + ", ".join(f"**{m}** {v:.3f}" for m, v in table["fold_macro_f1"].items()) + ".")
        significant = folds[folds["p_holm"] < alpha]
        lines.append("The corrected resampled t-test over folds (Nadeau and Bengio; the folds share training "
                     "images), Holm-adjusted: " + "; ".join(
                         f"{r.model_a} vs {r.model_b} p = {p(r.p_value)} (Holm {p(r.p_holm)})" for r in folds.itertuples())
                     + (f". **No pair differs significantly** at {alpha} over {k} folds." if significant.empty else
                        ". Significant: " + ", ".join(f"{r.model_a} vs {r.model_b}" for r in significant.itertuples())
                        + "."))
    if comparison.spread is not None and len(table) > 1:
        lines.append(reruns.ranking_sentence(comparison.spread, list(table.index))
                     + " Each seed of the seed-spread table trains every model again, on that seed's folds.")
    best = table.index[0]
    row = table.loc[best]
    lines.append(f"On the {int(row['n_test'])} pooled test predictions **{best}** has macro-F1 {row['macro_f1']:.3f} "
                 f"(95% CI {row['macro_f1_low']:.3f}–{row['macro_f1_high']:.3f}), balanced accuracy "
                 f"{row['balanced_accuracy']:.3f} ({row['balanced_accuracy_low']:.3f}–"
                 f"{row['balanced_accuracy_high']:.3f}).")
    for other in table.index[1:]:
        o = table.loc[other]
        overlap = o["macro_f1_high"] >= row["macro_f1_low"]
        lines.append(f"{other}: macro-F1 {o['macro_f1']:.3f} ({o['macro_f1_low']:.3f}–{o['macro_f1_high']:.3f})"
                     + (f", its interval overlapping {best}'s." if overlap else f", its interval below {best}'s."))
    if len(pairs):
        grouped = pairs["method"].str.startswith("sign-flip").any()
        test = "a paired permutation test over source smears" if grouped else "McNemar's test"
        short = "permutation" if grouped else "McNemar"
        significant = pairs[pairs["p_holm"] < alpha]
        if significant.empty:
            lines.append(f"{test[0].upper() + test[1:]} finds **no significant difference** between any two models "
                         f"on the same test images (every Holm-adjusted p ≥ {alpha}): with this little data the "
                         f"ranking above may be chance.")
        else:
            for r in significant.itertuples():
                better = r.model_a if r.accuracy_a > r.accuracy_b else r.model_b
                lines.append(f"{r.model_a} vs {r.model_b}: {short} p = {p(r.p_value)} (Holm {p(r.p_holm)}); "
                             f"**{better}** is significantly more accurate on the pooled predictions.")
            rest = pairs[pairs["p_holm"] >= alpha]
            for r in rest.itertuples():
                lines.append(f"{r.model_a} vs {r.model_b}: not significant ({short} p = {p(r.p_value)}, "
                             f"Holm {p(r.p_holm)}).")
        if folds is not None and len(folds):
            lines.append("McNemar's test holds each trained model fixed and counts images: it says that these models "
                         "differ on these cells, not that models trained again would; the test over folds speaks to "
                         "that.")
        if grouped:
            lines.append("The test images are augmented copies of fewer source smears, so the paired test and the "
                         "intervals count smears, not copies.")
    if comparison.tuning is not None:
        lines.append(recipes.tuning_sentence(comparison.tuning))
    lines.append(weights_sentence(comparison))
    return "\n\n".join(lines)


def save(comparison: Comparison, folder: str | Path, figure=None) -> Path:
    """``comparison.csv``/``.json``, the paired tests and the headline figure, for the report's index page."""
    folder = Path(folder)
    fileio.write_csv(folder / "comparison.csv", comparison.table, index=True)
    fileio.write_json(folder / "comparison.json", {
        "table": comparison.table.reset_index().to_dict(orient="records"),
        "mcnemar": comparison.mcnemar.to_dict(orient="records"),
        "fold_tests": None if comparison.fold_tests is None else comparison.fold_tests.to_dict(orient="records"),
        "conclusion": conclusion(comparison),
    })
    if figure is not None:
        with fileio.atomic_path(folder / "headline.png") as tmp:
            figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return folder
