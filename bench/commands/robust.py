"""``bench-robust``: evaluate finished runs on corrupted copies of their test split."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool
from bench.toolkit import add_device_option


def parser():
    p = new_parser("bench-robust", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--runs-dir", default=None, help="every finished 2D classifier in this store")
    p.add_argument("--run-dir", nargs="*", default=[], help="these run folders")
    p.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    add_device_option(p)
    p.add_argument(
        "--out",
        default=None,
        help="robustness table CSV, and OUT_summary.csv (mean BE/RBE per row) beside it",
    )
    p.add_argument("--force", action="store_true", help="re-evaluate runs that have results")
    p.add_argument("--dataset", nargs="+", default=None, help="only runs on these datasets")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.evaluate.robust", argv)


def cli() -> None:
    exit_with(main)
