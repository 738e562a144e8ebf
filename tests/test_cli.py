"""The command line's table: every subcommand is a module with add_arguments and main, imported only when it runs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bloodlib import cli


def test_every_subcommand_builds_its_arguments():
    parser = cli.build_parser()
    for name in cli.SUBCOMMANDS:
        module = cli.command_module(name)
        assert callable(module.add_arguments) and callable(module.main), name
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([name, "--help"])
        assert exit_.value.code == 0


def test_the_list_of_subcommands_imports_none_of_them():
    code = ("import sys, contextlib, io\nfrom bloodlib import cli\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n    cli.main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('bloodlib.cli.') or m in ('torch', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
