"""``bench-tta``: evaluate finished runs with test-time augmentation (stored in their records)."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool
from bench.toolkit import add_device_option


def parser():
    p = new_parser("bench-tta", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--run-dir", nargs="+", required=True, help="finished run folders")
    p.add_argument("--tta", default="flips", choices=["identity", "flips"])
    add_device_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.evaluate.tta", argv)


def cli() -> None:
    exit_with(main)
