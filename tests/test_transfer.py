"""Notebook 08's tables: train x test scores with intervals, gap-narrowing before and after on the same images,
from scratch against fine-tuned on the same folds (the notebook itself runs under nbmake on real data)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bloodlib import config, evaluation
from bloodlib.study import comparison, transfer
from conftest import check_figure, tick_labels

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


def test_the_heatmap_shows_every_cell_of_models_trained_in_one_lab_or_two():
    """As notebook 08 has it: resnet18 trained in both labs (2 x 2), alexnet at home only (1 x 2), alexnet last."""
    pairs = [("resnet18", "bccd", "bccd", .9), ("resnet18", "bccd", "pbc", .4), ("alexnet", "bccd", "bccd", .7),
             ("alexnet", "bccd", "pbc", .2), ("resnet18", "pbc", "pbc", .95), ("resnet18", "pbc", "bccd", .3)]
    scores = transfer.table([transfer.Cell(m, a, b, "every image", made_up(c, s))
                             for s, (m, a, b, c) in enumerate(pairs)], n=20)
    fig = transfer.heatmap(scores)
    check_figure(fig)
    resnet, alexnet = fig.axes
    assert (resnet.get_title(), alexnet.get_title()) == ("resnet18", "alexnet")
    assert tick_labels(resnet, "y") == ["bccd", "pbc"] and tick_labels(alexnet, "y") == ["bccd"]
    assert tick_labels(resnet, "x") == tick_labels(alexnet, "x") == ["bccd", "pbc"]
    assert len(resnet.texts) == 4 and len(alexnet.texts) == 2
    f1 = scores.set_index(["model", "trained on", "tested on"])["macro_f1"]
    assert resnet.texts[2].get_text() == f"{f1['resnet18', 'pbc', 'bccd']:.2f}"  # pbc -> bccd, once cut off


def test_gap_narrowing_is_measured_on_the_same_images():
    none, better = made_up(0.3, 1), made_up(0.6, 2)
    gaps = transfer.gap_table({"none": transfer.Cell("m", "pbc", "bccd", "all", none),
                               "adabn": transfer.Cell("m", "pbc", "bccd", "all", better)}, n=100)
    assert gaps.loc["adabn", "change in macro-F1"] > 0.2 and gaps.loc["adabn", "McNemar p (vs none)"] < 0.05
    shown = transfer.display_gap(gaps)  # the p-value as a reader wants it; the table keeps the number
    assert list(shown[transfer.GAP_P]) == ["–", evaluation.significance.format_p(gaps.loc["adabn", transfer.GAP_P])]
    assert "e-" in shown.loc["adabn", transfer.GAP_P] and gaps[transfer.GAP_P].dtype == float
    other = made_up(0.6, 2, n=100)
    with pytest.raises(ValueError, match="other images"):
        transfer.gap_table({"none": transfer.Cell("m", "pbc", "bccd", "all", none),
                            "adabn": transfer.Cell("m", "pbc", "bccd", "all", other)})


def test_finetuned_against_scratch_on_the_same_folds():
    compared = transfer.finetuned_against_scratch(made_up(0.6, 3, folds=True), made_up(0.9, 4, folds=True))
    assert len(compared["per_fold"]) == 3 and (compared["per_fold"]["difference"] > 0).all()
    assert "corrected resampled t-test" in compared["fold_test"].loc[0, "method"]
    assert compared["mcnemar"].loc[0, "p_value"] < 0.05
    per_fold, fold_test, mcnemar = transfer.display_finetuned(compared)
    assert per_fold.equals(compared["per_fold"].round(3))
    for shown, table in ((fold_test, compared["fold_test"]), (mcnemar, compared["mcnemar"])):
        assert list(shown["p_value"]) == [evaluation.significance.format_p(p) for p in table["p_value"]]
        assert list(shown["p_holm"]) == [evaluation.significance.format_p(p) for p in table["p_holm"]]
    assert mcnemar.loc[0, "p_value"] != "0.0" and mcnemar.loc[0, "n01"] == compared["mcnemar"].loc[0, "n01"]


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
    p = evaluation.significance.format_p(gaps.loc["reinhard", transfer.GAP_P])
    assert "e-" in p and f"(McNemar p = {p})" in sentence


def test_the_comparison_says_how_each_model_started_from_its_record():
    """Notebook 07's last sentence: the initial weights each model's record gives, never a guess; its p-values
    in scientific notation where small."""
    backbone = {"kind": "checkpoint", "model": "resnet18", "dataset": "pbc", "image_size": [96, 96]}
    evals = {name: made_up(c, s) for s, (name, c) in enumerate([("resnet18", .95), ("efficientnet_b0", .5),
                                                                 ("alexnet", .45)])}
    for name, ev in evals.items():
        ev.model, ev.pretrained_source = name, "scratch"
        ev.params, ev.flops, ev.train_seconds, ev.throughput = 1e7, 1e9, 60.0, 500.0
        ev.extra["initial_weights"] = {"kind": "scratch"}

    def conclusion():
        table = evaluation.comparison_table(evals, n=20).sort_values("macro_f1", ascending=False)
        result = comparison.Comparison(table, evaluation.pairwise_mcnemar(evals), None, evals)
        return result, comparison.conclusion(result)

    result, text = conclusion()
    assert text.endswith("Initial weights, from each model's record: all three models were trained from scratch.")
    assert "ImageNet" not in text and "p = 0.0 " not in text and "e-" in text  # resnet18's p is tiny
    shown = comparison.display_tests(result.mcnemar)
    assert list(shown["p_value"]) == [evaluation.significance.format_p(p) for p in result.mcnemar["p_value"]]
    assert comparison.display_table(result).loc["alexnet", "weights"] == "trained from scratch"

    evals["resnet18"].pretrained_source, evals["resnet18"].extra["initial_weights"] = "pretrained on pbc", backbone
    evals["alexnet"].pretrained_source, evals["alexnet"].extra = "imagenet", {}  # an older record: the few words
    result, text = conclusion()
    assert text.endswith("Initial weights, from each model's record: resnet18 was fine-tuned from a resnet18 "
                         "backbone trained on pbc (96x96 px); efficientnet_b0 was trained from scratch; alexnet was "
                         "fine-tuned from ImageNet weights.")
    evals["alexnet"].pretrained_source = None
    assert "alexnet was started from weights that were not recorded" in conclusion()[1]


def test_saved_cells_come_back_as_they_were_with_their_notes(tmp_path):
    none = transfer.Cell("resnet18", "pbc", "bccd", "every image (shared classes)", made_up(0.3, 5, n=100))
    adapted = transfer.Cell("resnet18", "pbc", "bccd", "every image (shared classes)", made_up(0.8, 5, n=100),
                            method="reinhard")
    adapted.evaluation.extra["notes"] = ["fitted on 256 images of pbc"]
    transfer.save_cells([none, adapted], tmp_path / "cells", n=50)
    back = transfer.load_cells(tmp_path / "cells")
    assert [(c.model, c.trained_on, c.tested_on, c.images, c.method) for c in back] == [
        ("resnet18", "pbc", "bccd", "every image (shared classes)", "none"),
        ("resnet18", "pbc", "bccd", "every image (shared classes)", "reinhard")]
    assert back[1].notes == ["fitted on 256 images of pbc"] and back[0].notes == []
    for old, new in zip((none, adapted), back):
        assert (new.evaluation.ids == old.evaluation.ids).all()
        assert (new.evaluation.y_prob == old.evaluation.y_prob).all()
    gap = transfer.gap_table({"none": back[0], "reinhard": back[1]}, n=50)
    assert gap.loc["reinhard", "notes"] == "fitted on 256 images of pbc"
