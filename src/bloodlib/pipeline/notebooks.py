"""The training notebooks 04-06 from one text: ``notebooks/templates/training.py``, filled once per model.

The template is a percent-format notebook with Jinja2 placeholders; what differs between models (``title``,
``description``, ``citation``) is the model's entry in :data:`bloodlib.models.REGISTRY`, and which notebook
trains which model is :data:`TRAINING_NOTEBOOKS`. :func:`write_training_notebooks` (``python -m
bloodlib.pipeline.notebooks``, ``make notebooks-sync``) writes each ``NN_<name>.py`` and its ``.ipynb`` pair,
without outputs and with stable cell ids, so that a template edit shows in git as the same change three times
and nothing else. ``tests/test_notebooks.py`` fails when a committed notebook is not the template's rendering.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import jinja2
import jupytext

from bloodlib import config, models
from bloodlib.utils import fileio

# notebook stem -> the model it trains; the number heads the notebook ("04 · ResNet-18")
TRAINING_NOTEBOOKS = {"04_resnet": "resnet18", "05_efficientnet": "efficientnet_b0", "06_alexnet": "alexnet"}
TEMPLATE = Path("templates") / "training.py"  # under the notebooks folder
MARKDOWN_WIDTH = 112  # the template's own line length, "# " included


def notebooks_dir() -> Path:
    """The checkout's ``notebooks/`` folder (the notebooks and their template are not installed with the package)."""
    return config.project_root() / "notebooks"


def as_markdown_lines(text: str) -> str:
    """``text`` as the comment lines of a percent-format Markdown cell: wrapped, each line starting ``# ``."""
    lines = textwrap.wrap(" ".join(text.split()), MARKDOWN_WIDTH - 2, break_long_words=False,
                          break_on_hyphens=False)
    return "\n".join(f"# {line}" for line in lines)


def _template(path: Path) -> jinja2.Template:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the training notebooks' template is missing")
    # StrictUndefined: a misspelt placeholder is an error, not an empty string in three notebooks
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                     autoescape=False)
    environment.filters["markdown"] = as_markdown_lines
    try:
        return environment.from_string(path.read_text(encoding="utf-8"))
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"{path}, line {err.lineno}: {err.message}") from None


def render(model_name: str, number: str, folder: Path | None = None) -> str:
    """The template filled for ``model_name`` (its registry entry's title, description and citation) under the
    heading number ``number``: the percent-format text of a training notebook."""
    folder = Path(folder) if folder is not None else notebooks_dir()
    spec = models.get_spec(model_name)
    missing = [field for field in ("title", "description", "citation") if not getattr(spec, field)]
    if missing:
        raise ValueError(f"model {model_name!r} has no {', '.join(missing)} in bloodlib.models.registry: its "
                         f"training notebook needs them")
    path = folder / TEMPLATE
    try:
        return _template(path).render(number=number, model_name=model_name, title=spec.title,
                               description=spec.description, citation=spec.citation)
    except jinja2.UndefinedError as err:
        raise ValueError(f"{path}: {err.message} (the placeholders are number, model_name, title, description "
                         f"and citation)") from None


def render_training(stem: str, folder: Path | None = None) -> str:
    """The percent-format text of training notebook ``stem`` (``"04_resnet"``)."""
    if stem not in TRAINING_NOTEBOOKS:
        raise ValueError(f"{stem!r} is not a training notebook: expected one of {sorted(TRAINING_NOTEBOOKS)}")
    return render(TRAINING_NOTEBOOKS[stem], stem.split("_", 1)[0], folder)


def as_ipynb(text: str) -> str:
    """The ``.ipynb`` pair of a percent-format text, as jupytext writes it, with cell ids ``c00``, ``c01``, ...
    (jupytext would draw random ones, and every regeneration would change every cell)."""
    notebook = jupytext.reads(text, fmt="py:percent")
    for i, cell in enumerate(notebook.cells):
        cell.id = f"c{i:02d}"
    notebook.metadata["language_info"] = {"name": "python"}
    return jupytext.writes(notebook, fmt="ipynb")


def _write(path: Path, text: str) -> None:
    with fileio.atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_training_notebooks(folder: Path | None = None) -> list[Path]:
    """(Re)write every training notebook's ``.py`` and ``.ipynb`` from the template; the paths written."""
    folder = Path(folder) if folder is not None else notebooks_dir()
    written = []
    for stem in TRAINING_NOTEBOOKS:
        text = render_training(stem, folder)
        for path, content in ((folder / f"{stem}.py", text), (folder / f"{stem}.ipynb", as_ipynb(text))):
            _write(path, content)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m bloodlib.pipeline.notebooks [--notebooks DIR]``: write the training notebooks."""
    parser = argparse.ArgumentParser(prog="python -m bloodlib.pipeline.notebooks",
                                     description="Write notebooks 04-06 (.py and .ipynb) from "
                                                 "notebooks/templates/training.py and the model registry.")
    parser.add_argument("--notebooks", type=Path, default=None, help="the notebooks folder (default: the checkout's)")
    args = parser.parse_args(argv)
    for path in write_training_notebooks(args.notebooks):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
