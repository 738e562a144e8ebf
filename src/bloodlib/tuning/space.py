"""What a search may change in each architecture's recipe: one declared space per model, read by the search, the
tests and notebook 07's table alike.

Every model searches the same base knobs (the peak learning rate, weight decay and batch size) plus the few that
matter for its family: classifier dropout for all three, stochastic depth (drop-path) for EfficientNet, and the
optimizer for AlexNet. What a search does not change (the epochs, the image size, the kept epoch, the
augmentation) is the profile's, the same for every model, so each trial costs the same image-epochs.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd


@dataclasses.dataclass(frozen=True)
class Knob:
    """One searched field of :class:`bloodlib.config.TrainConfig`: a float range (log-scaled or not) or choices."""
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    why: str = ""

    def suggest(self, trial) -> Any:
        """The value an Optuna ``trial`` draws for this knob."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        return f"{self.low:g} to {self.high:g}" + (" (log scale)" if self.log else "")


BASE_KNOBS = (
    Knob("lr", 2e-4, 2e-2, log=True, why="the peak of the one-cycle schedule"),
    Knob("weight_decay", 1e-3, 0.3, log=True, why="AdamW's decoupled decay (SGD: L2), biases and norms excluded"),
    Knob("batch_size", choices=(16, 32, 64), why="steps per epoch and BatchNorm's batch statistics"),
    Knob("drop_rate", 0.0, 0.5, why="dropout before the classifier"),
)

SEARCH_SPACES: dict[str, tuple[Knob, ...]] = {
    "resnet18": BASE_KNOBS,
    "resnet50": BASE_KNOBS,
    "efficientnet_b0": BASE_KNOBS + (Knob("drop_path_rate", 0.0, 0.3, why="stochastic depth of the MBConv blocks"),),
    "alexnet": BASE_KNOBS + (Knob("optimizer", choices=("adamw", "sgd"),
                                  why="AlexNet was trained with SGD and momentum; AdamW is the study's default"),),
}


def search_space(model: str) -> tuple[Knob, ...]:
    """The declared knobs of ``model``, or a clear error naming the models that have one."""
    try:
        return SEARCH_SPACES[model]
    except KeyError:
        raise ValueError(f"no search space is declared for {model!r}: expected one of {sorted(SEARCH_SPACES)}") from None


def suggest(trial, model: str) -> dict[str, Any]:
    """One recipe for ``model`` drawn by ``trial``: TrainConfig fields to override."""
    return {knob.name: knob.suggest(trial) for knob in search_space(model)}


def space_table(models: list[str]) -> pd.DataFrame:
    """The searched knobs per model (rows: knob, columns: model): what notebook 07 shows."""
    rows = {}
    for model in models:
        for knob in search_space(model):
            rows.setdefault(knob.name, {"why": knob.why})[model] = knob.describe()
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=[*models, "why"]).fillna("(not searched)")
    table.index.name = "knob"
    return table
