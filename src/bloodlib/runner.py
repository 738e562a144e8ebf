"""Run the numbered notebooks in order with papermill and publish the report.

``python -m bloodlib run --profile smoke -p image_size 96`` (or ``make report``) executes
``notebooks/NN_*.ipynb`` one after the other, each with the profile, the overrides and
``output_dir=<run folder>``. Every run gets its own folder, ``report/runs/<run-id>/``: executed notebooks,
their HTML pages, metrics, checkpoints, ``run.log`` and ``run_record.json``. Only a run whose notebooks
all succeeded is rendered and swapped into ``report/`` (``index.html`` + ``pages/``); a failing cell stops
the run, names the notebook and the cell, keeps the partial notebook and leaves the published report alone.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import nbformat
import papermill
import yaml
from papermill.exceptions import PapermillExecutionError
from papermill.iorw import NoDatesSafeLoader

from . import config, fileio

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
RUNNER_PARAMETERS = ("profile", "output_dir")  # set by the runner, never by an override
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "matplotlib", "grad-cam",
            "papermill", "nbconvert", "nbclient", "bloodlib")
PUBLISHED = ("pages", "index.html", "published.json")  # what report/ holds besides runs/ and README.md
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # figures become PNG outputs, even under MPLBACKEND=Agg
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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
    status: str = "pending"  # pending | ok | failed
    settings: dict | None = None  # what the notebook resolves to (config.resolve), training recipe included
    seconds: float | None = None


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


def plan(notebooks: Sequence[Path], profile: str, overrides: Mapping, output_dir: Path) -> list[Step]:
    """Each notebook's parameters, refusing any name that no notebook declares, before anything runs.

    A plain name goes to every notebook whose parameters cell declares it; ``04_resnet.epochs`` (or a
    YAML section ``04_resnet: {...}``) to that notebook only.
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
            problems.append(f"{key}: set by the runner (use --profile, --report-dir)")
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
        base = {"profile": profile, "output_dir": str(output_dir)}
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


def git_info(root: Path) -> dict:
    """Commit and dirty flag of the checkout (read only: no index refresh); None outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                                  capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit, "short": commit[:7] if commit else None,
            "dirty": bool(status) if status is not None else None}


def make_run_id(runs: Path, short_sha: str | None) -> str:
    """``YYYYmmdd-HHMMSS-<sha>``, with a counter when two runs start in the same second."""
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{short_sha or 'nogit'}"
    run_id, n = base, 2
    while (runs / run_id).exists():
        run_id, n = f"{base}-{n}", n + 1
    return run_id


@contextlib.contextmanager
def kernel_environment(profile: str, output_dir: Path):
    """The kernels' environment: the profile and run folder for any notebook that leaves them None, and
    the inline matplotlib backend so that figures land in the notebook (CI exports MPLBACKEND=Agg)."""
    wanted = {config.ENV_PROFILE: profile, config.ENV_OUTPUT: str(output_dir), "MPLBACKEND": INLINE_BACKEND,
              "PYTHONUNBUFFERED": "1"}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(step: Step, output: Path, log_file: Path, kernel_name: str | None = None) -> None:
    """Run one notebook with papermill, saving it after every cell; cell output goes to ``log_file``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as stream:
        papermill.execute_notebook(str(step.notebook), str(output), parameters=step.parameters,
                                   cwd=str(step.notebook.parent), kernel_name=kernel_name,
                                   progress_bar=False, log_output=False, stdout_file=stream, stderr_file=stream,
                                   request_save_on_cell_execute=True,
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])  # no kernel chatter


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
    """Per trained model: ImageNet-pretrained or from scratch, test size and training time (metrics.json)."""
    models = {}
    for path in sorted((run_dir / "models").glob("*/metrics.json")):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        meta = metrics.get("metadata") or {}
        models[metrics.get("model", path.parent.name)] = {
            "pretrained": meta.get("pretrained_source") or "unknown", "n_test": metrics.get("n_test"),
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
              "notebooks": [{"name": s.notebook.stem, "status": s.status, "seconds": s.seconds,
                             "parameters": s.parameters, "settings": s.settings} for s in steps],
              "total_seconds": round(sum(s.seconds or 0 for s in steps), 1),
              "data": {"checksum": data.get("checksum"), "root": data.get("root"), "files": data.get("files"),
                       "sources": data.get("sources")},
              "models": models_record(run_dir)}
    fileio.write_json(run_dir / "run_record.json", record)
    return record


