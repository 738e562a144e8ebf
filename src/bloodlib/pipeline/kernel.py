"""One notebook executed by papermill in a Jupyter kernel: its environment, its logs, the cell that failed.

The kernel's output goes to ``logs/<notebook>.log`` and the library's progress bars to
``logs/<notebook>.progress.log`` (followed line by line while it runs); papermill's own messages go to
``run.log``. The logs are committed with the report, so the paths in them are made portable
(:func:`bloodlib.utils.paths.portable_text`) once the notebook is done.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError

from bloodlib import config
from bloodlib.pipeline.parameters import Step
from bloodlib.utils import fileio, paths, progress

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"  # figures become PNG outputs, even under MPLBACKEND=Agg


class NotebookFailed(RuntimeError):
    """A cell raised: which notebook, which cell, what error, and where the partial notebook is."""

    def __init__(self, notebook: str, cell: int | None, ename: str, evalue: str, partial: Path):
        self.notebook, self.cell, self.ename, self.evalue, self.partial = notebook, cell, ename, evalue, partial
        where = f"notebook {notebook}" + (f", cell {cell}" if cell is not None else "")
        super().__init__(f"{where}: {ename}: {evalue} (partial notebook kept at {partial})")


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
            show: Callable[[str], None] | None = None, *, root: Path) -> None:
    """Run one notebook with papermill, saving it after every cell; cell output goes to ``log_file``.

    The library's progress bars go to ``<log_file stem>.progress.log`` instead of the notebook (every redraw
    would be one more output there); ``show`` gets each of its lines while the notebook runs. Both logs name
    paths relative to ``root`` (the checkout) once the notebook stops, however it stops."""
    output.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    progress_log = log_file.with_suffix(".progress.log")
    progress_log.write_text("", encoding="utf-8")
    try:
        with (log_file.open("w", encoding="utf-8") as stream,
              _environment({progress.ENV_PROGRESS_LOG: str(progress_log)}),
              _follow(progress_log, show) if show else contextlib.nullcontext()):
            papermill.execute_notebook(str(step.notebook), str(output), parameters=step.parameters,
                                       cwd=str(step.notebook.parent), kernel_name=kernel_name,
                                       progress_bar=False, log_output=False, stdout_file=stream, stderr_file=stream,
                                       request_save_on_cell_execute=True,
                                       extra_arguments=["--IPKernelApp.log_level=CRITICAL"])  # no kernel chatter
    finally:
        for log in (log_file, progress_log):
            with contextlib.suppress(OSError):  # a log never opened: nothing to rewrite, the error says why
                text = log.read_text(encoding="utf-8", errors="replace")
                fileio.write_text(log, paths.portable_text(text, root))


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


class _PortableFormatter(logging.Formatter):
    """papermill's messages with the checkout's paths made portable (they name every notebook it runs)."""

    def __init__(self, root: Path):
        super().__init__("papermill %(levelname)s: %(message)s")
        self.root = root

    def format(self, record: logging.LogRecord) -> str:
        return paths.portable_text(super().format(record), self.root)


@contextlib.contextmanager
def papermill_log(path: Path, root: Path):
    """papermill's own messages (kernel, paths, warnings) into ``path`` (run.log) instead of the terminal."""
    logger = logging.getLogger("papermill")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_PortableFormatter(root))
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
