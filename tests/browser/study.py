"""A three-notebook study that runs in seconds and writes what the real notebooks write.

01 resolves the settings like the real notebooks (so ``-p image_size 8`` fails in its third cell) and
writes the cleaning manifest and data record; 02 draws a figure; 03 saves a model's evaluation, the
comparison table and the headline figure. Every notebook records the parameters it received.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat

PARAMS = """profile = None
data_dir = None
output_dir = None
image_size = None
seed = 42
"""

RECEIVED = """
import json, pathlib
from bloodlib import config
settings = config.resolve(profile=profile, data_dir=data_dir, output_dir=output_dir, image_size=image_size, seed=seed)
out = pathlib.Path(settings.output_dir)
received = {k: v for k, v in dict(globals()).items() if k in NAMES}
(out / "received").mkdir(exist_ok=True)
_ = (out / "received" / f"{NOTEBOOK}.json").write_text(json.dumps(received))
"""

DATA = """
import pandas as pd
rows = [("EOSINOPHIL", "train"), ("EOSINOPHIL", "test"), ("LYMPHOCYTE", "train"), ("LYMPHOCYTE", "val"),
        ("MONOCYTE", "train"), ("NEUTROPHIL", "test"), ("BASOPHIL", "")]
manifest = pd.DataFrame({"image_id": range(len(rows)), "label": [r[0] for r in rows], "split": [r[1] for r in rows],
                         "reason": [""] * 6 + ["rare_class"], "kept": [True] * 6 + [False]})
(out / "data").mkdir(exist_ok=True)
manifest.to_csv(out / "data" / "manifest.csv", index=False)
(out / "data" / "data_record.json").write_text(json.dumps({"checksum": "c0ffee" * 10 + "beef", "files": 7, "root": "/data"}))
print(f"{int(manifest.kept.sum())} images kept")
"""

FIGURE = """
import matplotlib.pyplot as plt
import sys
print("a warning nobody needs", file=sys.stderr)
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1, 2], [2, 0, 1], label="loss")
ax.set_title("training curve")
plt.show()
pd_table = __import__("pandas").DataFrame({"epoch": [1, 2], "loss": [0.9, 0.5]})
pd_table
"""

MODELS = """
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from bloodlib import evaluation
classes = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
rng = np.random.default_rng(0)
y = np.arange(24) % 4
prob = rng.dirichlet(np.ones(4), size=24)
prob[np.arange(24), y] += 1
prob /= prob.sum(1, keepdims=True)
ev = evaluation.Evaluation(model=model_name, classes=classes, y_true=y, y_prob=prob, ids=np.arange(24),
                         params=11_000_000, train_seconds=3.5, pretrained_source="scratch")
evaluation.save_evaluation(ev, out / "models" / model_name, n=20)
table = evaluation.comparison_table(evaluation.load_all(out / "models"), n=20)
(out / "comparison").mkdir(exist_ok=True)
table.to_csv(out / "comparison" / "comparison.csv")
fig, ax = plt.subplots(figsize=(3, 2))
ax.bar(range(4), table.iloc[0][list(evaluation.HEADLINE)].astype(float))
fig.savefig(out / "comparison" / "headline.png")
table
"""


def notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    """Write a notebook: ("md" | "params" | "code", source) cells with stable ids."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    for i, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source.strip())
        if kind == "params":
            cell.metadata["tags"] = ["parameters"]
        cell.id = f"c{i:02d}"
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def received_cell(name: str, names: list[str]) -> str:
    return f"NOTEBOOK = {name!r}\nNAMES = {names!r}\n" + RECEIVED


def make_study(folder: Path) -> list[Path]:
    """notebooks/01_data, 02_figures, 03_models under ``folder``; returns their paths in order."""
    base = ["profile", "data_dir", "output_dir", "image_size", "seed"]
    nbs = folder / "notebooks"
    return [
        notebook(nbs / "01_data.ipynb", [("md", "# 01 · Data: the manifest\n\nWhat was kept."),
                                         ("params", PARAMS), ("code", received_cell("01_data", base)),
                                         ("md", "## Kept"), ("code", DATA)]),
        notebook(nbs / "02_figures.ipynb", [("md", "# 02 · Figures: a curve"),
                                            ("params", PARAMS + "epochs = None\n"),
                                            ("code", received_cell("02_figures", base + ["epochs"])),
                                            ("code", FIGURE)]),
        notebook(nbs / "03_models.ipynb", [("md", "# 03 · Models: compared"),
                                           ("params", PARAMS + 'epochs = None\nmodel_name = "tiny"\n'),
                                           ("code", received_cell("03_models", base + ["epochs", "model_name"])),
                                           ("code", MODELS)]),
    ]


def received(run_dir: Path, name: str) -> dict:
    """The parameters notebook ``name`` saw in ``run_dir``."""
    return json.loads((Path(run_dir) / "received" / f"{name}.json").read_text())


