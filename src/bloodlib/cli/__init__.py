"""The command line, in one place: ``bloodlib`` / ``python -m bloodlib``, one subcommand per entry of
:data:`SUBCOMMANDS`.

Each subcommand is a module of this package with ``add_arguments(parser)`` and ``main(args) -> exit code``;
adding one is adding a module and a line to the table.
"""
from __future__ import annotations

import argparse
from typing import Callable, Sequence

from bloodlib.cli import evaluate, predict, publish, run

# name -> (add_arguments, main, one-line help)
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], object], Callable[[argparse.Namespace], int], str]] = {
    "predict": (predict.add_arguments, predict.main, "classify images with a trained checkpoint"),
    "evaluate": (evaluate.add_arguments, evaluate.main, "score a trained checkpoint on another labelled dataset"),
    "run": (run.add_arguments, run.main, "run the numbered notebooks; the report of a complete run in report/"),
    "publish": (publish.add_arguments, publish.main, "stage the report in report/ for commit (make publish)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bloodlib", description="White-blood-cell classification study.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, command, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        add_arguments(sub)
        sub.set_defaults(run=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
