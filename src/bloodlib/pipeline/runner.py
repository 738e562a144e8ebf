"""Run the numbered notebooks in order with papermill and publish the report.

``python -m bloodlib run --profile smoke -p image_size 96`` (or ``make report``) executes
``notebooks/NN_*.ipynb`` one after the other, each with the profile, the overrides and
``output_dir=<run folder>``. Every run gets its own folder, ``report/runs/<run-id>/``: executed notebooks,
their HTML pages, metrics, checkpoints, ``run.log`` and ``run_record.json``. Only a run whose notebooks
all succeeded is rendered and swapped into ``report/`` (``index.html`` + ``pages/``); a failing cell stops
the run, names the notebook and the cell, keeps the partial notebook and leaves the published report alone.

``--resume [RUN_ID]`` continues the last incomplete run (or the one named) in its own folder: the notebooks
that finished are kept and a training notebook continues from its checkpoints, provided the parameters, the
code (commit and uncommitted changes) and the data checksum are those of the run; otherwise nothing is run or
changed and the error says what differs.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import nbformat
import papermill
import yaml
from papermill.exceptions import PapermillExecutionError
from papermill.iorw import NoDatesSafeLoader

from bloodlib import config
from bloodlib.utils import fileio, progress

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
RUNNER_PARAMETERS = ("profile", "output_dir", "resume")  # set by the runner, never by an override
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "matplotlib", "grad-cam",
            "papermill", "nbconvert", "nbclient", "bloodlib")
PUBLISHED = ("pages", "index.html", "published.json")  # what report/ holds besides runs/ and README.md
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # figures become PNG outputs, even under MPLBACKEND=Agg
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ResumeRefused(ValueError):
    """A resume that would not continue the same run (other parameters, code or data), or of a run that
    cannot be continued; raised before anything is run or written."""


class NotebookFailed(RuntimeError):
    """A cell raised: which notebook, which cell, what error, and where the partial notebook is."""

    def __init__(self, notebook: str, cell: int | None, ename: str, evalue: str, partial: Path):
        self.notebook, self.cell, self.ename, self.evalue, self.partial = notebook, cell, ename, evalue, partial
        where = f"notebook {notebook}" + (f", cell {cell}" if cell is not None else "")
        super().__init__(f"{where}: {ename}: {evalue} (partial notebook kept at {partial})")


@dataclasses.dataclass
class Step:
    """One notebook of a run: its parameters and how it went."""
    notebook: Path
    parameters: dict
    status: str = "pending"  # pending | running | ok | failed | interrupted
    settings: dict | None = None  # what the notebook resolves to (config.resolve), training recipe included
    seconds: float | None = None
    kept: bool = False  # a resume kept this notebook as the run's first execution left it


# ------------------------------------------------------------------------------------------ parameters
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

    A plain name goes to every notebook whose parameters cell declares it; ``04_resnet.epochs`` (or a
    YAML section ``04_resnet: {...}``) to that notebook only. ``resume`` reaches the notebooks that declare
    it (the training notebooks: their finished splits are kept, an interrupted one continues from last.pt).
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


# ---------------------------------------------------------------------------------------------- run
def repo_root() -> Path:
    """The checkout: the current folder's if it is one, else the one this module was installed from."""
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        root = config.project_root(start)
        if (root / "pyproject.toml").is_file():
            return root
    return Path.cwd()


