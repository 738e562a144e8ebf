"""Write a notebook from a list of cells: ("md", text) or ("code", source) or ("params", source).

Notebooks are the source of truth in git; this helper only spares hand-editing JSON when a notebook is
(re)written: `python tools/nbbuild.py` regenerates every notebook from tools/notebooks_src.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, cells: list[tuple[str, str]]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for kind, source in cells:
        source = source.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i:02d}"  # stable ids keep git diffs small
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tools"))
    import notebooks_src

    for name, cells in notebooks_src.NOTEBOOKS.items():
        if len(sys.argv) > 1 and not any(name.startswith(a) for a in sys.argv[1:]):
            continue
        build(ROOT / "notebooks" / name, cells)
        print("wrote", name)
