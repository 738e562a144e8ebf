"""``run_record.json``: what ran, where, on what, with which data and parameters, how long.

The record is written before and after every notebook (a run killed outright still says how far it got) and
travels with the report, so every path in it is portable (:func:`bloodlib.utils.paths.portable`: relative to
the checkout, or named by where it came from). The parameters given (``overrides``, and those of each
notebook) are kept as given: a resume replays them.
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bloodlib import config
from bloodlib.pipeline.parameters import Step, declared_parameters
from bloodlib.utils import fileio, paths

RECORD = "run_record.json"
AS_GIVEN = ("overrides",)  # record keys written as they are: a resume replays them


def models_record(run_dir: Path) -> dict:
    """Per trained model: where its initial weights came from (``pretrained``: a few words;
    ``initial_weights``: the record, e.g. the dataset and data checksum of a backbone), the precision and device
    it trained in, its recipe, test size and training time (metrics.json)."""
    models = {}
    # the training notebooks' models, then notebook 08's fine-tuned ones ("resnet18 (transfer)")
    for path in [*sorted((run_dir / "models").glob("*/metrics.json")),
                 *sorted((run_dir / "transfer").glob("*/metrics.json"))]:
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        meta = metrics.get("metadata") or {}
        name = metrics.get("model", path.parent.name)
        models[name if path.parent.parent.name == "models" else f"{name} ({path.parent.parent.name})"] = {
            "pretrained": meta.get("pretrained_source") or "unknown",
            "initial_weights": (meta.get("extra") or {}).get("initial_weights"),
            "precision": (meta.get("extra") or {}).get("precision"), "device": (meta.get("extra") or {}).get("device"),
            "recipe": (meta.get("extra") or {}).get("train_config"), "n_test": metrics.get("n_test"),
            "train_seconds": meta.get("train_seconds"), "folder": path.parent.relative_to(run_dir).as_posix()}
    return models


def resolved_settings(profile: str, run_dir: Path, parameters: Mapping) -> dict | None:
    """The Settings (with the training recipe) that a notebook with these parameter values resolves to;
    None when the values are refused (the notebook will say why)."""
    values = config.notebook_parameters(dict(parameters))
    for name in ("profile", "data_dir", "output_dir"):
        values.pop(name, None)
    try:
        return config.resolve(profile, output_dir=run_dir, **values).as_dict()
    except (ValueError, TypeError):
        return None


def notebook_settings(step: Step, profile: str, run_dir: Path) -> dict | None:
    """What one notebook resolves to: its parameters cell's defaults (model_name, ...), then the run's values."""
    declared = {}
    for name, source in declared_parameters(step.notebook).items():
        with contextlib.suppress(ValueError, SyntaxError):
            declared[name] = ast.literal_eval(source)
    return resolved_settings(profile, run_dir, {**declared, **step.parameters})


def write_record(run_dir: Path, record: dict, steps: Sequence[Step], root: Path) -> dict:
    """Write ``run_record.json`` from ``record`` and the steps, with the data (notebook 01's
    ``data/data_record.json``) and the models trained so far; every path portable against ``root``."""
    data = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        data = json.loads((run_dir / "data" / "data_record.json").read_text(encoding="utf-8"))
    notebooks = [{"name": s.notebook.stem, "path": paths.portable(s.notebook, root), "status": s.status,
                  "seconds": s.seconds, "parameters": _as_given(s.parameters, root),
                  "settings": paths.portable_values(s.settings, root), **({"kept": True} if s.kept else {})}
                 for s in steps]
    made = {"total_seconds": round(sum(s.seconds or 0 for s in steps), 1),
            "data": {"checksum": data.get("checksum"), "root": data.get("root"), "files": data.get("files"),
                     "sources": data.get("sources")},
            "models": models_record(run_dir)}
    record = {**{key: value if key in AS_GIVEN else paths.portable_values(value, root)
                 for key, value in record.items()},
              "notebooks": notebooks, **paths.portable_values(made, root)}
    fileio.write_json(run_dir / RECORD, record)
    return record


def _as_given(parameters: Mapping, root: Path) -> dict:
    """A notebook's parameters as given (a resume compares them), but the runner's own ``output_dir``, which
    reaches the kernel as an absolute path, portable."""
    if "output_dir" not in parameters:
        return dict(parameters)
    return {**parameters, "output_dir": paths.portable(parameters["output_dir"], root)}


def read_run_record(run_dir: str | os.PathLike) -> dict:
    """A run folder's ``run_record.json``; FileNotFoundError or ValueError naming the file when it is missing or
    not JSON."""
    path = Path(run_dir) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; is {run_dir} a run folder?") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