def git_info(root: Path, exclude: Path | None = None) -> dict:
    """Commit and dirty flag of the checkout (read only: no index refresh); None outside git. ``changes``:
    the SHA-256 of every changed or untracked file (None: deleted), so that a resume can tell whether the
    uncommitted code is still the run's; files under ``exclude`` (the report folder) are not code."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                                  capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip("\n") if done.returncode == 0 else None

    commit, top = git("rev-parse", "HEAD"), git("rev-parse", "--show-toplevel")
    pathspec = []
    if top and exclude is not None and Path(exclude).resolve().is_relative_to(Path(top).resolve()):
        inside = Path(exclude).resolve().relative_to(Path(top).resolve()).as_posix()
        pathspec = ["--", ":/", f":(top,exclude){inside}"]  # the whole work tree but the report folder
    status = git("status", "--porcelain", "-z", "--untracked-files=all", *pathspec)
    changes = None
    if status is not None and top:  # porcelain paths are relative to the top of the repository
        # entries "XY path", NUL-separated; a rename or copy ("R"/"C" in X) is followed by its bare source path
        paths, tokens = set(), iter(status.split("\0"))
        for entry in tokens:
            if len(entry) > 3:
                paths.add(entry[3:])
                if entry[0] in "RC":
                    paths.add(next(tokens, ""))
        changes = {path: _file_sha256(Path(top) / path) for path in sorted(paths - {""})}
    return {"commit": commit, "short": commit[:7] if commit else None,
            "dirty": bool(changes) if changes is not None else None, "changes": changes}


def _file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_run_id(runs: Path, short_sha: str | None) -> str:
    """``YYYYmmdd-HHMMSS-<sha>``, with a counter when two runs start in the same second."""
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{short_sha or 'nogit'}"
    run_id, n = base, 2
    while (runs / run_id).exists():
        run_id, n = f"{base}-{n}", n + 1
    return run_id


def kernel_environment(profile: str, output_dir: Path) -> contextlib.AbstractContextManager:
    """The kernels' environment: the profile and run folder for any notebook that leaves them None, and
    the inline matplotlib backend so that figures land in the notebook (CI exports MPLBACKEND=Agg)."""
    return _environment({config.ENV_PROFILE: profile, config.ENV_OUTPUT: str(output_dir),
                         "MPLBACKEND": INLINE_BACKEND, "PYTHONUNBUFFERED": "1"})


@contextlib.contextmanager
def _environment(values: Mapping[str, str]):
    """``os.environ`` with ``values`` set while the block runs (a kernel started in it inherits them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(step: Step, output: Path, log_file: Path, kernel_name: str | None = None,
            show: Callable[[str], None] | None = None) -> None:
    """Run one notebook with papermill, saving it after every cell; cell output goes to ``log_file``.

    The library's progress bars go to ``<log_file stem>.progress.log`` instead of the notebook (every redraw
    would be one more output there); ``show`` gets each of its lines while the notebook runs."""
    output.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    progress_log = log_file.with_suffix(".progress.log")
    progress_log.write_text("", encoding="utf-8")
    with (log_file.open("w", encoding="utf-8") as stream,
          _environment({progress.ENV_PROGRESS_LOG: str(progress_log)}),
          _follow(progress_log, show) if show else contextlib.nullcontext()):
        papermill.execute_notebook(str(step.notebook), str(output), parameters=step.parameters,
                                   cwd=str(step.notebook.parent), kernel_name=kernel_name,
                                   progress_bar=False, log_output=False, stdout_file=stream, stderr_file=stream,
                                   request_save_on_cell_execute=True,
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])  # no kernel chatter


@contextlib.contextmanager
def _follow(path: Path, show: Callable[[str], None], every: float = 1.0):
    """Pass ``show`` each line appended to ``path`` while the block runs (``tail -f``), the last ones after it."""
    stop = threading.Event()
    with path.open(encoding="utf-8", errors="replace") as lines:
        def read_along() -> None:
            pending = ""
            while True:
                stopping = stop.wait(every)
                *complete, pending = (pending + lines.read()).split("\n")  # a line still being written waits
                for line in complete:
                    show(line)
                if stopping:
                    return

        reader = threading.Thread(target=read_along, name=f"follow {path.name}", daemon=True)
        reader.start()
        try:
            yield
        finally:
            stop.set()
            reader.join()


def failed_cell(source: Path, partial: Path, err: PapermillExecutionError) -> int | None:
    """1-based position of the failing cell in the *source* notebook (what its author edits), found by
    cell id in the partial notebook, which also holds papermill's injected and error cells."""
    try:
        executed = nbformat.read(partial, as_version=4)
        original = nbformat.read(source, as_version=4)
    except Exception:
        return None
    ids = [c.get("id") for c in original.cells]
    for cell in executed.cells:
        outputs = cell.get("outputs", [])
        raised = any(o.get("output_type") == "error" for o in outputs) or \
            cell.get("metadata", {}).get("papermill", {}).get("exception") is True
        if raised and cell.get("source") == err.source and cell.get("id") in ids:
            return ids.index(cell.get("id")) + 1
    sources = [c.source for c in original.cells]
    return sources.index(err.source) + 1 if err.source in sources else None


