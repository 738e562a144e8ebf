"""One tuning protocol for every architecture: an Optuna study per model, the same trials and budget for each.

- **Sampler**: TPE (seeded per trial from the study's seed and history, :func:`sampler`; its first
  :data:`STARTUP_TRIALS` trials draw at random).
- **Pruner**: the median rule on the running fold-mean validation macro-F1, judged at the end of each split only
  (a one-cycle schedule scores low half-way through; comparing split ends compares like with like).
- **Storage**: an SQLite file by default (committed under ``benchmarks/results/tuning/``), or any SQLAlchemy URL
  shared by several machines. Each running trial beats a heartbeat; one whose process died is failed after
  :data:`GRACE_SECONDS` and queued again, so a search stopped at any moment resumes where it was.
- **Equal effort**: :func:`tune` runs the models in turn, always the one with the fewest finished trials, so
  that a search stopped early has given every architecture the same number of trials (within one).

Trials score the validation parts only (:mod:`bloodlib.tuning.objective`); the trials table
(:func:`trials_table`) and the chosen recipe (:func:`chosen_recipe`) come from the study's storage.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd

from bloodlib import config
from bloodlib.data.datasets import Prepared
from bloodlib.training.train import NonFiniteLossError
from bloodlib.tuning import space
from bloodlib.tuning.objective import cross_validated_score
from bloodlib.utils import fileio

TRIALS = 12  # per model: the same for every architecture
STARTUP_TRIALS = 5  # TPE's random trials before it models the space
PRUNER_STARTUP_TRIALS = 4  # trials finished before any is pruned
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 300
RESULTS = Path("benchmarks") / "results" / "tuning"  # relative to the checkout
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# TrainConfig fields added after the first search began, with the value that trains exactly as before they existed:
# at that value they stay out of the protocol (and the study's name), so that a search resumes across the change
ADDED_LATER = {"stain_jitter": 0.0, "input_colour": "rgb", "cuda_autocast": False}  # cuda_autocast: every search pins False


def default_storage(root: Path | None = None) -> str:
    """``sqlite:///<checkout>/benchmarks/results/tuning/study.db``."""
    return f"sqlite:///{(root or config.project_root()) / RESULTS / 'study.db'}"


def search_settings(settings: config.Settings, *, cpu_bf16: bool = False) -> config.Settings:
    """``settings`` with the precision pinned: fp32 on every CPU unless ``cpu_bf16`` (then bf16 autocast), and fp32
    on CUDA too (no autocast, no TF32), so that trials run on different machines (with and without native bf16, or a
    GPU) score the same way. Precision is part of the recipe: a bf16 search is another study (CPUs only)."""
    return dataclasses.replace(settings, train=dataclasses.replace(settings.train, cpu_bf16=cpu_bf16,
                                                                   cuda_autocast=False))


def protocol(settings: config.Settings, model: str) -> dict:
    """What a trial's score depends on besides the searched knobs: trials of another protocol never mix."""
    fixed = {k: v for k, v in dataclasses.asdict(settings.train).items()
             if k not in space.searched_fields(model) and ADDED_LATER.get(k, ...) != v}
    return dict(dataset=settings.dataset, mode=settings.mode, image_size=settings.image_size, folds=settings.folds,
                repeats=settings.repeats, seed=settings.seed, model=model, fixed_recipe=fixed,
                space=[knob.record() for knob in space.search_space(model)])


def study_name(settings: config.Settings, model: str) -> str:
    """``bccd-resnet18-fp32-<hash of the protocol>``: a changed protocol starts a new study in the same storage."""
    digest = hashlib.sha256(json.dumps(protocol(settings, model), sort_keys=True, default=str).encode()).hexdigest()
    return f"{settings.dataset}-{model}-{'bf16' if settings.train.cpu_bf16 else 'fp32'}-{digest[:10]}"


def open_study(settings: config.Settings, model: str, storage: str) -> optuna.Study:
    """The model's study in ``storage``, created the first time; stale trials of a dead process are re-queued."""
    if storage.startswith("sqlite:///"):  # the file's folder, for a first search
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8: say it once, here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(
            storage, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
    name = study_name(settings, model)
    new = name not in optuna.get_all_study_names(rdb)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                         n_warmup_steps=settings.train.epochs, interval_steps=settings.train.epochs)
    study = optuna.create_study(study_name=name, storage=rdb, direction="maximize", load_if_exists=True,
                                sampler=sampler(settings.seed, 0), pruner=pruner)
    if new:
        study.set_user_attr("protocol", json.loads(json.dumps(protocol(settings, model), default=str)))
    study.set_user_attr("seed", settings.seed)
    return study


