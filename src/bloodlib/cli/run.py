"""``python -m bloodlib run [NOTEBOOK...] [--profile P] [-p NAME VALUE] [--resume]`` (``make report``): the
numbered notebooks in order, then the report of the run, promoted into ``report/`` when every notebook succeeded."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bloodlib import config
from bloodlib.pipeline import runner
from bloodlib.pipeline.kernel import NotebookFailed
from bloodlib.pipeline.parameters import parse_overrides


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``run`` subcommand's options (returned for chaining, e.g. ``.set_defaults(func=main)``)."""
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (names like 02_cleaning); default: all numbered")
    parser.add_argument("--profile", choices=sorted(config.PROFILES),
                        help=f"how much work (default: ${config.ENV_PROFILE} or full)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter (YAML-typed), e.g. -p image_size 96; "
                             "-p 04_resnet.epochs 5 for one notebook only")
    parser.add_argument("-f", "--config", dest="config_file", help="YAML file of parameters (-p wins over it)")
    parser.add_argument("--report-dir",
                        help="where runs/ and the report of the latest complete run go (default: <repo>/report)")
    parser.add_argument("--run-id", help="name of the run folder (default: time stamp and git commit)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_ID",
                        help="continue the last incomplete run (or RUN_ID) in its folder: finished notebooks are "
                             "kept, training continues from its checkpoints; refused if the parameters, code or "
                             "data differ (profile, -p, -f and notebooks left out are the run's)")
    parser.add_argument("--kernel", help="Jupyter kernel (default: the notebook's)")
    parser.add_argument("--show-input", action="store_true", help="show the code cells in the HTML pages")
    return parser


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """``python -m bloodlib run ...``: 0 when the run's report was promoted into the report folder, 1 on a failing
    cell or a bad option."""
    if not isinstance(args, argparse.Namespace):
        args = add_arguments(argparse.ArgumentParser(prog="bloodlib run", description=runner.__doc__.splitlines()[0])
                             ).parse_args(args)
    try:
        runner.run(args.notebooks or None, profile=args.profile, overrides=parse_overrides(args.parameter),
                   config_file=args.config_file, report_dir=args.report_dir, run_id=args.run_id,
                   kernel_name=args.kernel, show_input=args.show_input, resume=args.resume)
    except (NotebookFailed, ValueError, FileNotFoundError, FileExistsError) as err:  # ResumeRefused: a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
