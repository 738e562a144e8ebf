"""The parameters of a run: ``-p NAME VALUE`` and YAML files, the notebooks they reach, refused before anything runs.

A plain name goes to every notebook whose cell tagged ``parameters`` declares it; ``04_resnet.epochs`` (or a YAML
section ``04_resnet: {...}``) to that notebook only. :func:`plan` turns them into one :class:`Step` per notebook.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import papermill
import yaml
from papermill.iorw import NoDatesSafeLoader

from bloodlib.pipeline.provenance import repo_root

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
RUNNER_PARAMETERS = ("profile", "output_dir", "resume")  # set by the runner, never by an override
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclasses.dataclass
class Step:
    """One notebook of a run: its parameters and how it went."""
    notebook: Path
    parameters: dict
    status: str = "pending"  # pending | running | ok | failed | interrupted
    settings: dict | None = None  # what the notebook resolves to (config.resolve), training recipe included
    seconds: float | None = None
    kept: bool = False  # a resume kept this notebook as the run's first execution left it


def parse_value(text: str):
    """A ``-p NAME VALUE`` value typed like papermill's CLI, then YAML: "96" -> 96, "1e-3" -> 0.001,
    "none"/"null" -> None, "true" -> True, "[1, 2]" -> a list; anything else stays a string."""
    if text == "" or text in ("None", "none"):
        return None if text else ""
    if _NUMBER.fullmatch(text):
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    try:
        return yaml.load(text, Loader=NoDatesSafeLoader)
    except yaml.YAMLError:
        return text


def parse_overrides(pairs: Iterable[Sequence[str]]) -> dict:
    """``[("image_size", "96"), ("epochs", "40")]`` -> ``{"image_size": 96, "epochs": 40}``; the last wins."""
    return {name: parse_value(value) for name, value in pairs}


def read_config(path: str | os.PathLike) -> dict:
    """A YAML file of parameters: ``name: value`` for every notebook, ``04_resnet: {epochs: 5}`` for one."""
    path = Path(path)
    try:
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=NoDatesSafeLoader)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values, got {type(values).__name__}")
    return values


def find_notebooks(notebooks: Sequence[str | os.PathLike] | None = None, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks of ``folder`` in order, or those named (a path, a file name or a stem)."""
    folder = Path(folder) if folder else repo_root() / "notebooks"
    if not notebooks:
        found = sorted(p.resolve() for p in folder.glob(NOTEBOOK_GLOB))
        if not found:
            raise FileNotFoundError(f"{folder}: no numbered notebooks ({NOTEBOOK_GLOB})")
        return found
    paths = []
    for name in notebooks:
        path = Path(name)
        candidates = [path, folder / path, folder / f"{path.name}.ipynb"]
        match = next((p for p in candidates if p.suffix == ".ipynb" and p.is_file()), None)
        if match is None:
            known = ", ".join(p.stem for p in sorted(folder.glob(NOTEBOOK_GLOB))) or "none"
            raise FileNotFoundError(f"{name}: no such notebook (in {folder}: {known})")
        paths.append(match.resolve())
    return paths


def declared_parameters(notebook: Path) -> dict[str, str]:
    """Names and defaults of the notebook's cell tagged ``parameters`` (read, never executed)."""
    try:
        inferred = papermill.inspect_notebook(str(notebook))
    except Exception as err:  # a broken notebook file: say which
        raise ValueError(f"{notebook}: cannot read its parameters cell ({err})") from None
    return {name: p["default"] for name, p in inferred.items()}


def plan(notebooks: Sequence[Path], profile: str, overrides: Mapping, output_dir: Path,
         resume: bool = False) -> list[Step]:
    """Each notebook's parameters, refusing any name that no notebook declares, before anything runs.

    ``output_dir`` reaches every notebook as an absolute path (the kernel runs in ``notebooks/``); ``resume``
    reaches the notebooks that declare it (the training notebooks: their finished splits are kept, an
    interrupted one continues from last.pt).
    """
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    known = sorted(set().union(*declared.values()) - set(RUNNER_PARAMETERS))
    scoped: dict[Path, dict] = {nb: {} for nb in notebooks}
    shared: dict = {}
    problems = []
    for key, value in _flatten(overrides):
        scope, _, name = key.rpartition(".")
        targets = [nb for nb in notebooks if scope in (nb.stem, nb.stem.split("_")[0])] if scope else notebooks
        if name in RUNNER_PARAMETERS:
            problems.append(f"{key}: set by the runner (use --profile, --report-dir, --resume)")
        elif scope and not targets:
            problems.append(f"{key}: no notebook {scope!r} in this run ({', '.join(nb.stem for nb in notebooks)})")
        elif not any(name in declared[nb] for nb in targets):
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = f"notebook {scope}" if scope else "no notebook"
            problems.append(f"{key}: {where} declares it in its parameters cell{hint}")
        elif scope:
            for nb in targets:
                scoped[nb][name] = value
        else:
            shared[name] = value
    if problems:
        raise ValueError("unknown parameter(s), nothing was run:\n  " + "\n  ".join(problems)
                         + f"\nknown parameters: {', '.join(known)}")
    steps = []
    for nb in notebooks:
        base = {"profile": profile, "output_dir": str(output_dir), "resume": resume}
        values = {k: v for k, v in {**base, **shared}.items() if k in declared[nb]}
        steps.append(Step(notebook=nb, parameters={**values, **scoped[nb]}))
    return steps


def _flatten(overrides: Mapping) -> Iterable[tuple[str, object]]:
    """``{"04_resnet": {"epochs": 5}, "seed": 1}`` -> ("04_resnet.epochs", 5), ("seed", 1)."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and re.match(r"\d\d(_|$)", str(key)):
            for name, inner in value.items():
                yield f"{key}.{name}", inner
        else:
            yield str(key), value