def sampler(seed: int, trials_so_far: int) -> optuna.samplers.TPESampler:
    """TPE seeded by the study's seed and the number of trials it holds: the next trial's draw is repeatable from
    the history, a resumed search draws on instead of from the start, and processes sharing one storage (each
    asking when the study holds another number of trials) draw different recipes."""
    return optuna.samplers.TPESampler(seed=seed * 100_003 + trials_so_far, n_startup_trials=STARTUP_TRIALS)


def objective(prepared: Prepared, model: str, *, cpu_bf16: bool = False,
              progress: bool = False) -> Callable[[optuna.Trial], float]:
    """The function an Optuna study maximises for ``model``: fold-mean validation macro-F1 of the drawn recipe."""
    settings = search_settings(prepared.settings.for_model(model), cpu_bf16=cpu_bf16)
    device = config.select_device(None)
    if cpu_bf16 and device.type != "cpu":
        raise ValueError(f"a bf16 search (--cpu-bf16) trains on CPUs with native bf16; this machine would train on "
                         f"{device.type}")

    def run(trial: optuna.Trial) -> float:
        overrides = space.suggest(trial, model)

        def report(step: int, value: float, image_epochs: int) -> None:
            trial.report(value, step)
            trial.set_user_attr("image_epochs", image_epochs)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                raise optuna.TrialPruned()

        try:
            score = cross_validated_score(prepared.data, prepared.splits, settings, model, overrides, report=report,
                                          progress=progress)
        except NonFiniteLossError as error:  # a recipe that diverges scores what a broken model would: nothing
            trial.set_user_attr("diverged", str(error))
            return 0.0
        trial.set_user_attr("per_split", score.per_split)
        trial.set_user_attr("image_epochs", score.image_epochs)
        trial.set_user_attr("train_seconds", score.seconds)
        trial.set_user_attr("precision", score.precision)
        trial.set_user_attr("device", score.device)
        return score.value
    return run


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def started_trials(study: optuna.Study) -> int:
    """Finished trials and those under way, here or in another process on the same storage."""
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING)))


def claimed_trials(study: optuna.Study) -> int:
    """Finished trials and those under way or queued."""
    return len(study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING,
                                                         optuna.trial.TrialState.WAITING)))


def tune(prepared: Prepared, models: list[str], *, trials: int, storage: str, timeout: float | None = None,
         cpu_bf16: bool = False, progress: bool = False,
         after_trial: Callable[[dict], None] | None = None) -> dict[str, optuna.Study]:
    """Run trials, always for the model with the fewest finished ones, until each has ``trials`` finished
    (complete or pruned), or until ``timeout`` seconds have passed (no trial starts after that; one under way
    finishes). ``after_trial(studies)`` runs after each trial (to rewrite the trials table). Trials train in fp32
    (:func:`search_settings`), or in bf16 autocast with ``cpu_bf16``: another study."""
    studies = {model: open_study(search_settings(prepared.settings.for_model(model), cpu_bf16=cpu_bf16), model, storage)
               for model in models}
    objectives = {model: objective(prepared, model, cpu_bf16=cpu_bf16, progress=progress) for model in models}
    started = time.monotonic()
    while timeout is None or time.monotonic() - started < timeout:
        pending = [m for m in models if finished_trials(studies[m]) < trials]
        if not pending:
            break
        with warnings.catch_warnings():  # a dead worker's trial is failed (and queued again) before claims count
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for model in pending:
                optuna.storages.fail_stale_trials(studies[model])
        # the trials under way (here or in another process on the same storage) count as taken: a model whose
        # last trials run elsewhere needs none from here, and no model gets more than ``trials`` (a queued trial,
        # a dead worker's again, is still to run: optimize takes it first)
        open_models = [m for m in pending if started_trials(studies[m]) < trials]
        if not open_models:
            break
        model = min(open_models, key=lambda m: (claimed_trials(studies[m]), models.index(m)))
        study = studies[model]
        study.sampler = sampler(prepared.settings.seed, len(study.get_trials(deepcopy=False)))
        study.optimize(objectives[model], n_trials=1, catch=())
        if after_trial is not None:
            after_trial(studies)
    return studies


# ------------------------------------------------------------------------------------------------ tables

