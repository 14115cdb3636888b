"""What every command-line tool shares, importing nothing heavy (no torch, pandas or Lightning):
one-line errors and exit codes, the ``--device`` and ``--version`` options.

Tools and front doors import this module; it imports only :mod:`bench.errors`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench.errors import BenchError, ConfigError, one_line

DEVICE_CHOICES = ("auto", "cpu", "cuda")
# percentile-bootstrap resamples of every confidence interval and paired test, in the
# leaderboard, the report, exports and the tools alike
BOOTSTRAP_RESAMPLES = 1000


def version_text(prog: str) -> str:
    """``bench-xxx (medbench 0.1.0)`` from the installed package's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("medbench")
    except PackageNotFoundError:  # a checkout that was never installed
        v = "not installed"
    return f"{prog} (medbench {v})"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """``--version``, as every ``bench-*`` command has it."""
    parser.add_argument("--version", action="version", version=version_text(parser.prog))


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """The one ``--device`` option every evaluation command takes."""
    parser.add_argument(
        "--device", default="auto", choices=DEVICE_CHOICES, help="auto: cuda when available"
    )


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is a
    one-line error rather than a deep CUDA traceback."""
    import torch  # only when a command runs: --help and --version stay fast

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible here; use --device cpu or auto")
    return name


def exit_code_of(fn: Callable[[], int]) -> int:
    """Run a command body; a :class:`BenchError` becomes one ``error:`` line and its exit code,
    Ctrl-C one line and 130."""
    try:
        return fn()
    except BenchError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); files are written atomically, none is half-written",
              file=sys.stderr)  # fmt: skip
        return 130
