"""``bloodlib`` / ``python -m bloodlib``: one subcommand per entry of :data:`SUBCOMMANDS`.

Each subcommand is a module's ``add_arguments(parser)`` and ``main(args) -> exit code``; adding one is
adding a line to the table.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from . import crossdataset, predict, published, runner

# name -> (add_arguments, main, one-line help)
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], object], Callable[[argparse.Namespace], int], str]] = {
    "predict": (predict.add_arguments, predict.main, "classify images with a trained checkpoint"),
    "evaluate": (crossdataset.add_arguments, crossdataset.main, "score a trained checkpoint on another labelled dataset"),
    "run": (runner.add_arguments, runner.main, "run the numbered notebooks and publish report/"),
    "stage": (published.add_arguments, published.main, "git-add the published report (make publish)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bloodlib", description="White-blood-cell classification study.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, run, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
