"""The study protocol (splits per model), a whole model run on real crops, and the comparison."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib.study import comparison, experiment
from bloodlib import config, evaluation, models
from bloodlib.data import datasets
from bloodlib.data.datasets import ImageSet


def synthetic_set(n_per_class=(24, 16, 14, 40), size=32, groups_of=1, own_test_set=False) -> ImageSet:
    """Four classes told apart by colour; ``groups_of`` consecutive images share a group (copies of one source);
    ``own_test_set``: the dataset brings its own train/test split (as kaggle-augmented), else none (as BCCD)."""
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(n_per_class)])
    rng = np.random.default_rng(0)
    colours = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]], np.uint8)
    images = colours[labels][:, :, None, None] + rng.integers(0, 40, (len(labels), 3, size, size))
    rows = pd.DataFrame({"id": [f"img{i}" for i in range(len(labels))], "label": labels,
                         "split": rng.choice(["train", "test"], len(labels), p=[.8, .2]) if own_test_set else "",
                         "group": [f"g{i // groups_of}" for i in range(len(labels))]})
    return ImageSet(images=torch.tensor(images.clip(0, 255).astype(np.uint8)), labels=torch.tensor(labels),
                    classes=list("ABCD"), rows=rows)


def _prepared(data, tmp_path, **overrides) -> datasets.Prepared:
    settings = config.resolve(profile="smoke", output_dir=tmp_path, **overrides)
    data.rows, planned, how = datasets.split(data.rows, settings)
    return datasets.Prepared(settings=settings, root=tmp_path, cleaning=None, data=data, boxes=None, splits=planned,
                             protocol=how)


def test_model_runs_are_saved_and_compared(tmp_path):
    data = synthetic_set()
    prepared = _prepared(data, tmp_path, epochs=1, folds=2, image_size=32, bootstrap=50)
    runs = {name: experiment.run_model(prepared, name, pretrained="scratch", progress=False)
            for name in ("resnet18", "efficientnet_b0")}
    run = runs["resnet18"]
    for name in ("metrics.json", "predictions.csv", "history.csv", "best.pt", "split-02/best.pt"):
        assert (tmp_path / "models" / "resnet18" / name).is_file(), name
    assert sorted(run.evaluation.ids) == sorted(data.rows["id"])
    assert run.evaluation.pretrained_source == "scratch"
    tables = experiment.statistics(run, n=50)
    assert {"headline", "per_class", "confusion", "fold_summary", "splits"} <= set(tables)
    assert tables["confusion"].to_numpy().sum() == len(data)

    result = comparison.compare(tmp_path / "models", n=50)
    assert set(result.table.index) == {"resnet18", "efficientnet_b0"}
    assert len(result.mcnemar) == 1 and result.fold_tests is not None
    assert result.fold_tests["method"].str.contains("corrected resampled t-test").all()
    assert run.evaluation.extra["test_train_ratio"] == pytest.approx(
        np.mean([len(s.test) / len(s.train) for s in run.splits]))
    text = comparison.conclusion(result)
    assert "trained from scratch" in text and "macro-F1" in text and "corrected resampled t-test" in text
    assert text.startswith("Ranked by fold-mean macro-F1 over the 2 folds")  # the unit of the claim first
    assert text.index("corrected resampled t-test") < text.index("McNemar")
    # how each recipe was chosen: no search here, and the conclusion says the race was not tuned alike
    tuned = comparison.compare(tmp_path / "models", n=50, trials=None, tuning=True)
    assert (tuned.tuning["status"] == "not searched yet: trained with the default recipe").all()
    assert "were **not** all chosen the same way" in comparison.conclusion(tuned)
    assert list(tuned.tuning.index) == list(tuned.table.index)
    # reruns over seeds: the conclusion says, after the test over folds, whether the ranking holds under each seed
    first, second = tuned.table.index
    spread = pd.DataFrame([dict(model=m, seed=s, fold_mean_macro_f1=v, precision="fp32") for m, s, v in [
        (first, 42, 0.8), (second, 42, 0.6), (first, 43, 0.5), (second, 43, 0.7)]])
    rerun = comparison.compare(tmp_path / "models", n=50, spread=spread)
    text = comparison.conclusion(rerun)
    said = f"Over 2 seeds: {first} > {second} **not** under every seed"
    assert said in text and text.index("corrected resampled t-test") < text.index(said) < text.index("McNemar")
    assert "Over 2 seeds" not in comparison.conclusion(result)  # no table given, nothing said
    comparison.save(result, tmp_path / "comparison")
    assert (tmp_path / "comparison" / "comparison.csv").is_file()


def test_conclusion_says_plainly_when_nothing_is_significant():
    y = np.array([0, 1, 2, 3] * 10)
    prob = np.eye(4)[y] * 0.7 + 0.075
    flipped = prob.copy()
    flipped[:3] = np.roll(flipped[:3], 1, axis=1)  # three more mistakes: far from significant
    evals = {"a": evaluation.Evaluation("a", list("ABCD"), y, prob, np.arange(40)),
             "b": evaluation.Evaluation("b", list("ABCD"), y, flipped, np.arange(40))}
    table = evaluation.comparison_table(evals, n=50)
    result = comparison.Comparison(table.sort_values("macro_f1", ascending=False), evaluation.pairwise_mcnemar(evals),
                                   None, evals)
    assert "no significant difference" in comparison.conclusion(result)
    for ev in evals.values():  # the same images as copies of 10 smears: smears are compared, and it says so
        ev.groups = np.repeat(np.arange(10), 4).astype(str)
    result = comparison.Comparison(table, evaluation.pairwise_mcnemar(evals), None, evals)
    text = comparison.conclusion(result)
    assert "A paired permutation test over source smears finds **no significant difference**" in text
    assert "count smears, not copies" in text


def test_compare_without_runs_is_a_clear_error(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(FileNotFoundError, match="run notebooks 04-06 first"):
        comparison.compare(tmp_path / "models")


def test_holdout_run_reports_validation_beside_every_test_set(tmp_path):
    data = synthetic_set(own_test_set=True)
    simple = data.indices("test")[:6]
    data.rows.loc[simple, "split"] = "test_simple"  # a further test set, as TEST_SIMPLE of kaggle-augmented
    prepared = _prepared(data, tmp_path, epochs=1, folds=2, image_size=32, bootstrap=50)
    run = experiment.run_model(prepared, "resnet18", pretrained="scratch", progress=False)
    assert run.protocol == "holdout" and set(run.extra_evaluations) == {"test_simple"}
    assert (tmp_path / "extra" / "test_simple" / "resnet18" / "metrics.json").is_file()
    table = experiment.test_sets_table(run, n=50)
    assert list(table.index) == ["validation (at the kept epoch)", "test", "test_simple"]
    assert table.loc["test", "images"] == len(data.indices("test")) and table.loc["test_simple", "images"] == 6
    assert table.loc["validation (at the kept epoch)", "accuracy"] == run.fits[0].kept_val["accuracy"]
    assert run.evaluation.extra["validation"]["accuracy"] == run.fits[0].kept_val["accuracy"]


def test_further_test_sets_are_compared_apart(tmp_path):
    data = synthetic_set(own_test_set=True)
    data.rows.loc[data.indices("test")[:6], "split"] = "test_simple"
    prepared = _prepared(data, tmp_path, epochs=1, folds=2, image_size=32, bootstrap=50)
    for name in ("resnet18", "efficientnet_b0"):
        experiment.run_model(prepared, name, pretrained="scratch", progress=False)
    further = comparison.further_test_sets(tmp_path, n=50)
    assert list(further) == ["test_simple"]
    assert set(further["test_simple"].table["n_test"]) == {6}
    shown = comparison.display_table(comparison.compare(tmp_path / "models", n=50))
    assert "validation accuracy" in shown.columns
    assert comparison.further_test_sets(tmp_path / "nothing", n=50) == {}


def test_the_registry_recipe_applies_from_scratch_on_its_dataset_and_the_caller_wins(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MODEL_RECIPES", {("bccd", "efficientnet_b0"): {"lr": 3e-3}})
    seen = []
    monkeypatch.setattr(experiment.train, "fit", lambda model, data, tr, va, cfg, **kw: seen.append(cfg.lr) or 1 / 0)
    # no backbone trained, no weights host contacted: every start is a random one here, only the recipe differs
    monkeypatch.setattr(experiment.backbones, "resolve_pretrained", lambda *a: models.InitialWeights("scratch"))
    prepared = _prepared(synthetic_set(), tmp_path, epochs=1, folds=2, image_size=32)
    base = config.TrainConfig().lr
    for pretrained, overrides in (("scratch", {}), ("scratch", {"lr": 1e-4}), ("pbc", {}), ("imagenet", {})):
        with pytest.raises(ZeroDivisionError):
            experiment.run_model(prepared, "efficientnet_b0", pretrained=pretrained, progress=False, **overrides)
    # a recipe tuned from scratch is not a fine-tuning recipe: a pretrained start keeps the layers below it
    assert seen == [3e-3, 1e-4, base, base]
    # nor is it another dataset's: a recipe chosen on BCCD's cells stays there
    assert config.resolve("smoke", model="efficientnet_b0", dataset="pbc").train.lr == base
    assert config.resolve("smoke", model="efficientnet_b0").train.lr == 3e-3
    assert config.resolve("smoke", model="efficientnet_b0", from_scratch=False).train.lr == base


def test_errors_by_source_only_where_test_images_share_sources():
    from types import SimpleNamespace

    y = np.array([0, 0, 0, 1, 1, 1])
    prob = np.eye(2)[[0, 1, 1, 1, 1, 0]]  # two errors in smear s0's copies, one in s1's
    def run_with(groups):
        return SimpleNamespace(evaluation=evaluation.Evaluation("m", ["A", "B"], y, prob, ids=range(6), groups=groups))
    table = experiment.errors_by_source(run_with(["s0", "s0", "s0", "s1", "s1", "s1"]))
    assert list(table["group"]) == ["s0", "s1"] and list(table["errors"]) == [2, 1]
    assert experiment.errors_by_source(run_with([f"img{i}" for i in range(6)])) is None  # BCCD: one image each
    assert experiment.errors_by_source(run_with(None)) is None
