"""Models by name: a checkpoint of the published report, as ``predict`` and ``evaluate`` take it
(``--checkpoint any-lab``) instead of a path.

The committed report leaves checkpoints out (:data:`bloodlib.pipeline.publish.LEFT_OUT`): a name resolves in the
report folder of this checkout once ``make report`` has run there (or a run was promoted into it), and names the
run to make when the file is not there.
"""
from __future__ import annotations

from pathlib import Path

from bloodlib.config import project_root
from bloodlib.pipeline.publish import published_run

# name -> what it is, in words; resolved by :func:`resolve`
NAMED = {"any-lab": "notebook 09's model trained on every lab at once (bccd, pbc, deepapl; the four classes they "
                    "share), for labs beyond these"}
# the --checkpoint help of every command that loads a checkpoint
CHECKPOINT_HELP = ("best.pt written by training, or a model of the published report by name: "
                   + "; ".join(f"{name} ({what})" for name, what in NAMED.items()))


def resolve(value: str | Path, report_dir: str | Path | None = None) -> Path:
    """``value`` itself when it is a file; else the checkpoint a name of :data:`NAMED` stands for in the run
    published in ``report_dir`` (default: the checkout's ``report/``). A clear FileNotFoundError otherwise."""
    path = Path(value)
    if path.is_file():
        return path
    if str(value) not in NAMED:
        raise FileNotFoundError(f"{value}: no such checkpoint file, and not a model name "
                                f"({'; '.join(f'{n}: {what}' for n, what in NAMED.items())})")
    from bloodlib.study import lolo  # the training stack: only when a name is asked for

    run = published_run(Path(report_dir) if report_dir else project_root() / "report")
    records = sorted((run / lolo.FOLDER).glob(f"*/{lolo.RECORD}"))
    if not records:
        raise FileNotFoundError(f"{value}: the published run {run} has no leave-one-lab-out results "
                                f"(notebook 09); run `make report` to make it")
    checkpoint = lolo.any_lab_checkpoint(records[0].parent)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{value}: {checkpoint} is not here: the committed report leaves checkpoints out; "
                                f"`make report` trains it (notebook 09, full profile)")
    return checkpoint
