"""The notebooks as people edit them: each .ipynb paired with a percent-format .py (jupytext) that says the
same, committed without outputs, on the kernel the README names, with the parameters the run passes."""
from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

from bloodlib import config
from bloodlib.pipeline import runner

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob(runner.NOTEBOOK_GLOB))
KERNEL = {"name": "bloodcells", "display_name": "Python (bloodcells)"}  # what `make venv` installs


def cells(notebook) -> list[tuple[str, str, tuple]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def test_every_numbered_notebook_is_here():
    assert [p.stem for p in NOTEBOOKS] == ["01_acquisition", "02_cleaning", "03_exploration", "04_resnet",
                                           "05_efficientnet", "06_alexnet", "07_comparison", "08_across_labs"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_paired_text_and_notebook_say_the_same(path):
    """Edit either in JupyterLab (jupytext keeps both) or the .py by hand, then `make sync`: never one alone."""
    text = path.with_suffix(".py")
    assert text.is_file(), f"{text.name} missing: run `make sync`"
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert cells(jupytext.read(text)) == cells(notebook), f"{path.name} and {text.name} differ: run `make sync`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_on_the_study_kernel(path):
    notebook = nbformat.read(path, as_version=4)
    spec = notebook.metadata["kernelspec"]
    assert {k: spec[k] for k in KERNEL} == KERNEL
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} holds outputs"
    assert sum("parameters" in c.metadata.get("tags", ()) for c in code) == 1


@pytest.mark.parametrize("path", NOTEBOOKS[1:6], ids=lambda p: p.stem)
def test_notebooks_that_split_declare_the_split_parameters(path):
    """The splits notebook 02 shows are the ones 04-06 train on only if -p folds/repeats/seed reach them all."""
    assert {"seed", "folds", "repeats", "dataset", "mode", "image_size"} <= set(runner.declared_parameters(path))


@pytest.mark.parametrize("path", NOTEBOOKS[3:6], ids=lambda p: p.stem)
def test_training_notebooks_declare_the_whole_recipe(path):
    declared = runner.declared_parameters(path)
    assert set(config.TRAIN_FIELDS) <= set(declared), set(config.TRAIN_FIELDS) - set(declared)
    assert "model_name" in declared
