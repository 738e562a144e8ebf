"""Progress bars: lines of a log file in batch runs (none in the executed notebook, the runner shows them),
widgets in a notebook run by hand."""
from __future__ import annotations

import re

import nbformat
import papermill
import pytest
from tqdm.auto import tqdm as auto_tqdm

from bloodlib.pipeline import kernel
from bloodlib.pipeline.pages import WIDGET_VIEW
from bloodlib.pipeline.parameters import Step
from bloodlib.utils.progress import ENV_PROGRESS_LOG, progress_bar
from browser.study import notebook

TRAINING = """
from bloodlib import models
from bloodlib.training import train
from bloodlib.config import TrainConfig
from bloodlib.data.synthetic import toy_imageset
data = toy_imageset((8, 8, 8, 8), size=16)
result = train.fit(models.create_model("resnet18", 4, pretrained="scratch"), data, data.indices("train"),
                   data.indices("val"), TrainConfig(epochs=3, batch_size=8, seed=0), device="cpu")
print(f"kept epoch {result.kept_epoch}")
"""

BAR = """
from bloodlib.utils.progress import progress_bar
for _ in progress_bar(range(3), desc="counting"):
    pass
"""


def outputs(path, source_marker: str) -> list[dict]:
    """The outputs of the executed notebook's cell whose source holds ``source_marker``."""
    executed = nbformat.read(path, as_version=4)
    return next(c.outputs for c in executed.cells if c.cell_type == "code" and source_marker in c.source)


def test_batch_bar_writes_whole_lines_to_the_log(tmp_path, monkeypatch):
    log = tmp_path / "logs" / "progress.log"
    monkeypatch.setenv(ENV_PROGRESS_LOG, str(log))
    fitting = progress_bar(total=3, desc="fitting", mininterval=0, delay=0)
    with fitting:  # the shape of train.fit: a bar per epoch, a bar per batch inside it
        for epoch in range(1, 4):
            for _ in progress_bar(range(500), desc=f"epoch {epoch}", leave=False):
                pass
            fitting.set_postfix(best=epoch, refresh=False)
            fitting.update()
    lines = log.read_text().splitlines()
    assert lines[0].startswith("fitting:   0%") and "3/3" in lines[-1]
    assert [n for n in (1, 2, 3) if any(f"{n}/3" in l and f"best={n}" in l for l in lines)] == [1, 2, 3]
    assert not any("epoch" in l for l in lines)  # a bar that ends within BATCH_SECONDS writes nothing
    assert not any("\r" in l or "\x1b" in l or not l.strip() for l in lines)  # no redraws, no cursor moves


def test_without_the_variable_bars_are_tqdm_auto(monkeypatch):
    monkeypatch.delenv(ENV_PROGRESS_LOG, raising=False)
    with progress_bar(range(2), disable=True) as bar:
        assert isinstance(bar, auto_tqdm)


def test_unwritable_log_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_PROGRESS_LOG, str(tmp_path))  # a folder
    with pytest.raises(OSError, match=re.escape(f"{tmp_path}: cannot append progress ({ENV_PROGRESS_LOG})")):
        progress_bar(range(2), mininterval=0, delay=0)


def test_runner_keeps_bars_out_of_the_notebook_and_shows_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    source = notebook(tmp_path / "notebooks" / "01_fit.ipynb", [("code", TRAINING)])
    run_dir, shown = tmp_path / "run", []
    with kernel.kernel_environment("smoke", run_dir):  # what runner.run does for each notebook, without the report
        kernel.execute(Step(source, {}), run_dir / "notebooks" / "01_fit.ipynb", run_dir / "logs" / "01_fit.log",
                       show=shown.append, root=tmp_path)

    cell = outputs(run_dir / "notebooks" / "01_fit.ipynb", "train.fit")
    streams = "".join(o.text for o in cell if o.output_type == "stream")
    assert len([o for o in cell if o.output_type == "stream"]) <= 2 and "kept epoch" in streams
    assert "%|" not in streams and not any(WIDGET_VIEW in o.get("data", {}) for o in cell)
    assert "kept epoch" in (run_dir / "logs" / "01_fit.log").read_text()  # the notebook's own output, as before

    logged = (run_dir / "logs" / "01_fit.progress.log").read_text().splitlines()
    assert [n for n in (1, 2, 3) if any(re.match(rf"resnet18: .*{n}/3 .*best=", l) for l in logged)] == [1, 2, 3]
    assert not any(l.startswith("epoch") for l in logged)  # the bars of seconds-long epochs write nothing
    assert shown == logged  # every line reached the runner (the terminal, in runner.run)


def test_notebook_run_by_hand_shows_a_widget(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_PROGRESS_LOG, raising=False)
    source = notebook(tmp_path / "bar.ipynb", [("code", BAR)])
    papermill.execute_notebook(str(source), str(tmp_path / "done.ipynb"), progress_bar=False,
                               kernel_name="python3", extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    cell = outputs(tmp_path / "done.ipynb", "progress_bar")
    assert any(WIDGET_VIEW in o.get("data", {}) for o in cell)  # ipywidgets installed: no "IProgress not found"
    assert not any(o.output_type == "stream" for o in cell)
