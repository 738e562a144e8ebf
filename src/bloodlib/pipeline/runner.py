"""Run the numbered notebooks in order with papermill; the report of a complete run becomes ``report/``.

``python -m bloodlib run --profile smoke -p image_size 96`` (or ``make report``) executes
``notebooks/NN_*.ipynb`` one after the other, each with the profile, the overrides and
``output_dir=<run folder>``. Every run gets its own folder, ``report/runs/<run-id>/``: executed notebooks,
their HTML pages, metrics, checkpoints, ``run.log`` and ``run_record.json``. Only a run whose notebooks
all succeeded is rendered and promoted into ``report/`` (``index.html`` + ``pages/``); a failing cell stops
the run, names the notebook and the cell, keeps the partial notebook and leaves the report folder alone.
(Publishing, committing that report to git, is ``make publish``.)

``--resume [RUN_ID]`` continues the last incomplete run (or the one named) in its own folder
(:mod:`bloodlib.pipeline.resume`).
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from papermill.exceptions import PapermillExecutionError

from bloodlib import config
from bloodlib.pipeline import kernel, provenance, records, report, resume as resuming
from bloodlib.pipeline.parameters import Step, find_notebooks, plan, read_config
from bloodlib.pipeline.promote import promote
from bloodlib.utils import paths


def run(notebooks: Sequence[str | os.PathLike] | None = None, profile: str | None = None,
        overrides: Mapping | None = None, config_file: str | os.PathLike | None = None,
        report_dir: str | os.PathLike | None = None, run_id: str | None = None, kernel_name: str | None = None,
        show_input: bool = False, resume: bool | str = False, log: Callable[[str], None] = print) -> Path:
    """Execute the notebooks in order into ``report_dir/runs/<run_id>/``; promote it into ``report_dir`` if all
    succeed.

    ``resume``: continue the last incomplete run (True) or the one named, in its folder (see
    :func:`bloodlib.pipeline.resume.resume_plan`); the profile, parameters and notebooks left out are the run's.
    Raises :class:`~bloodlib.pipeline.kernel.NotebookFailed` (after writing the record) when a cell raises,
    ``ValueError`` for an unknown parameter before anything runs, :class:`~bloodlib.pipeline.resume.ResumeRefused`
    when a resume would not continue the same run. Returns the run folder.
    """
    root = provenance.repo_root()
    report_dir = Path(report_dir) if report_dir else root / "report"
    runs = report_dir / "runs"
    values = dict(read_config(config_file)) if config_file else {}
    profile = profile or values.pop("profile", None) or os.environ.get(config.ENV_PROFILE)
    values.pop("profile", None)
    values.update(overrides or {})
    git = provenance.git_info(root, exclude=report_dir)
    if resume:
        if run_id:
            raise ValueError(f"--run-id names a new run; to continue {run_id}, use --resume {run_id}")
        run_dir = resuming.find_resumable(runs, None if resume is True else str(resume))
        with resuming.hold_run(run_dir):  # a run still going in another process is refused
            given = values if config_file or overrides else None  # None: the run's
            steps, record = resuming.resume_plan(run_dir, notebooks, profile, given, git, root)
            return execute_run(run_dir, steps, record, report_dir, kernel_name, show_input, log, root)
    profile = profile or "full"
    if profile not in config.PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(config.PROFILES)}")
    found = find_notebooks(notebooks)
    if run_id and (runs / run_id).exists():
        raise FileExistsError(f"{runs / run_id}: a run with this id exists; runs are never overwritten")
    run_id = run_id or provenance.make_run_id(runs, git["short"])
    run_dir = (runs / run_id).resolve()
    steps = plan(found, profile, values, run_dir)  # refuses unknown names before the run folder exists
    run_dir.mkdir(parents=True)
    for step in steps:
        step.settings = records.notebook_settings(step, profile, run_dir)
    record = {"run_id": run_id, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "profile": profile, "overrides": values, "git": git, "versions": provenance.versions(),
              "platform": platform.platform(), "device": provenance.device_info(), "kernel": kernel_name,
              "settings": records.resolved_settings(profile, run_dir, values), "failure": None}
    with resuming.hold_run(run_dir):
        return execute_run(run_dir, steps, record, report_dir, kernel_name, show_input, log, root)


def execute_run(run_dir: Path, steps: Sequence[Step], record: dict, report_dir: Path, kernel_name: str | None,
                show_input: bool, log: Callable[[str], None], root: Path) -> Path:
    """Run the steps not kept, writing the record before and after each; render and promote if all succeed.
    What reaches the terminal and ``run.log`` names paths relative to the checkout ``root``."""
    run_id, profile = record["run_id"], record["profile"]
    log_path = run_dir / "run.log"

    def say(line: str, quiet: bool = False) -> None:
        line = paths.portable_text(line, root)
        if not quiet:
            log(line)
        with log_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def write(values: dict) -> dict:
        return records.write_record(run_dir, values, steps, root)

    say(f"run {run_id}: {len(steps)} notebooks, profile {profile}, {record['device']['device']} -> {run_dir}")
    if record.get("resumed"):
        kept = record["resumed"][-1]["kept"]
        say(f"resumed: {len(kept)} finished notebook(s) kept; the others run again, a training notebook from its "
            f"checkpoints")
    write(record)  # from the start: a run killed outright still says how far it got
    width = len(str(len(steps)))
    with kernel.kernel_environment(profile, run_dir), kernel.papermill_log(log_path, root):
        for i, step in enumerate(steps, 1):
            name, output = step.notebook.name, run_dir / "notebooks" / step.notebook.name
            if step.kept:
                say(f"[{i:>{width}}/{len(steps)}] {step.notebook.stem} ... kept from the interrupted run")
                continue
            step.status = "running"
            write(record)
            failure, start = None, time.perf_counter()
            try:
                kernel.execute(step, output, run_dir / "logs" / f"{step.notebook.stem}.log", kernel_name,
                               show=lambda line: log(f"    {step.notebook.stem}: {line}"),  # progress: terminal only
                               root=root)
            except PapermillExecutionError as err:  # a cell raised
                failure = kernel.NotebookFailed(name, kernel.failed_cell(step.notebook, output, err), err.ename,
                                                err.evalue, output)
            except Exception as err:  # no such kernel, a dead kernel
                failure = kernel.NotebookFailed(name, None, type(err).__name__, str(err), output)
            except BaseException:  # Ctrl-C: record what ran, then stop
                step.status, step.seconds = "interrupted", round(time.perf_counter() - start, 1)
                write({**record, "status": "interrupted"})
                raise
            step.status, step.seconds = ("ok" if failure is None else "failed"), round(time.perf_counter() - start, 1)
            say(f"[{i:>{width}}/{len(steps)}] {step.notebook.stem} ... "
                f"{'ok' if failure is None else 'FAILED'} {step.seconds:.1f} s")
            if failure is not None:
                record.update(status="failed", failure={"notebook": name, "cell": failure.cell, "error": str(failure)})
                write(record)
                say(f"{failure}\n{report_dir / 'index.html'} was left as it was", quiet=True)
                raise failure
            write(record)

    record.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record = write(record)
    start = time.perf_counter()
    report.render_run(run_dir, show_input=show_input)
    index = promote(run_dir, report_dir)
    write({**record, "promoted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    say(f"rendered in {time.perf_counter() - start:.1f} s; {index} now shows this run")
    return run_dir
