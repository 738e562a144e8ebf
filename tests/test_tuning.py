"""The tuning search (:mod:`bloodlib.tuning`): trials score validation parts only, every model gets the same
trials, a search resumes from its storage, and the chosen recipes are what the notebooks train with.

Trials here train resnet18 / alexnet for one or two epochs on 16 px synthetic cells: the protocol, not a result."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib import config
from bloodlib.data import splits
from bloodlib.data.datasets import Prepared
from bloodlib.data.synthetic import toy_imageset
from bloodlib.models import precision
from bloodlib.tuning import objective, search, space
from conftest import REPO

optuna = pytest.importorskip("optuna")


def prepared_toy(tmp_path, *, folds: int, data=None) -> Prepared:
    data = data or toy_imageset((12, 12, 12), size=16, seed=3)
    labels = data.labels.numpy()
    planned = splits.plan(labels, np.arange(len(labels)), folds=folds, seed=42)
    settings = config.resolve("smoke", output_dir=tmp_path / "out", image_size=16, epochs=2, batch_size=8,
                              keep_epoch="last", folds=folds)
    return Prepared(settings=settings, root=tmp_path, cleaning=None, data=data, boxes=None, splits=planned,
                    protocol=splits.protocol(np.full(len(labels), ""), folds))


def scrambled(data, positions: np.ndarray, seed: int = 0):
    """``data`` with the labels at ``positions`` replaced by other classes (every one of them wrong)."""
    labels = data.labels.clone()
    shift = torch.as_tensor(np.random.default_rng(seed).integers(1, len(data.classes), len(positions)))
    labels[torch.as_tensor(positions)] = (labels[torch.as_tensor(positions)] + shift) % len(data.classes)
    return dataclasses.replace(data, labels=labels)


def run_search(prepared, tmp_path, models=("resnet18",), trials=2, name="study.db"):
    storage = f"sqlite:///{tmp_path / name}"
    studies = search.tune(prepared, list(models), trials=trials, storage=storage)
    return search.trials_table(studies)


# ------------------------------------------------------------------------------------------- test parts
def test_scrambled_test_labels_leave_every_trial_and_the_choice_unchanged(tmp_path):
    prepared = prepared_toy(tmp_path, folds=1)  # a holdout: its test part trains no split
    test = prepared.splits[0].test
    assert len(test) and not set(test) & (set(prepared.splits[0].train) | set(prepared.splits[0].val))
    honest = run_search(prepared, tmp_path / "a")
    other = dataclasses.replace(prepared, data=scrambled(prepared.data, test))
    assert not torch.equal(other.data.labels, prepared.data.labels)
    blind = run_search(other, tmp_path / "b")
    columns = ["trial", "state", "validation_macro_f1", *[c for c in honest if c.startswith("param_")]]
    pd.testing.assert_frame_equal(honest[columns], blind[columns])
    assert search.chosen_recipe(honest, "resnet18") == search.chosen_recipe(blind, "resnet18")


def test_a_folds_score_never_reads_its_own_test_part(tmp_path):
    """Cross-validation: fold k's test images train the other folds' models (as in any search over the folds),
    but fold k's own score does not move when its test labels are scrambled."""
    prepared = prepared_toy(tmp_path, folds=2)
    settings = prepared.settings.for_model("resnet18")
    honest = objective.cross_validated_score(prepared.data, prepared.splits, settings, "resnet18", {})
    for k, split in enumerate(prepared.splits):
        blind = objective.cross_validated_score(scrambled(prepared.data, split.test), prepared.splits, settings,
                                                "resnet18", {})
        assert blind.per_split[k] == honest.per_split[k]
    assert all(len(s.test) == 0 for s in objective.validation_splits(prepared.splits))


def test_a_search_refuses_to_score_a_chosen_epoch(tmp_path):
    prepared = prepared_toy(tmp_path, folds=2)
    settings = prepared.settings.for_model("resnet18")
    with pytest.raises(ValueError, match="keep_epoch must be 'last'"):
        objective.cross_validated_score(prepared.data, prepared.splits, settings, "resnet18", {"keep_epoch": "best"})