# ------------------------------------------------------------------------ an executed run, without a kernel
def _png(seed: int = 0) -> str:
    """A small matplotlib figure as the base64 PNG a notebook output holds."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1, 2], [seed, 1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


SECRET_CODE = "secret_code_marker = 42"


def executed_notebook(path: Path, title: str, parameters: dict) -> Path:
    """What papermill leaves: parameters and injected cells, a figure, a table, stdout and stderr."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "papermill": {"parameters": parameters, "duration": 12.5}}
    md = nbformat.v4.new_markdown_cell(f"# {title}\n\nSome text with a [source](https://example.org/data).")
    params = nbformat.v4.new_code_cell("profile = None", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("# Parameters\nprofile = \"smoke\"", metadata={"tags": ["injected-parameters"]})
    code = nbformat.v4.new_code_cell(SECRET_CODE + "\nplt.show()", execution_count=3, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="kept 6 images\n"),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: nobody needs this\n"),
        nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("execute_result", execution_count=3,  # the same figure returned: shown once
                               data={"image/png": _png(), "text/plain": "<Figure>"}),
        nbformat.v4.new_output("execute_result", execution_count=3,
                               data={"text/html": "<table><tr><td>0.9</td></tr></table>", "text/plain": "0.9"})])
    for i, cell in enumerate([md, params, injected, code]):
        cell.id = f"c{i:02d}"
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def make_run(run_dir: Path, *, models: bool = True) -> Path:
    """A complete run folder as the runner leaves it before rendering, with no kernel involved."""
    import numpy as np
    import pandas as pd

    from bloodlib import evaluation
    from bloodlib.utils import fileio

    run_dir = Path(run_dir)
    for name, title in (("01_data", "01 · Data: kept"), ("02_figures", "02 · Figures: curves")):
        executed_notebook(run_dir / "notebooks" / f"{name}.ipynb", title, {"profile": "smoke", "image_size": 32})
    rows = [("EOSINOPHIL", "train"), ("LYMPHOCYTE", "val"), ("MONOCYTE", "test"), ("NEUTROPHIL", "train")]
    manifest = pd.DataFrame({"label": [r[0] for r in rows] + ["BASOPHIL"], "split": [r[1] for r in rows] + [""],
                             "reason": [""] * 4 + ["rare_class"], "kept": [True] * 4 + [False]})
    fileio.write_csv(run_dir / "data" / "manifest.csv", manifest)
    fileio.write_json(run_dir / "data" / "data_record.json", {"checksum": "ab" * 32, "files": 5, "root": "/data"})
    model_record = {}
    if models:
        classes = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]
        y = np.arange(16) % 4
        prob = np.full((16, 4), 0.1)
        prob[np.arange(16), y] = 0.7
        ev = evaluation.Evaluation(model="resnet18", classes=classes, y_true=y, y_prob=prob, ids=np.arange(16),
                                 params=11_200_000, train_seconds=65.0, pretrained_source="imagenet")
        evaluation.save_evaluation(ev, run_dir / "models" / "resnet18", n=20)
        (run_dir / "comparison").mkdir(exist_ok=True)
        evaluation.comparison_table({"resnet18": ev}, n=20).to_csv(run_dir / "comparison" / "comparison.csv")
        (run_dir / "comparison" / "headline.png").write_bytes(base64.b64decode(_png(1)))
        model_record = {"resnet18": {"pretrained": "imagenet", "n_test": 16, "train_seconds": 65.0,
                                     "precision": "bf16", "device": "cpu"}}
    fileio.write_json(run_dir / "run_record.json", {
        "run_id": run_dir.name, "status": "complete", "started": "2026-01-01T00:00:00", "profile": "smoke",
        "overrides": {"image_size": 32}, "git": {"commit": "0" * 40, "short": "0000000", "dirty": False},
        "versions": {"python": "3.11", "torch": "2.14.1"}, "platform": "Linux", "device": {"device": "cpu", "name": "x86_64"},
        "settings": {"profile": "smoke", "image_size": 32}, "total_seconds": 25.0,
        "notebooks": [{"name": "01_data", "status": "ok", "seconds": 12.5}, {"name": "02_figures", "status": "ok", "seconds": 12.5}],
        "data": {"checksum": "ab" * 32, "files": 5}, "models": model_record})
    fileio.write_text(run_dir / "run.log", "[1/2] 01_data ... ok 12.5 s\n[2/2] 02_figures ... ok 12.5 s\n")
    return run_dir


def published_study(root):
    """A hand-made run rendered and promoted into ``root``: (report root, run folder)."""
    from bloodlib.pipeline import report
    from bloodlib.pipeline.promote import promote

    run_dir = make_run(root / "runs" / "20260101-000000-abcdef0")
    report.render_run(run_dir)
    promote(run_dir, root)
    return root, run_dir
