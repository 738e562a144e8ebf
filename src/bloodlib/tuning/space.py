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
    """One searched field of :class:`bloodlib.config.TrainConfig`: a float range (log-scaled or not) or choices.

    ``name`` is the Optuna parameter; it sets the field ``field`` (default: ``name``). A knob with ``when``
    (another knob's name and value) is drawn only when that knob drew that value: SGD's learning rate and L2
    weight decay live on other scales than AdamW's, so each optimizer has its own ranges."""
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    why: str = ""
    field: str | None = None
    when: tuple[str, Any] | None = None

    @property
    def sets(self) -> str:
        """The TrainConfig field this knob sets."""
        return self.field or self.name

    def suggest(self, trial) -> Any:
        """The value an Optuna ``trial`` draws for this knob."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        text = ("one of " + ", ".join(map(str, self.choices)) if self.choices is not None else
                f"{self.low:g} to {self.high:g}" + (" (log scale)" if self.log else ""))
        return text + (f", with {self.when[0]} {self.when[1]}" if self.when else "")

    def record(self) -> dict:
        """What the search's protocol holds of the knob (the fields a plain knob leaves unset, left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if not (k in ("field", "when") and v is None)}


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
    # AlexNet was trained with SGD and momentum; AdamW is the study's default. Each optimizer draws its own rate
    # and decay: SGD's L2 decay of 0.05, AdamW's usual decoupled value, would shrink every weight to nothing
    "alexnet": (
        Knob("optimizer", choices=("adamw", "sgd"), why="SGD (Nesterov momentum 0.9), as AlexNet was trained, or AdamW"),
        Knob("lr", 2e-4, 2e-2, log=True, why="the peak of the one-cycle schedule", when=("optimizer", "adamw")),
        Knob("weight_decay", 1e-3, 0.3, log=True, why="AdamW's decoupled decay", when=("optimizer", "adamw")),
        Knob("sgd_lr", 1e-3, 1e-1, log=True, why="SGD's peak rate", field="lr", when=("optimizer", "sgd")),
        Knob("sgd_weight_decay", 1e-5, 1e-3, log=True, why="SGD's L2 decay", field="weight_decay",
             when=("optimizer", "sgd")),
        *[knob for knob in BASE_KNOBS if knob.name not in ("lr", "weight_decay")]),
}


def search_space(model: str) -> tuple[Knob, ...]:
    """The declared knobs of ``model``, or a clear error naming the models that have one."""
    try:
        return SEARCH_SPACES[model]
    except KeyError:
        raise ValueError(f"no search space is declared for {model!r}: expected one of {sorted(SEARCH_SPACES)}") from None


def suggest(trial, model: str) -> dict[str, Any]:
    """One recipe for ``model`` drawn by ``trial``: TrainConfig fields to override (a conditional knob only when
    its condition drew its value)."""
    drawn, recipe = {}, {}
    for knob in search_space(model):
        if knob.when is None or drawn.get(knob.when[0]) == knob.when[1]:
            drawn[knob.name] = recipe[knob.sets] = knob.suggest(trial)
    return recipe


def recipe_of(params: dict[str, Any], model: str) -> dict[str, Any]:
    """The TrainConfig fields of a trial's drawn ``params`` (Optuna names): what :func:`suggest` returned."""
    fields = {knob.name: knob.sets for knob in search_space(model)}
    return {fields.get(name, name): value for name, value in params.items()}


def searched_fields(model: str) -> list[str]:
    """The TrainConfig fields a search for ``model`` may set, in order, each once."""
    return list(dict.fromkeys(knob.sets for knob in search_space(model)))


def space_table(models: list[str]) -> pd.DataFrame:
    """The searched knobs per model (rows: knob, columns: model): what notebook 07 shows."""
    rows = {}
    for model in models:
        for knob in search_space(model):
            rows.setdefault(knob.name, {"why": knob.why})[model] = knob.describe()
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=[*models, "why"]).fillna("(not searched)")
    table.index.name = "knob"
    return table
