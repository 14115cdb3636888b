"""``bench-uncertainty``: MC-dropout predictions and uncertainty of finished classifiers."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool
from bench.toolkit import add_device_option


def parser():
    p = new_parser("bench-uncertainty", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--runs-dir", default=None, help="every finished classifier in this store")
    p.add_argument("--run-dir", nargs="*", default=[], help="these run folders")
    p.add_argument("--samples", type=int, default=20, help="dropout samples per image")
    add_device_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.evaluate.uncertainty", argv)


def cli() -> None:
    exit_with(main)