def run(notebooks: Sequence[str | os.PathLike] | None = None, profile: str | None = None,
        overrides: Mapping | None = None, config_file: str | os.PathLike | None = None,
        report_dir: str | os.PathLike | None = None, run_id: str | None = None, kernel_name: str | None = None,
        show_input: bool = False, log: Callable[[str], None] = print) -> Path:
    """Execute the notebooks in order into ``report_dir/runs/<run_id>/``; publish to ``report_dir`` if all succeed.

    Raises :class:`NotebookFailed` (after writing the record) when a cell raises, ``ValueError`` for an
    unknown parameter before anything runs. Returns the run folder.
    """
    from . import report

    root = repo_root()
    report_dir = Path(report_dir) if report_dir else root / "report"
    values = dict(read_config(config_file)) if config_file else {}
    profile = profile or values.pop("profile", None) or os.environ.get(config.ENV_PROFILE) or "full"
    values.pop("profile", None)
    values.update(overrides or {})
    if profile not in config.PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(config.PROFILES)}")
    paths = find_notebooks(notebooks)
    git = git_info(root)
    runs = report_dir / "runs"
    if run_id and (runs / run_id).exists():
        raise FileExistsError(f"{runs / run_id}: a run with this id exists; runs are never overwritten")
    run_id = run_id or make_run_id(runs, git["short"])
    run_dir = (runs / run_id).resolve()
    steps = plan(paths, profile, values, run_dir)  # refuses unknown names before the run folder exists
    run_dir.mkdir(parents=True)
    for step in steps:
        step.settings = notebook_settings(step, profile, run_dir)

    log_path = run_dir / "run.log"

    def say(line: str, quiet: bool = False) -> None:
        if not quiet:
            log(line)
        with log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    record = {"run_id": run_id, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "profile": profile, "overrides": values, "git": git, "versions": versions(),
              "platform": platform.platform(), "device": device_info(), "kernel": kernel_name,
              "settings": resolved_settings(profile, run_dir, values), "failure": None}
    say(f"run {run_id}: {len(steps)} notebooks, profile {profile}, {record['device']['device']} -> {run_dir}")
    width = len(str(len(steps)))
    with kernel_environment(profile, run_dir), _papermill_log(log_path):
        for i, step in enumerate(steps, 1):
            name, output = step.notebook.name, run_dir / "notebooks" / step.notebook.name
            failure, start = None, time.perf_counter()
            try:
                execute(step, output, run_dir / "logs" / f"{step.notebook.stem}.log", kernel_name)
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
    from . import report

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


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``run`` subcommand's options (returned for chaining, e.g. ``.set_defaults(func=main)``)."""
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (names like 02_cleaning); default: all numbered")
    parser.add_argument("--profile", choices=sorted(config.PROFILES),
                        help=f"how much work (default: ${config.ENV_PROFILE} or full)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter (YAML-typed), e.g. -p image_size 96; "
                             "-p 04_resnet.epochs 5 for one notebook only")
    parser.add_argument("-f", "--config", dest="config_file", help="YAML file of parameters (-p wins over it)")
    parser.add_argument("--report-dir", help="where runs/ and the published report go (default: <repo>/report)")
    parser.add_argument("--run-id", help="name of the run folder (default: time stamp and git commit)")
    parser.add_argument("--kernel", help="Jupyter kernel (default: the notebook's)")
    parser.add_argument("--show-input", action="store_true", help="show the code cells in the HTML pages")
    return parser


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """``python -m bloodlib run ...``: 0 when the report was published, 1 on a failing cell or a bad option."""
    if not isinstance(args, argparse.Namespace):
        args = add_arguments(argparse.ArgumentParser(prog="bloodlib run", description=__doc__.splitlines()[0])
                             ).parse_args(args)
    try:
        run(args.notebooks or None, profile=args.profile, overrides=parse_overrides(args.parameter),
            config_file=args.config_file, report_dir=args.report_dir, run_id=args.run_id,
            kernel_name=args.kernel, show_input=args.show_input)
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
