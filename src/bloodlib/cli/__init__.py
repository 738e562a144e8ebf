"""The command line, in one place: ``bloodlib`` / ``python -m bloodlib``, one subcommand per entry of
:data:`SUBCOMMANDS`.

Each subcommand is a module of this package with ``add_arguments(parser)`` and ``main(args) -> exit code``;
adding one is adding a module and a line to the table. Like pip's commands, a subcommand's module is imported
only when that subcommand runs: ``predict`` does not pay for the notebook runner's or the search's imports.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# name -> (module of this package, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("predict", "classify images with a trained checkpoint"),
    "evaluate": ("evaluate", "score a trained checkpoint on another labelled dataset"),
    "run": ("run", "run the numbered notebooks; the report of a complete run in report/"),
    "publish": ("publish", "stage the report in report/ for commit (make publish)"),
    "tune": ("tune", "search each model's recipe on validation parts (resumable)"),
}


def command_module(name: str):
    """The module behind subcommand ``name`` (imported now)."""
    return importlib.import_module(f"{__name__}.{SUBCOMMANDS[name][0]}")


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the arguments of ``commands`` (default: all) are added, the others are listed by name."""
    parser = argparse.ArgumentParser(prog="bloodlib", description="White-blood-cell classification study.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        if commands is None or name in commands:
            module = command_module(name)
            module.add_arguments(sub)
            sub.set_defaults(run=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = [word for word in argv[:1] if word in SUBCOMMANDS]  # the subcommand comes first
    args = build_parser(chosen).parse_args(argv)
    return args.run(args)