def device_info() -> dict:
    """What the notebooks' ``config.select_device()`` picks on this machine, by name."""
    try:
        import torch
    except ImportError:
        return {"device": "unknown", "name": "torch not installed"}
    device = config.select_device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple Metal (MPS)"
    else:
        cpu = platform.processor() or platform.machine()
        name = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return {"device": device.type, "name": name}


def versions() -> dict:
    """Installed versions of the packages a run depends on."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def models_record(run_dir: Path) -> dict:
    """Per trained model: where its initial weights came from (``pretrained``: a few words;
    ``initial_weights``: the record, e.g. the dataset and data checksum of a backbone), test size and training
    time (metrics.json)."""
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
            "initial_weights": (meta.get("extra") or {}).get("initial_weights"), "n_test": metrics.get("n_test"),
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


def write_record(run_dir: Path, record: dict, steps: Sequence[Step]) -> dict:
    """``run_record.json``: what ran, where, on what, with which data and parameters, how long."""
    data = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        data = json.loads((run_dir / "data" / "data_record.json").read_text(encoding="utf-8"))
    record = {**record,
              "notebooks": [{"name": s.notebook.stem, "path": str(s.notebook), "status": s.status,
                             "seconds": s.seconds, "parameters": s.parameters, "settings": s.settings,
                             **({"kept": True} if s.kept else {})} for s in steps],
              "total_seconds": round(sum(s.seconds or 0 for s in steps), 1),
              "data": {"checksum": data.get("checksum"), "root": data.get("root"), "files": data.get("files"),
                       "sources": data.get("sources")},
              "models": models_record(run_dir)}
    fileio.write_json(run_dir / "run_record.json", record)
    return record


# ------------------------------------------------------------------------------------------- resume
_UNSET = "not set"


@contextlib.contextmanager
def hold_run(run_dir: Path):
    """Lock the run folder for as long as this process runs it, so that a resume of a run still going (in
    another terminal) is refused. The lock is on the folder itself, so nothing is written, and the system
    drops it when the process ends, however it ends (the kernel follows its parent out within a second)."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResumeRefused(f"{run_dir}: another process is running this run; let it finish, or stop it, "
                                f"before resuming it") from None
        yield
    finally:
        os.close(fd)


def read_run_record(run_dir: Path) -> dict:
    path = Path(run_dir) / "run_record.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResumeRefused(f"{run_dir}: no run_record.json, so nothing says how far this run got") from None
    except json.JSONDecodeError as err:
        raise ResumeRefused(f"{path}: not valid JSON ({err})") from None


def _published(record: Mapping) -> bool:
    return record.get("status") == "complete" and bool(record.get("published"))


def find_resumable(runs: Path, run_id: str | None = None) -> Path:
    """The run folder to continue: ``run_id``'s, or else the last started of the runs not yet complete and
    published (failed, interrupted, killed, or killed while rendering)."""
    if run_id:
        run_dir = runs / run_id
        if not run_dir.is_dir():
            raise ResumeRefused(f"{run_dir}: no such run")
        if _published(read_run_record(run_dir)):
            raise ResumeRefused(f"{run_dir}: this run is complete and published; there is nothing to resume")
        return run_dir.resolve()
    incomplete = []
    for path in runs.glob("*/run_record.json"):
        with contextlib.suppress(OSError, json.JSONDecodeError):
            record = json.loads(path.read_text(encoding="utf-8"))
            if not _published(record):
                incomplete.append((str(record.get("started") or ""), path.parent.name))
    if not incomplete:
        raise ResumeRefused(f"{runs}: no incomplete run to resume")
    return (runs / max(incomplete)[1]).resolve()


