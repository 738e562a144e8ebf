"""The notebooks as people edit them: each .ipynb paired with a percent-format .py (jupytext) that says the
same, committed without outputs, on the kernel the README names, with the parameters the run passes; the
training notebooks 04-06 are one template rendered per model (bloodlib.pipeline.notebooks)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jupytext
import nbformat
import pytest

from bloodlib import config, models
from bloodlib.pipeline import notebooks, parameters

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob(parameters.NOTEBOOK_GLOB))
KERNEL = {"name": "bloodcells", "display_name": "Python (bloodcells)"}  # what `make venv` installs


def cells(notebook) -> list[tuple[str, str, tuple]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def test_every_numbered_notebook_is_here():
    assert [p.stem for p in NOTEBOOKS] == ["01_acquisition", "02_cleaning", "03_exploration", "04_resnet",
                                           "05_efficientnet", "06_alexnet", "07_comparison", "08_across_labs",
                                           "09_any_lab"]


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
    assert {"seed", "folds", "repeats", "dataset", "mode", "image_size"} <= set(parameters.declared_parameters(path))


@pytest.mark.parametrize("path", NOTEBOOKS[3:6], ids=lambda p: p.stem)
def test_training_notebooks_declare_the_whole_recipe(path):
    declared = parameters.declared_parameters(path)
    assert set(config.TRAIN_FIELDS) <= set(declared), set(config.TRAIN_FIELDS) - set(declared)
    assert "model_name" in declared


# ------------------------------------------------------------------ the training notebooks: one template

TRAINING = sorted(notebooks.TRAINING_NOTEBOOKS)


def test_the_training_notebooks_are_the_ones_the_template_makes():
    assert [p.stem for p in NOTEBOOKS[3:6]] == TRAINING


@pytest.mark.parametrize("stem", TRAINING)
def test_committed_training_notebook_is_the_template_rendered_for_its_model(stem):
    """Edit notebooks/templates/training.py (or the model's registry entry), then `make notebooks-sync`."""
    committed = (NOTEBOOKS_DIR / f"{stem}.py").read_text(encoding="utf-8")
    assert committed == notebooks.render_training(stem), (
        f"{stem}.py is not notebooks/templates/training.py rendered for {notebooks.TRAINING_NOTEBOOKS[stem]}: edit "
        "the template, not the notebook, and run `make notebooks-sync`")


@pytest.mark.parametrize("stem", TRAINING)
def test_training_notebooks_train_from_scratch_unless_asked(stem):
    """'auto' would fetch ImageNet weights where the hub answers: the same `make report` would give other numbers."""
    assert parameters.declared_parameters(NOTEBOOKS_DIR / f"{stem}.ipynb")["pretrained"] == '"scratch"'


@pytest.mark.parametrize("name", models.list_models())
def test_template_renders_for_every_registered_model(name):
    spec = models.get_spec(name)
    text = notebooks.render(name, "99")
    assert text.startswith("# ---\n# jupyter:\n")  # the Jinja comment above the header is gone
    assert f"# # 99 · {spec.title}\n" in text and f'model_name = "{name}"' in text
    assert "{{" not in text and "{#" not in text
    description = notebooks.as_markdown_lines(spec.description)  # wrapped as the template's own lines
    assert description in text and max(map(len, description.splitlines())) <= notebooks.MARKDOWN_WIDTH
    notebook = jupytext.reads(text, fmt="py:percent")
    markdown = notebook.cells[0].source
    assert spec.citation in " ".join(markdown.split()) and "bloodlib.training.train.fit" in markdown


def test_writing_gives_paired_notebooks_without_outputs_and_with_stable_cell_ids(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / notebooks.TEMPLATE).write_text((NOTEBOOKS_DIR / notebooks.TEMPLATE).read_text(encoding="utf-8"),
                                               encoding="utf-8")
    written = notebooks.write_training_notebooks(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{s}.{e}" for s in TRAINING for e in ("py", "ipynb"))
    first = {p.name: p.read_bytes() for p in written}
    assert notebooks.main(["--notebooks", str(tmp_path)]) == 0  # `make notebooks-sync`
    assert {p.name: p.read_bytes() for p in written} == first  # a second run changes nothing
    for stem in TRAINING:
        ipynb = nbformat.read(tmp_path / f"{stem}.ipynb", as_version=4)
        nbformat.validate(ipynb)
        assert cells(ipynb) == cells(jupytext.read(tmp_path / f"{stem}.py"))
        assert [c.id for c in ipynb.cells] == [f"c{i:02d}" for i in range(len(ipynb.cells))]
        assert all(not c.outputs for c in ipynb.cells if c.cell_type == "code")
        assert ipynb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
        # what JupyterLab (or `make sync`) writes from the .ipynb is the .py as generated
        assert jupytext.writes(ipynb, fmt="py:percent") == (tmp_path / f"{stem}.py").read_text(encoding="utf-8")


def test_template_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="templates/training.py: the training notebooks' template is missing"):
        notebooks.render_training("04_resnet", tmp_path)
    (tmp_path / "templates").mkdir()
    (tmp_path / notebooks.TEMPLATE).write_text("# # {{ number }} · {{ titel }}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"training.py: 'titel' is undefined"):
        notebooks.render_training("04_resnet", tmp_path)
    with pytest.raises(ValueError, match="'07_comparison' is not a training notebook"):
        notebooks.render_training("07_comparison", tmp_path)
    monkeypatch.setitem(models.REGISTRY, "resnet18", dataclasses.replace(models.REGISTRY["resnet18"], citation=""))
    with pytest.raises(ValueError, match="model 'resnet18' has no citation in bloodlib.models.registry"):
        notebooks.render_training("04_resnet", tmp_path)