# ----------------------------------------------------------------------------------------- the protocol
def test_every_model_gets_the_same_trials_and_a_search_resumes(tmp_path):
    prepared = prepared_toy(tmp_path, folds=2)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    seen = []
    search.tune(prepared, ["resnet18", "alexnet"], trials=1, storage=storage,
                after_trial=lambda studies: seen.append({m: search.finished_trials(s) for m, s in studies.items()}))
    assert seen == [{"resnet18": 1, "alexnet": 0}, {"resnet18": 1, "alexnet": 1}]
    studies = search.tune(prepared, ["resnet18", "alexnet"], trials=2, storage=storage)  # goes on: one more each
    table = search.trials_table(studies)
    assert table.groupby("model").size().to_dict() == {"alexnet": 2, "resnet18": 2}
    assert (table["state"] == "COMPLETE").all()
    # each draws from its own declared space, and the resumed trial is a new recipe, not the first one again
    assert table.loc[table["model"] == "alexnet", "param_optimizer"].notna().all()
    assert table.loc[table["model"] == "resnet18", "param_optimizer"].isna().all()
    first, second = table[table["model"] == "resnet18"].sort_values("trial")["param_lr"]
    assert first != second
    # what a trial records: its validation parts, its cost in training images, the precision
    row = table.iloc[0]
    assert len(json.loads(row["per_split"])) == 2 and row["image_epochs"] > 0 and row["precision"] == "fp32"


# the other worker is simulated with study.ask(), which optuna warns about on a storage with heartbeats
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_two_processes_on_one_storage_draw_different_recipes(tmp_path):
    """Each trial's sampler is seeded from the study's history: a second worker asking while the first trial is
    still running draws another recipe, and a trial under way counts as taken when the next model is chosen."""
    prepared = prepared_toy(tmp_path, folds=2)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = search.open_study(search.search_settings(prepared.settings.for_model("resnet18")), "resnet18", storage)
    study.sampler = search.sampler(prepared.settings.seed, 0)
    running = study.ask()  # another worker's trial, under way
    space.suggest(running, "resnet18")
    order = []
    studies = search.tune(prepared, ["resnet18", "alexnet"], trials=2, storage=storage,
                          after_trial=lambda studies: order.append(
                              {m: search.finished_trials(s) for m, s in studies.items()}))
    # resnet18's running trial counts as taken: alexnet first, then one each, and resnet18's second trial is the
    # last this process starts for it: the one under way elsewhere completes its two (no model gets a third)
    assert order == [{"resnet18": 0, "alexnet": 1}, {"resnet18": 1, "alexnet": 1}, {"resnet18": 1, "alexnet": 2}]
    rows = search.trials_table(studies)
    rows = rows[rows["model"] == "resnet18"].sort_values("trial")
    assert rows["state"].tolist() == ["RUNNING", "COMPLETE"]
    assert rows["param_lr"].iloc[0] != rows["param_lr"].iloc[1]


def test_a_queued_trial_runs_though_it_counts_as_claimed(tmp_path):
    """A dead worker's trial is queued again (WAITING) with its parameters: the next worker runs it, even when
    the queue already fills the model's trials."""
    prepared = prepared_toy(tmp_path, folds=2)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = search.open_study(search.search_settings(prepared.settings.for_model("resnet18")), "resnet18", storage)
    study.enqueue_trial({"lr": 2e-3})
    assert search.claimed_trials(study) == 1
    rows = search.trials_table(search.tune(prepared, ["resnet18"], trials=1, storage=storage))
    assert rows["state"].tolist() == ["COMPLETE"] and rows["param_lr"].tolist() == [2e-3]


def test_a_changed_protocol_starts_a_new_study(tmp_path):
    prepared = prepared_toy(tmp_path, folds=2)
    settings = prepared.settings.for_model("resnet18")
    longer = config.resolve("smoke", output_dir=tmp_path, image_size=16, epochs=3, batch_size=8, keep_epoch="last",
                            folds=2, model="resnet18")
    assert search.study_name(settings, "resnet18") != search.study_name(longer, "resnet18")
    assert search.study_name(settings, "resnet18") == search.study_name(dataclasses.replace(settings), "resnet18")


def test_a_search_trains_in_fp32_on_a_gpu_too(tmp_path):
    settings = search.search_settings(prepared_toy(tmp_path, folds=2).settings.for_model("resnet18"))
    assert settings.train.cuda_autocast is False and settings.train.cpu_bf16 is False
    with precision.deterministic():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


