"""Notebook 08's tables: train x test scores with intervals, gap-narrowing before and after on the same images,
from scratch against fine-tuned on the same folds (the notebook itself runs under nbmake on real data)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bloodlib import config, evaluation
from bloodlib.study import transfer
from conftest import check_figure

CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def made_up(correct: float, seed: int, folds: bool = False, n: int = 120) -> evaluation.Evaluation:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    right = rng.random(n) < correct
    pred = np.where(right, y, (y + 1) % 4)
    prob = np.full((n, 4), 0.1)
    prob[np.arange(n), pred] = 0.7
    return evaluation.Evaluation("resnet18", CLASSES, y, prob, ids=[f"i{i}" for i in range(n)],
                                 fold=np.arange(n) % 3 if folds else None, repeat=np.zeros(n, int) if folds else None)


def test_the_notebook_says_when_there_is_no_second_lab(tmp_path):
    assert "is pbc itself" in transfer.applies(config.resolve("smoke", output_dir=tmp_path, dataset="pbc"), "pbc")
    assert "seen" in transfer.applies(config.resolve("smoke", output_dir=tmp_path, dataset="kaggle-augmented"), "bccd")
    assert transfer.applies(config.resolve("smoke", output_dir=tmp_path), "pbc") is None
    assert transfer.conclusion(transfer.AcrossLabs("no second lab")) == "Nothing to compare: no second lab."


def test_train_by_test_table_heatmap_and_intervals():
    cells = [transfer.Cell("resnet18", a, b, "every image", made_up(c, s))
             for s, (a, b, c) in enumerate([("bccd", "bccd", .9), ("bccd", "pbc", .4), ("pbc", "pbc", .95),
                                            ("pbc", "bccd", .3)])]
    scores = transfer.table(cells, n=100)
    assert list(scores["macro_f1"].round(1)) == pytest.approx([0.9, 0.4, 0.9, 0.3], abs=0.11)
    assert (scores["macro_f1_low"] <= scores["macro_f1"]).all() and (scores["macro_f1"] <= scores["macro_f1_high"]).all()
    shown = transfer.display_table(scores)
    assert shown.loc[0, "macro-F1"].startswith(f"{scores.loc[0, 'macro_f1']:.3f} [")
    check_figure(transfer.heatmap(scores))


def test_gap_narrowing_is_measured_on_the_same_images():
    none, better = made_up(0.3, 1), made_up(0.6, 2)
    gaps = transfer.gap_table({"none": transfer.Cell("m", "pbc", "bccd", "all", none),
                               "adabn": transfer.Cell("m", "pbc", "bccd", "all", better)}, n=100)
    assert gaps.loc["adabn", "change in macro-F1"] > 0.2 and gaps.loc["adabn", "McNemar p (vs none)"] < 0.05
    other = made_up(0.6, 2, n=100)
    with pytest.raises(ValueError, match="other images"):
        transfer.gap_table({"none": transfer.Cell("m", "pbc", "bccd", "all", none),
                            "adabn": transfer.Cell("m", "pbc", "bccd", "all", other)})


def test_finetuned_against_scratch_on_the_same_folds():
    compared = transfer.finetuned_against_scratch(made_up(0.6, 3, folds=True), made_up(0.9, 4, folds=True))
    assert len(compared["per_fold"]) == 3 and (compared["per_fold"]["difference"] > 0).all()
    assert "corrected resampled t-test" in compared["fold_test"].loc[0, "method"]
    assert compared["mcnemar"].loc[0, "p_value"] < 0.05


def test_the_finetuning_recipe_is_layered_below_what_the_caller_sets(tmp_path, monkeypatch):
    monkeypatch.setitem(config.FINETUNE_RECIPES, ("full", "bccd"), dict(epochs=7, backbone_lr_scale=0.5))
    full = config.resolve("full", output_dir=tmp_path, model="resnet18")
    assert transfer.finetune_recipe(full) == dict(epochs=7, backbone_lr_scale=0.5)
    # a notebook parameter wins over the fine-tuning layer
    asked = config.resolve("full", output_dir=tmp_path, model="resnet18", epochs=3)
    assert transfer.finetune_recipe(asked) == dict(backbone_lr_scale=0.5)
    # the smoke profile's few epochs are not stretched by the full profile's fine-tuning recipe
    assert transfer.finetune_recipe(config.resolve("smoke", output_dir=tmp_path)) == {}
    # nor is another dataset's recipe
    assert transfer.finetune_recipe(config.resolve("full", output_dir=tmp_path, dataset="folder:/x")) == {}


def test_the_conclusion_names_the_best_gap_narrowing_method_once():
    lab = {name: SimpleNamespace(settings=SimpleNamespace(dataset=name)) for name in ("bccd", "pbc")}
    cells = [transfer.Cell("resnet18", a, b, "every image", made_up(c, s))
             for s, (a, b, c) in enumerate([("bccd", "bccd", .9), ("bccd", "pbc", .4)])]
    none, reinhard, adabn = (made_up(c, 5, n=100) for c in (0.3, 0.8, 0.6))
    gaps = transfer.gap_table({m: transfer.Cell("resnet18", "pbc", "bccd", "all", ev)
                               for m, ev in [("none", none), ("reinhard", reinhard), ("adabn", adabn)]}, n=50)
    text = transfer.conclusion(transfer.AcrossLabs(None, lab["bccd"], lab["pbc"], cells=cells,
                                                   gaps={"resnet18": gaps}))
    sentence = next(line for line in text.split("\n") if line.startswith("Of the gap-narrowing"))
    assert sentence.count("reinhard") == 1 and sentence.count("adabn") == 1
    assert "reinhard moved pbc -> bccd macro-F1 the most" in sentence