def resume_plan(run_dir: Path, notebooks: Sequence[str | os.PathLike] | None, profile: str | None,
                values: Mapping | None, git: dict) -> tuple[list[Step], dict]:
    """The steps and the record that continue the run in ``run_dir``; nothing is written here.

    The profile, parameters (``values``) and notebooks given must be the run's; those left out (None) are
    taken from its record. The code (commit and uncommitted changes) and the data checksum must be the run's
    too, otherwise :class:`ResumeRefused` names every difference. The notebooks that finished before the
    first unfinished one are kept; the others run again with ``resume=True``, so that a training notebook
    keeps its finished splits and continues the interrupted one from its ``last.pt``.
    """
    record = read_run_record(run_dir)
    ran = record.get("notebooks") or []
    profile = profile or record.get("profile")
    values = dict(record.get("overrides") or {}) if values is None else dict(values)
    try:
        paths = find_notebooks(notebooks or [entry.get("path") or entry["name"] for entry in ran])
    except FileNotFoundError as err:
        raise ResumeRefused(f"run {run_dir.name} cannot be resumed: {err}") from None
    steps = plan(paths, profile, values, run_dir, resume=True)
    problems = []
    if profile != record.get("profile"):
        problems.append(f"profile: {record.get('profile')} in the run, {profile} now")
    then_names, now_names = [entry["name"] for entry in ran], [step.notebook.stem for step in steps]
    if then_names != now_names:
        problems.append(f"notebooks: {', '.join(then_names)} in the run, {', '.join(now_names)} now")
    else:
        problems += parameter_differences([entry.get("parameters") or {} for entry in ran], steps)
    problems += code_differences(record.get("git") or {}, git)
    problems += data_differences((record.get("data") or {}).get("checksum"), profile, values, run_dir)
    if problems:
        raise ResumeRefused(f"run {run_dir.name} was made with other parameters, code or data; nothing was run "
                            f"or changed (start a new run instead):\n  " + "\n  ".join(problems))
    keeping = True
    for step, entry in zip(steps, ran):
        keeping = keeping and entry.get("status") == "ok" and (run_dir / "notebooks" / step.notebook.name).is_file()
        if keeping:
            step.kept, step.status = True, "ok"
            step.seconds, step.settings = entry.get("seconds"), entry.get("settings")
        else:
            step.settings = notebook_settings(step, profile, run_dir)
    resumed = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "was": record.get("status"),
               "kept": [step.notebook.stem for step in steps if step.kept], "device": device_info()}
    record = {**{k: v for k, v in record.items() if k != "finished"}, "status": "running", "failure": None,
              "resumed": [*record.get("resumed", []), resumed]}
    return steps, record


def parameter_differences(then: Sequence[Mapping], steps: Sequence[Step]) -> list[str]:
    """``"parameter epochs (02_train, 03_models): 3 in the run, 5 now"``: each name whose value differs
    between a run's notebooks (``then``, their recorded parameters) and ``steps``, the runner's own aside."""
    def shown(values: Mapping, name: str) -> str:
        return json.dumps(values[name], default=str) if name in values else _UNSET

    differ: dict[tuple[str, str, str], list[str]] = {}
    for before, step in zip(then, steps):
        names = (set(before) | set(step.parameters)) - set(RUNNER_PARAMETERS)
        for name in sorted(names):
            was, now = shown(before, name), shown(step.parameters, name)
            if was != now:
                differ.setdefault((name, was, now), []).append(step.notebook.stem)
    return [f"parameter {name} ({', '.join(notebooks)}): {was} in the run, {now} now"
            for (name, was, now), notebooks in differ.items()]


def code_differences(then: Mapping, now: Mapping) -> list[str]:
    """What differs between the code a run was made with and the checkout's (:func:`git_info` of each)."""
    if then.get("commit") != now.get("commit"):
        return [f"code: the run was made at commit {then.get('commit')}, the checkout is at commit {now.get('commit')}"]
    if then.get("dirty") and then.get("changes") is None:
        return ["code: the run was made with uncommitted changes that its record does not fingerprint"]
    before, after = then.get("changes") or {}, now.get("changes") or {}
    changed = sorted(path for path in set(before) | set(after) if before.get(path, _UNSET) != after.get(path, _UNSET))
    if not changed:
        return []
    shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
    return [f"code: the uncommitted changes (at commit {now.get('short')}) differ from the run's in {shown}"]


def data_differences(then: str | None, profile: str, values: Mapping, run_dir: Path) -> list[str]:
    """The run's data checksum (None: notebook 01 had not written it; it runs again) against the data the
    notebooks would read now (:func:`data_checksum`)."""
    if not then:
        return []
    try:
        root, now = data_checksum(profile, values, run_dir)
    except Exception as err:  # whatever stops locating or reading the data: the resume cannot be checked
        return [f"data: cannot fingerprint the data now ({type(err).__name__}: {err})"]
    return [] if now == then else [f"data: checksum {then} in the run, {now} now (data in {root})"]


