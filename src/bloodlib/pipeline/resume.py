"""``run --resume``: continue a run that stopped half-way, in its own folder, or refuse and say why.

The notebooks that finished are kept and a training notebook continues from its checkpoints, provided the
parameters, the code (commit and uncommitted changes) and the data checksum are those of the run; otherwise
nothing is run or changed and :class:`ResumeRefused` names every difference.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bloodlib.pipeline import records
from bloodlib.pipeline.parameters import RUNNER_PARAMETERS, Step, find_notebooks, plan
from bloodlib.pipeline.provenance import data_checksum, device_info

_UNSET = "not set"


class ResumeRefused(ValueError):
    """A resume that would not continue the same run (other parameters, code or data), or of a run that
    cannot be continued; raised before anything is run or written."""


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
    """The run's record, or why it cannot be resumed (:class:`ResumeRefused`)."""
    try:
        return records.read_run_record(run_dir)
    except FileNotFoundError:
        raise ResumeRefused(f"{run_dir}: no {records.RECORD}, so nothing says how far this run got") from None
    except ValueError as err:
        raise ResumeRefused(str(err)) from None


def finished(record: Mapping) -> bool:
    """Whether the run is complete and its report was made (``promoted``; ``published`` in records made
    before the word meant committing the report)."""
    return record.get("status") == "complete" and bool(record.get("promoted") or record.get("published"))


def find_resumable(runs: Path, run_id: str | None = None) -> Path:
    """The run folder to continue: ``run_id``'s, or else the last started of the runs not :func:`finished`
    (failed, interrupted, killed, or killed while its report was being made)."""
    if run_id:
        run_dir = runs / run_id
        if not run_dir.is_dir():
            raise ResumeRefused(f"{run_dir}: no such run")
        if finished(read_run_record(run_dir)):
            raise ResumeRefused(f"{run_dir}: this run is complete and its report made; there is nothing to resume")
        return run_dir.resolve()
    incomplete = []
    for path in runs.glob(f"*/{records.RECORD}"):
        with contextlib.suppress(OSError, json.JSONDecodeError):
            record = json.loads(path.read_text(encoding="utf-8"))
            if not finished(record):
                incomplete.append((str(record.get("started") or ""), path.parent.name))
    if not incomplete:
        raise ResumeRefused(f"{runs}: no incomplete run to resume")
    return (runs / max(incomplete)[1]).resolve()


def recorded_notebook(entry: Mapping, root: Path) -> str:
    """The notebook a record's entry ran: its path, relative to the checkout ``root`` (absolute in records
    made before paths were portable), where that file exists, else its name in the checkout's notebooks."""
    path = entry.get("path")
    return str(root / path) if path and (root / path).is_file() else entry["name"]


def resume_plan(run_dir: Path, notebooks: Sequence[str | os.PathLike] | None, profile: str | None,
                values: Mapping | None, git: dict, root: Path) -> tuple[list[Step], dict]:
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
        paths = find_notebooks(notebooks or [recorded_notebook(entry, root) for entry in ran])
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
            step.settings = records.notebook_settings(step, profile, run_dir)
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
    """What differs between the code a run was made with and the checkout's (``provenance.git_info`` of each)."""
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
    notebooks would read now (``provenance.data_checksum``)."""
    if not then:
        return []
    try:
        root, now = data_checksum(profile, values, run_dir)
    except Exception as err:  # whatever stops locating or reading the data: the resume cannot be checked
        return [f"data: cannot fingerprint the data now ({type(err).__name__}: {err})"]
    return [] if now == then else [f"data: checksum {then} in the run, {now} now (data in {root})"]
