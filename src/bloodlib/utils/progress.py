"""Progress bars for every loop of the library: widgets in JupyterLab, lines of a log file in batch runs.

An executed notebook keeps every redraw of a text bar as one more output (a PBC-sized training notebook kept
over a thousand), so batch runs send the bars elsewhere: ``python -m bloodlib run`` and ``make notebooks``
set ``BLOODLIB_PROGRESS_LOG`` to a file, and each bar appends a line of text to it every ``BATCH_SECONDS``
at most, none at all if it ends sooner (a caller's ``mininterval``/``delay`` win: ``train.fit`` writes a line
per epoch). The runner shows those lines while the notebook runs. Unset (JupyterLab, a terminal), the bars are
``tqdm.auto``'s: widgets in a notebook, redrawn text on a terminal.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import tqdm.auto
import tqdm.std

ENV_PROGRESS_LOG = "BLOODLIB_PROGRESS_LOG"
BATCH_SECONDS = 30.0  # a log line per bar at most this often; a bar shorter than this writes nothing


def progress_bar(iterable: Iterable | None = None, **kwargs) -> tqdm.std.tqdm:
    """``tqdm(iterable, **kwargs)``, or in a batch run (``BLOODLIB_PROGRESS_LOG`` names a file) a bar that
    writes plain lines to that file instead of the notebook."""
    log = os.environ.get(ENV_PROGRESS_LOG)
    if not log:
        return tqdm.auto.tqdm(iterable, **kwargs)
    # position 0: nested bars would otherwise move the cursor with escape codes, meaningless in a file
    return tqdm.std.tqdm(iterable, **{"mininterval": BATCH_SECONDS, "delay": BATCH_SECONDS, **kwargs},
                         file=LogLines(log), ascii=True, position=0)


class LogLines:
    """A file for tqdm that appends each redraw as one whole line (tqdm redraws in place with "\\r")."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")  # the redraw, without tqdm's carriage returns and padding
        if not line:
            return
        try:
            with self.path.open("a", encoding="utf-8") as log:  # whole lines, appended: the runner reads along
                log.write(line + "\n")
        except OSError as err:
            raise OSError(f"{self.path}: cannot append progress ({ENV_PROGRESS_LOG}): {err.strerror or err}") from err

    def flush(self) -> None:
        """Nothing to flush: every line is written and closed at once."""