def data_checksum(profile: str, values: Mapping, run_dir: Path) -> tuple[Path, str]:
    """Where the data of a run with these parameter values is found now, and its checksum: what notebook 01
    writes in ``data/data_record.json`` (:func:`bloodlib.datasets.write_data_record`), same files, same sum."""
    from bloodlib.data import datasets

    wanted = config.notebook_parameters(dict(values))
    for name in ("profile", "output_dir", "model"):
        wanted.pop(name, None)
    settings = config.resolve(profile, output_dir=run_dir, **wanted)
    root = datasets.locate(settings)
    return root, datasets.data_checksum(settings, root)


def run(notebooks: Sequence[str | os.PathLike] | None = None, profile: str | None = None,
        overrides: Mapping | None = None, config_file: str | os.PathLike | None = None,
        report_dir: str | os.PathLike | None = None, run_id: str | None = None, kernel_name: str | None = None,
        show_input: bool = False, resume: bool | str = False, log: Callable[[str], None] = print) -> Path:
    """Execute the notebooks in order into ``report_dir/runs/<run_id>/``; publish to ``report_dir`` if all succeed.

    ``resume``: continue the last incomplete run (True) or the one named, in its folder (see
    :func:`resume_plan`); the profile, parameters and notebooks left out are the run's. Raises
    :class:`NotebookFailed` (after writing the record) when a cell raises, ``ValueError`` for an unknown
    parameter before anything runs, :class:`ResumeRefused` when a resume would not continue the same run.
    Returns the run folder.
    """
    root = repo_root()
    report_dir = Path(report_dir) if report_dir else root / "report"
    runs = report_dir / "runs"
    values = dict(read_config(config_file)) if config_file else {}
    profile = profile or values.pop("profile", None) or os.environ.get(config.ENV_PROFILE)
    values.pop("profile", None)
    values.update(overrides or {})
    git = git_info(root, exclude=report_dir)
    if resume:
        if run_id:
            raise ValueError(f"--run-id names a new run; to continue {run_id}, use --resume {run_id}")
        run_dir = find_resumable(runs, None if resume is True else str(resume))
        with hold_run(run_dir):  # a run still going in another process is refused
            given = values if config_file or overrides else None  # None: the run's
            steps, record = resume_plan(run_dir, notebooks, profile, given, git)
            return execute_run(run_dir, steps, record, report_dir, kernel_name, show_input, log)
    profile = profile or "full"
    if profile not in config.PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(config.PROFILES)}")
    paths = find_notebooks(notebooks)
    if run_id and (runs / run_id).exists():
        raise FileExistsError(f"{runs / run_id}: a run with this id exists; runs are never overwritten")
    run_id = run_id or make_run_id(runs, git["short"])
    run_dir = (runs / run_id).resolve()
    steps = plan(paths, profile, values, run_dir)  # refuses unknown names before the run folder exists
    run_dir.mkdir(parents=True)
    for step in steps:
        step.settings = notebook_settings(step, profile, run_dir)
    record = {"run_id": run_id, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "profile": profile, "overrides": values, "git": git, "versions": versions(),
              "platform": platform.platform(), "device": device_info(), "kernel": kernel_name,
              "settings": resolved_settings(profile, run_dir, values), "failure": None}
    with hold_run(run_dir):
        return execute_run(run_dir, steps, record, report_dir, kernel_name, show_input, log)


