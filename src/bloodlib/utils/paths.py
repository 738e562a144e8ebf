"""How a file that travels names a path: never by where the machine that wrote it keeps it.

The report is committed and read on other machines, so a path written into a record, a table or a log says
where the file sits relative to the checkout (``report/runs/<id>``, ``data/backbones/<key>/best.pt``), beside
it (``../shared/data/bccd``), in a folder the study's environment names (``$BLOODLIB_CACHE/backbones/...``,
``$BLOODLIB_DATA``) or in the home folder (``~/...``); an absolute path anywhere else keeps only its name
(``…/cells``). :func:`portable` does it to one path, :func:`portable_text` to the paths in a text (a log, a
notebook's output), :func:`absolute_paths` finds any left in a text, :func:`mentions` one folder.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PureWindowsPath

ENV_PREFIX = "BLOODLIB_"  # BLOODLIB_CACHE, BLOODLIB_DATA, BLOODLIB_PBC, ...: folders a path may be named by
ELSEWHERE = "…"  # stands for the folders of a path that none of the named places holds

_SEGMENT = r"[\w.@%+~-]+"
# An absolute path starts a text, or follows a space, quote, bracket, "=", ",", ";", ":" or ">" (an HTML tag);
# it has two segments at least (so that "and/or", "img/s" or "</td>" are not paths). URLs and data URIs match
# first and are left as they are.
_SKIPPED = r"(?P<skip>\b[a-zA-Z][\w+.-]*://\S+|data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+)"
_POSIX = rf"(?:^|(?<=[\s\"'(\[{{=,;:>]))(?:/{_SEGMENT}){{2,}}/?"
_WINDOWS = rf"\b[a-zA-Z]:\\(?:{_SEGMENT}\\?)+"
_ABSOLUTE = re.compile(rf"{_SKIPPED}|(?P<path>{_POSIX}|{_WINDOWS})", re.MULTILINE)


def places(root: str | os.PathLike) -> Iterator[tuple[Path, str]]:
    """The folders a portable path is named by, most telling first: (folder, its name; "" for the checkout)."""
    root = Path(root)
    yield root, ""
    if root.parent != Path(root.anchor):  # beside the checkout; never the whole file system as "../"
        yield root.parent, ".."
    for name, value in sorted(os.environ.items()):
        if name.startswith(ENV_PREFIX) and value and Path(value).expanduser().exists():
            yield Path(value).expanduser().resolve(), f"${name}"
    yield Path.home(), "~"


def portable(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` as a file that leaves this machine may show it (``root``: the checkout): relative paths as
    they are, absolute ones named by the first of :func:`places` that holds them, else ``…/<name>``."""
    text = os.fspath(path)
    if not Path(text).is_absolute():  # relative; or, on POSIX, a Windows path (C:\\...): none of ours
        return f"{ELSEWHERE}/{PureWindowsPath(text).name}" if PureWindowsPath(text).is_absolute() else text
    forms = {Path(os.path.normpath(text)), Path(text).resolve()}
    for folder, name in places(root):
        for form in forms:
            for base in {folder, folder.resolve()}:  # either spelling: a checkout reached through a link
                if form == base or form.is_relative_to(base):
                    rest = form.relative_to(base).as_posix()
                    return (name or ".") if rest == "." else f"{name}/{rest}" if name else rest
    return f"{ELSEWHERE}/{Path(text).name}"


def portable_text(text: str, root: str | os.PathLike) -> str:
    """``text`` with every absolute path in it made :func:`portable` (URLs and data URIs left alone)."""
    if Path(text).is_absolute() and "\n" not in text and _exists(text):
        return portable(text, root)  # a whole path, spaces included
    return _ABSOLUTE.sub(lambda m: m.group("skip") or portable(m.group("path"), root), text)


def portable_values(value, root: str | os.PathLike):
    """A copy of a JSON-like value (dicts, lists, strings) with every string made :func:`portable_text`."""
    if isinstance(value, str):
        return portable_text(value, root)
    if isinstance(value, Mapping):
        return {key: portable_values(inner, root) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable_values(inner, root) for inner in value]
    return value


def _exists(text: str) -> bool:
    try:
        return os.path.lexists(text)
    except (OSError, ValueError):  # a name too long, a NUL
        return False


def absolute_paths(text: str) -> list[str]:
    """The absolute paths of a machine that ``text`` still holds (POSIX or Windows; not URLs or data URIs)."""
    return [m.group("path") for m in _ABSOLUTE.finditer(text) if m.group("path")]


def mentions(text: str, folder: str | os.PathLike) -> bool:
    """Whether ``text`` holds ``folder``'s absolute path (as given or resolved), alone or as a path's start."""
    spellings = {os.fspath(folder), os.fspath(Path(folder).resolve())}
    return any(re.search(re.escape(s) + r"(?![\w.@%+~-])", text) for s in spellings)