def test_every_searched_knob_is_a_recipe_field_and_builds_its_model():
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    for model, knobs in space.SEARCH_SPACES.items():
        names = [k.name for k in knobs]
        assert len(names) == len(set(names)) and set(space.searched_fields(model)) <= fields, model
        assert {"lr", "weight_decay", "batch_size"} <= set(space.searched_fields(model)), model
        assert all(k.when is None or k.when[0] in names[:names.index(k.name)] for k in knobs), model  # drawn first
    table = space.space_table(["resnet18", "efficientnet_b0", "alexnet"])
    assert table.loc["drop_path_rate", "resnet18"] == "(not searched)"
    assert table.loc["optimizer", "alexnet"] == "one of adamw, sgd"
    assert table.loc["sgd_weight_decay", "alexnet"] == "1e-05 to 0.001 (log scale), with optimizer sgd"


def test_each_optimizer_draws_its_own_rate_and_decay():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    recipes = [space.suggest(study.ask(), "alexnet") for _ in range(40)]
    for recipe in recipes:
        assert set(recipe) == {"optimizer", "lr", "weight_decay", "batch_size", "drop_rate"}
        if recipe["optimizer"] == "sgd":
            assert 1e-3 <= recipe["lr"] <= 1e-1 and 1e-5 <= recipe["weight_decay"] <= 1e-3
        else:
            assert 2e-4 <= recipe["lr"] <= 2e-2 and 1e-3 <= recipe["weight_decay"] <= 0.3
    assert {r["optimizer"] for r in recipes} == {"adamw", "sgd"}
    table = pd.DataFrame([dict(model="alexnet", trial=0, state="COMPLETE", validation_macro_f1=0.5, param_optimizer="sgd",
                               param_sgd_lr=0.01, param_sgd_weight_decay=1e-4, param_batch_size=32.0)])
    assert search.chosen_recipe(table, "alexnet") == {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4,
                                                      "batch_size": 32}


def test_the_summary_names_the_chosen_recipe():
    table = pd.DataFrame([
        dict(model="m", trial=0, state="COMPLETE", validation_macro_f1=0.5, image_epochs=100, seconds=10.0,
             param_lr=1e-3, param_batch_size=32.0),
        dict(model="m", trial=1, state="COMPLETE", validation_macro_f1=0.7, image_epochs=100, seconds=10.0,
             param_lr=3e-3, param_batch_size=16.0),
        dict(model="m", trial=2, state="PRUNED", validation_macro_f1=0.9, image_epochs=40, seconds=4.0,
             param_lr=1e-2, param_batch_size=64.0)])
    assert search.chosen_recipe(table, "m") == {"lr": 3e-3, "batch_size": 16}
    row = search.summary_table(table).loc["m"]
    assert (row["trials"], row["complete"], row["pruned"], row["image-epochs spent"]) == (3, 2, 1, 240)
    assert row["best validation macro-F1"] == 0.7 and row["best at trial"] == 2
    progress = search.finished_in_order(table.iloc[::-1])  # in trial order, whatever the table's
    assert list(progress["order"]) == [1, 2, 3] and list(progress["best_so_far"]) == [0.5, 0.7, 0.7]


# ------------------------------------------------------------------------------------ the chosen recipes
def test_finished_searches_are_the_recipes_the_notebooks_train_with():
    path = REPO / search.RESULTS / "trials.csv"
    if not path.is_file():
        pytest.skip(f"{path}: no search run yet (python -m bloodlib tune MODEL)")
    table = pd.read_csv(path)
    for model, summary in search.summary_table(table).iterrows():
        if summary["trials"] >= search.TRIALS:
            dataset = table.loc[table["model"] == model, "study"].iloc[0].split("-")[0]  # study: dataset-model-...
            assert config.MODEL_RECIPES.get((dataset, model)) == search.chosen_recipe(table, model), model


# ------------------------------------------------------------------------------- notebook 07's tables
def evaluations_trained_with(recipes_by_model: dict[str, dict]) -> dict:
    from bloodlib import evaluation

    y = np.array([0, 1, 2] * 8)
    out = {}
    for model, recipe in recipes_by_model.items():
        ev = evaluation.Evaluation(model, list("ABC"), y, np.eye(3)[y] * 0.8 + 0.05, np.arange(len(y)),
                                   fold=np.arange(len(y)) % 2, repeat=np.zeros(len(y), dtype=int))
        ev.extra = {"train_config": {**dataclasses.asdict(config.TrainConfig()), **recipe}}
        out[model] = ev
    return out


def trials_for(model: str, n: int, best: dict) -> list[dict]:
    rows = [dict(model=model, trial=i, state="COMPLETE", validation_macro_f1=0.5 + i / 100, image_epochs=1000,
                 seconds=1.0, **{f"param_{k}": v for k, v in best.items()}) for i in range(n)]
    rows[-1] = {**rows[-1], **{f"param_{k}": v * 2 for k, v in best.items() if isinstance(v, float)}}
    return rows


