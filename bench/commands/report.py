"""``bench-report``: one self-contained HTML page (tables, plots) from a run store."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool


def parser():
    p = new_parser("bench-report", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--runs-dir", default="runs", help="the run store (default: runs)")
    p.add_argument("--out", default="report.html", help="the page to write")
    p.add_argument("--title", default="medbench report")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.report", argv)


def cli() -> None:
    exit_with(main)
