"""A run's notebook pages: each executed notebook rendered to one self-contained HTML page.

Each notebook becomes ``pages/NN_name.html`` (nbconvert's lab look, code hidden unless asked for, every figure
an inline PNG, nothing loaded from a CDN, so the pages work offline and from any folder). A page travels with
the report, so the paths its outputs and parameters show are made portable
(:func:`bloodlib.utils.paths.portable_text`); the executed notebook keeps them as the kernel saw them.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from bloodlib.pipeline import records
from bloodlib.pipeline.provenance import repo_root
from bloodlib.utils import fileio, paths

TEMPLATES = Path(__file__).resolve().parent / "templates"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"  # tqdm.auto bars: meaningless without a live kernel
TEXT_OUTPUTS = ("text/plain", "text/html", "text/markdown", "text/latex")  # where an output can name a path
IMAGE_OUTPUTS = ("image/png", "image/jpeg")  # figures: charts as PNG, photographs as JPEG (plots.PhotoFigure)


def css() -> str:
    return (TEMPLATES / "style.css").read_text(encoding="utf-8")


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown heading (``# 02 · Cleaning: ...``), else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#+\s+(.+)$", cell.source, re.MULTILINE)
            if match:
                return match.group(1).strip()
    return fallback


def for_readers(nb: nbformat.NotebookNode, *, show_input: bool = False, keep_stderr: bool = False,
                root: Path | None = None) -> nbformat.NotebookNode:
    """A copy without what a reader does not need: stderr (warnings, progress bars), live widgets, a
    figure shown twice in one cell (the inline backend draws an open figure that the cell also returns),
    and, when code is hidden, the cells that would show nothing (parameters, imports). With ``root`` (the
    checkout), the paths in code and outputs are made portable."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # deep copy
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            outputs, seen = [], set()
            for o in cell.get("outputs", []):
                image = next((o.data[mime] for mime in IMAGE_OUTPUTS if mime in o.get("data", {})), None)
                if (not keep_stderr and o.output_type == "stream" and o.get("name") == "stderr") \
                        or WIDGET_VIEW in o.get("data", {}) or (image and image in seen):
                    continue
                seen.add(image)
                outputs.append(_portable_output(o, root) if root is not None else o)
            cell.outputs = outputs
            if not show_input and not cell.outputs:
                continue
            if root is not None:
                cell.source = paths.portable_text(cell.source, root)
        cells.append(cell)
    nb.cells = cells
    return nb


def _portable_output(output: nbformat.NotebookNode, root: Path) -> nbformat.NotebookNode:
    """One output with the paths in its text portable: a stream, a result's text forms, an error."""
    if output.output_type == "stream":
        output.text = paths.portable_values(output.text, root)
    elif output.output_type == "error":
        output.evalue = paths.portable_text(output.evalue, root)
        output.traceback = paths.portable_values(output.traceback, root)
    for mime in TEXT_OUTPUTS:
        if mime in output.get("data", {}):
            output.data[mime] = paths.portable_values(output.data[mime], root)
    return output


def duration(seconds) -> str:
    """12.3 -> '12.3 s', 754 -> '12 min 34 s'."""
    if seconds is None or seconds != seconds:
        return "?"
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


def render_notebook(notebook: str | os.PathLike, dest: str | os.PathLike, *, show_input: bool = False,
                    keep_stderr: bool = False, index_href: str = "../index.html",
                    siblings: Sequence[dict] = (), run_id: str | None = None) -> Path:
    """One executed notebook -> a self-contained HTML page (written atomically), its paths portable."""
    notebook, dest = Path(notebook), Path(dest)
    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as err:
        raise ValueError(f"{notebook}: not a readable notebook ({err})") from None
    root = repo_root()
    papermill_meta = nb.metadata.get("papermill", {})
    exporter = HTMLExporter(template_name="page", template_file="page.html.j2",
                            extra_template_basedirs=[str(TEMPLATES)], exclude_input=not show_input,
                            exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)
    resources = {"metadata": {"name": notebook_title(nb, notebook.stem), "path": str(notebook.parent)},
                 "bloodlib": {"css": css(), "index_href": index_href, "run_id": run_id,
                              "source": f"notebooks/{notebook.name}",
                              # output_dir reached the kernel absolute; the page shows where it is
                              "parameters": paths.portable_values(papermill_meta.get("parameters") or {}, root),
                              "duration": duration(papermill_meta.get("duration")),
                              "siblings": [dict(s, current=s.get("stem") == notebook.stem) for s in siblings]}}
    body, _ = exporter.from_notebook_node(
        for_readers(nb, show_input=show_input, keep_stderr=keep_stderr, root=root), resources=resources)
    fileio.write_text(dest, body)
    return dest


def page_list(run_dir: Path, run_href: str = ".") -> list[dict]:
    """The notebooks of a run as the index lists them: number, title, page, notebook file, time, status."""
    try:
        record = json.loads((run_dir / records.RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        record = {}
    timing = {n["name"]: n for n in record.get("notebooks", [])}
    pages = []
    for path in sorted((run_dir / "notebooks").glob("*.ipynb")):
        try:
            title = notebook_title(nbformat.read(path, as_version=4), path.stem)
        except Exception:
            title = path.stem
        number = path.stem.split("_")[0]
        pages.append({"stem": path.stem, "number": number, "title": title, "href": f"{path.stem}.html",
                      "page": f"pages/{path.stem}.html", "notebook": f"{run_href}/notebooks/{path.name}",
                      "seconds": timing.get(path.stem, {}).get("seconds"),
                      "status": timing.get(path.stem, {}).get("status")})
    return pages