def execute_run(run_dir: Path, steps: Sequence[Step], record: dict, report_dir: Path, kernel_name: str | None,
                show_input: bool, log: Callable[[str], None]) -> Path:
    """Run the steps not kept, writing the record before and after each; render and publish if all succeed."""
    from bloodlib.pipeline import report

    run_id, profile = record["run_id"], record["profile"]
    log_path = run_dir / "run.log"

    def say(line: str, quiet: bool = False) -> None:
        if not quiet:
            log(line)
        with log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    say(f"run {run_id}: {len(steps)} notebooks, profile {profile}, {record['device']['device']} -> {run_dir}")
    if record.get("resumed"):
        kept = record["resumed"][-1]["kept"]
        say(f"resumed: {len(kept)} finished notebook(s) kept; the others run again, a training notebook from its "
            f"checkpoints")
    write_record(run_dir, record, steps)  # from the start: a run killed outright still says how far it got
    width = len(str(len(steps)))
    with kernel_environment(profile, run_dir), _papermill_log(log_path):
        for i, step in enumerate(steps, 1):
            name, output = step.notebook.name, run_dir / "notebooks" / step.notebook.name
            if step.kept:
                say(f"[{i:>{width}}/{len(steps)}] {step.notebook.stem} ... kept from the interrupted run")
                continue
            step.status = "running"
            write_record(run_dir, record, steps)
            failure, start = None, time.perf_counter()
            try:
                execute(step, output, run_dir / "logs" / f"{step.notebook.stem}.log", kernel_name,
                        show=lambda line: log(f"    {step.notebook.stem}: {line}"))  # progress: terminal only
            except PapermillExecutionError as err:  # a cell raised
                failure = NotebookFailed(name, failed_cell(step.notebook, output, err), err.ename, err.evalue, output)
            except Exception as err:  # no such kernel, a dead kernel
                failure = NotebookFailed(name, None, type(err).__name__, str(err), output)
            except BaseException:  # Ctrl-C: record what ran, then stop
                step.status, step.seconds = "interrupted", round(time.perf_counter() - start, 1)
                write_record(run_dir, {**record, "status": "interrupted"}, steps)
                raise
            step.status, step.seconds = ("ok" if failure is None else "failed"), round(time.perf_counter() - start, 1)
            say(f"[{i:>{width}}/{len(steps)}] {step.notebook.stem} ... "
                f"{'ok' if failure is None else 'FAILED'} {step.seconds:.1f} s")
            if failure is not None:
                record.update(status="failed", failure={"notebook": name, "cell": failure.cell, "error": str(failure)})
                write_record(run_dir, record, steps)
                say(f"{failure}\nthe published report in {report_dir} was left as it was", quiet=True)
                raise failure
            write_record(run_dir, record, steps)

    record.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record = write_record(run_dir, record, steps)
    start = time.perf_counter()
    report.render_run(run_dir, show_input=show_input)
    publish(run_dir, report_dir)
    write_record(run_dir, {**record, "published": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, steps)
    say(f"rendered and published in {time.perf_counter() - start:.1f} s: {report_dir / 'index.html'}")
    return run_dir


@contextlib.contextmanager
def _papermill_log(path: Path):
    """papermill's own messages (kernel, paths, warnings) into run.log instead of the terminal."""
    logger = logging.getLogger("papermill")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("papermill %(levelname)s: %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


# ------------------------------------------------------------------------------------------ publish
def publish(run_dir: Path, report_dir: Path) -> Path:
    """Swap the run's pages and index into ``report_dir``: built under a temporary name first, the old
    copy moved aside and removed only once the new one is in place (restored if the swap fails)."""
    from bloodlib.pipeline import report

    run_dir, report_dir = Path(run_dir).resolve(), Path(report_dir).resolve()
    if not run_dir.is_relative_to(report_dir):
        raise ValueError(f"{run_dir}: not inside {report_dir}; the index links to the run folder, so it must be there")
    run_id = run_dir.name
    staging, old = report_dir / f".publish-{run_id}", report_dir / f".old-{run_id}"
    for folder in (staging, old):
        shutil.rmtree(folder, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(run_dir / "pages", staging / "pages")
    report.write_index(run_dir, staging / "index.html", run_href=run_dir.relative_to(report_dir).as_posix())
    fileio.write_json(staging / "published.json", {"run_id": run_id, "run": run_dir.relative_to(report_dir).as_posix(),
                                                   "published": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    old.mkdir()
    moved = []
    try:
        for name in PUBLISHED:
            if (report_dir / name).exists():
                os.rename(report_dir / name, old / name)
            moved.append(name)
            os.rename(staging / name, report_dir / name)
    except OSError:
        for name in reversed(moved):  # put the previous report back as it was
            if (old / name).exists():
                if (report_dir / name).is_dir():
                    shutil.rmtree(report_dir / name)
                os.replace(old / name, report_dir / name)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return report_dir / "index.html"