def test_the_tuning_table_says_whether_each_model_trained_with_its_choice():
    from bloodlib.study import recipes

    chosen = {"lr": 0.004, "weight_decay": 0.02, "batch_size": 32, "drop_rate": 0.1}
    table = pd.DataFrame(trials_for("resnet18", search.TRIALS, chosen) + trials_for("alexnet", 3, chosen))
    best = search.chosen_recipe(table, "resnet18")  # the last trial scored highest: twice the floats
    evals = evaluations_trained_with({"resnet18": best, "alexnet": {}, "efficientnet_b0": {}})
    shown = recipes.tuning_table(evals, table)
    assert shown.loc["resnet18", "status"] == "trained with the search's choice"
    assert shown.loc["alexnet", "status"] == f"search under way (3 of {search.TRIALS} trials): trained with the default recipe"
    assert shown.loc["efficientnet_b0", "status"] == "not searched yet: trained with the default recipe"
    assert shown.loc["resnet18", "recipe chosen on validation"] == "lr 0.008, weight_decay 0.04, batch_size 32, drop_rate 0.2"
    assert "**not** all chosen the same way" in recipes.tuning_sentence(shown)
    every = recipes.tuning_table({"resnet18": evals["resnet18"]}, table)
    assert recipes.tuning_sentence(every).startswith("Every architecture's recipe was chosen by the same search "
                                                     f"({search.TRIALS} trials each")


def test_notebook_07_draws_the_progress_of_the_compared_models_only():
    from bloodlib.study import recipes

    chosen = {"lr": 0.004, "batch_size": 32}
    table = pd.DataFrame(trials_for("resnet18", 3, chosen) + trials_for("alexnet", 2, chosen)
                         + [dict(model="alexnet", trial=9, state="RUNNING", validation_macro_f1=np.nan)])
    progress = recipes.search_progress(table, ["alexnet", "vgg"])
    assert list(progress["model"]) == ["alexnet"] * 2 and list(progress["order"]) == [1, 2]
    assert list(progress["best_so_far"]) == [0.5, 0.51]
    # nothing to draw: an empty frame, whether no search ran or none of these models finished a trial
    assert recipes.search_progress(None, ["resnet18"]).empty
    assert recipes.search_progress(table, ["vgg"]).empty
    assert recipes.search_progress(table.iloc[:0], ["resnet18"]).empty


def test_the_spread_table_says_whether_the_ranking_holds_for_every_seed():
    from bloodlib.study import reruns

    spread = pd.DataFrame([dict(model=m, seed=s, fold_mean_macro_f1=v, precision="fp32") for m, s, v in [
        ("a", 1, 0.90), ("a", 2, 0.85), ("a", 3, 0.88), ("b", 1, 0.70), ("b", 2, 0.86), ("b", 3, 0.60),
        ("c", 1, 0.50), ("c", 2, 0.55), ("c", 3, 0.52)]])
    table = pd.DataFrame({"fold_macro_f1": [0.9, 0.7, 0.5], "macro_f1_low": [0.8, 0.6, 0.4],
                          "macro_f1_high": [0.95, 0.8, 0.6]}, index=["a", "b", "c"])
    shown = reruns.spread_table(spread, table)
    assert shown.loc["a", "range"] == "0.850–0.900" and shown.loc["b", "spread"] == pytest.approx(0.26)
    assert reruns.ranking_holds(spread, ["a", "b", "c"]) == {"a > b": False, "b > c": True}
    assert reruns.ranking_sentence(spread, ["a", "b", "c"]) == (
        "Over 3 seeds: a > b **not** under every seed; b > c under every seed.")


def test_the_committed_search_resumes_under_the_same_names():
    """A field added to TrainConfig, or a changed default, renames the studies and a resumed search would start
    again from nothing: the full profile's protocol must still name the studies of the committed trials table (or
    the change must be listed in search.ADDED_LATER with its neutral value, or the search deliberately restarted)."""
    path = REPO / search.RESULTS / "trials.csv"
    if not path.is_file():
        pytest.skip(f"{path}: no search run yet")
    table = pd.read_csv(path)
    settings = config.resolve("full", output_dir=REPO / "outputs", dataset="bccd")
    for model, names in table.groupby("model")["study"]:
        expected = search.study_name(search.search_settings(settings.for_model(model)), model)
        assert set(names) == {expected}, (model, set(names), expected)
