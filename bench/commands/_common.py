"""The shape every front door shares: parse, then import the tool and run it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from bench.toolkit import add_version_option, exit_code_of


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (thread counts, repetitions)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def new_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_option(parser)
    return parser


def run_tool(
    parser: argparse.ArgumentParser,
    tool: str,
    argv: list[str] | None,
    call: Callable | None = None,
) -> int:
    """Parse ``argv``, then import ``tool`` (a module with ``run(args)``) and run it; a user
    mistake is one ``error:`` line and exit code 2."""
    args = parser.parse_args(argv)

    def body() -> int:
        # imported here, not at the top: --help and --version stay fast (no torch, no pandas)
        module = importlib.import_module(tool)
        return (call or module.run)(args)

    return exit_code_of(body)


def exit_with(main: Callable[[], int]) -> None:
    sys.exit(main())
