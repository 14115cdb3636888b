"""``bench-data``: look at a data set before training on it (``bench-data check ...``)."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool

EXAMPLES = """examples:
  bench-data check ../shared/data/medmnist/pneumoniamnist.npz
  bench-data check /data/my_scans                      # root/<class>/*.png (or train/val/test)
  bench-data check data=retinamnist data.root=../shared/data/medmnist
exit codes: 0 no problems, 1 problems that would make a run wrong, 2 a usage mistake"""


def parser():
    p = new_parser("bench-data", __doc__.splitlines()[0].split(": ", 1)[1], EXAMPLES)
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="shapes, dtypes, ranges, class counts, fingerprint, duplicates within/across splits",
    )
    check.add_argument(
        "target", nargs="+", help="an npz file, an image folder, or data=... config overrides"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.datacheck", argv)


def cli() -> None:
    exit_with(main)