def trials_table(studies: dict[str, optuna.Study]) -> pd.DataFrame:
    """One row per trial of every model: state, validation score, the drawn recipe, cost."""
    frames = []
    for model, study in studies.items():
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            # a dead worker's trial is marked failed when the next worker starts, so a failed trial's span is not
            # the time it ran: left blank
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
                if trial.datetime_complete and trial.datetime_start and trial.state.is_finished() \
                and trial.state != optuna.trial.TrialState.FAIL else None
            per_split = json.dumps(attrs["per_split"]) if "per_split" in attrs else None  # blank, not "null"
            frames.append(dict(model=model, study=study.study_name, trial=trial.number, state=trial.state.name,
                               validation_macro_f1=trial.value, per_split=per_split,
                               image_epochs=attrs.get("image_epochs"), seconds=seconds,
                               pruned_at_step=attrs.get("pruned_at_step"), precision=attrs.get("precision"),
                               # trials made before the device was recorded all trained on CPUs
                               device=attrs.get("device", "cpu") if trial.state.is_finished() else None,
                               diverged=attrs.get("diverged"), note=attrs.get("stopped"),
                               **{f"param_{k}": v for k, v in trial.params.items()}))
    return pd.DataFrame(frames)


def write_trials_table(studies: dict[str, optuna.Study], path: str | Path) -> Path:
    """The trials table as CSV, written whole or not at all; rows of models not in ``studies`` are kept."""
    table = trials_table(studies)
    path = Path(path)
    if path.is_file():
        old = pd.read_csv(path)
        table = pd.concat([old[~old["model"].isin(list(studies))], table], ignore_index=True)
    return fileio.write_csv(path, table.sort_values(["model", "trial"], kind="stable"))


def chosen_recipe(table: pd.DataFrame, model: str) -> dict:
    """The recipe of ``model``'s complete trial with the best validation score (knob -> value)."""
    done = table[(table["model"] == model) & (table["state"] == "COMPLETE")]
    if done.empty:
        raise ValueError(f"no complete trial of {model!r} in the trials table")
    best = done.loc[done["validation_macro_f1"].idxmax()]
    params = {c[len("param_"):]: _plain(best[c]) for c in done.columns if c.startswith("param_") and pd.notna(best[c])}
    return space.recipe_of(params, model) if model in space.SEARCH_SPACES else params


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return int(value) if isinstance(value, float) and value.is_integer() else value


def finished_in_order(trials: pd.DataFrame) -> pd.DataFrame:
    """Each model's complete and pruned trials in the order they were numbered, with ``order`` (1, 2, ... per
    model) and ``best_so_far`` (the best validation score of its complete trials up to each): how each search
    progressed (failed and unfinished trials are not counted, as the search does not count them)."""
    done = (trials[trials["state"].isin(["COMPLETE", "PRUNED"])]
            .sort_values(["model", "trial"], kind="stable").copy())
    done["order"] = done.groupby("model").cumcount() + 1
    best = done["validation_macro_f1"].where(done["state"] == "COMPLETE").groupby(done["model"]).cummax()
    done["best_so_far"] = best.groupby(done["model"]).ffill()  # a pruned trial keeps the best before it
    return done


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: trials run, complete, pruned, failed; image-epochs spent and per full trial; the best
    validation score, which finished trial found it (``best at trial``: where the search stopped improving)
    and its recipe."""
    rows = {}
    for model, trials in table.groupby("model", sort=False):
        complete = trials[trials["state"] == "COMPLETE"]
        done = finished_in_order(trials)
        scored = done[done["state"] == "COMPLETE"]  # a pruned trial's value: the mean of the folds it finished
        best_at = int(scored.loc[scored["validation_macro_f1"].idxmax(), "order"]) if len(scored) else None
        rows[model] = {
            "trials": int(trials["state"].isin(["COMPLETE", "PRUNED"]).sum()),
            "complete": len(complete), "pruned": int((trials["state"] == "PRUNED").sum()),
            "failed": int((trials["state"] == "FAIL").sum()),
            "image-epochs spent": int(trials["image_epochs"].fillna(0).sum()),
            "image-epochs per full trial": int(complete["image_epochs"].median()) if len(complete) else None,
            "hours": round(float(trials["seconds"].fillna(0).sum()) / 3600, 2),
            "best validation macro-F1": float(complete["validation_macro_f1"].max()) if len(complete) else None,
            "best at trial": best_at,
            "chosen recipe": json.dumps(chosen_recipe(table, model)) if len(complete) else "",
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame
