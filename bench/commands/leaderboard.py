"""``bench-leaderboard``: leaderboard CSV/Markdown files and a printed table from a run store."""

from __future__ import annotations

import argparse
import sys

from bench.commands._common import exit_with, new_parser, run_tool
from bench.toolkit import BOOTSTRAP_RESAMPLES

EXAMPLES = """examples:
  bench-leaderboard --runs-dir runs                  # results/leaderboard.csv (+ .md)
  bench-leaderboard --runs-dir runs --name pneumoniamnist --reference --publish
  bench-leaderboard --runs-dir runs --compare resnet18 bccnn --dataset pneumoniamnist
  bench-leaderboard --runs-dir runs --compare-all --rank-test --ensembles
  bench-leaderboard --add-runs runs/published --name breastmnist --dataset breastmnist
  bench-leaderboard --publish-all                    # every study from its committed runs"""


def parser():
    p = new_parser("bench-leaderboard", __doc__.splitlines()[0].split(": ", 1)[1], EXAMPLES)
    p.add_argument(
        "--runs-dir", nargs="+", default=["runs"], help="run store(s) to read (default: runs)"
    )
    p.add_argument("--out", default=None, help="output folder (default: results/ or results/NAME)")
    p.add_argument("--name", default=None, help="study name: writes results/NAME/")
    p.add_argument(
        "--metric",
        default=None,
        help="ranking metric (default: test_auc; test_dice for segmentation)",
    )
    p.add_argument("--reference", action="store_true", help="add MedMNIST v2 paper deltas")
    p.add_argument(
        "--n-boot",
        type=int,
        default=BOOTSTRAP_RESAMPLES,
        help=f"bootstrap resamples (0: no CIs; default {BOOTSTRAP_RESAMPLES}, as bench-report)",
    )
    p.add_argument(
        "--ci-metrics",
        default=None,
        help="comma list of test metrics to bootstrap, or 'all' (default auc,acc; dice,iou)",
    )
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="paired test of two models")
    p.add_argument("--compare-all", action="store_true", help="every pair, Holm-corrected")
    p.add_argument("--rank-test", action="store_true", help="Friedman/Nemenyi + CD diagram")
    _publishing_options(p)
    p.add_argument("--ensembles", action="store_true", help="add seed/fold ensemble rows")
    p.add_argument(
        "--dataset",
        nargs="+",
        default=None,
        help="only these datasets (e.g. retinamnist adrenalmnist3d_64)",
    )
    p.add_argument(
        "--where",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="only runs whose config has these values (e.g. data.cv.folds=5 model.name=bccnn)",
    )
    p.add_argument("--wandb", action="store_true", help="log the table to a W&B aggregate run")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    return p


def _publishing_options(p) -> None:
    """Publishing a study, adding runs to one, rebuilding them all, the cross-data-set page."""
    p.add_argument(
        "--notes-only",
        action="store_true",
        help="re-render the --notes of the published study --name (results/<name>/README.md) "
        "from its CSVs, without a run store",
    )
    p.add_argument(
        "--keep-published",
        action="store_true",
        help=argparse.SUPPRESS,  # retired: a published number needs its runs (--add-runs)
    )
    p.add_argument(
        "--add-runs",
        nargs="+",
        metavar="STORE",
        help="copy the finished runs of these stores (record, predictions, curve; no weights) "
        "into results/<--name>/runs (or <--out>/runs), the study's committed store; publish "
        "with --publish-all afterwards",
    )
    p.add_argument(
        "--publish-all",
        nargs="?",
        const="results",
        metavar="RESULTS_DIR",
        help="rebuild every study of RESULTS_DIR/studies.yaml from its committed runs, then the "
        "cross-data-set page (default results)",
    )
    p.add_argument(
        "--cross-dataset",
        metavar="RESULTS_DIR",
        help="write RESULTS_DIR/README.md: the card's models across the published studies "
        "(read from RESULTS_DIR/<study>/leaderboard.csv)",
    )
    p.add_argument("--publish", action="store_true", help="write a provenance README too")
    p.add_argument(
        "--recipe", default=None, help="with --publish: the command that trained the runs"
    )
    p.add_argument(
        "--notes",
        default=None,
        help="with --publish: a Markdown file of study notes ({{file | k=v | column | fmt}} "
        "placeholders are read from the written CSVs)",
    )


def main(argv: list[str] | None = None) -> int:
    shown = sys.argv[1:] if argv is None else argv
    return run_tool(parser(), "bench.board.cli", argv, call=lambda args: _run(args, shown))


def _run(args, argv):
    from bench.board.cli import run  # after parsing: --help needs no pandas

    return run(args, argv)


def cli() -> None:
    exit_with(main)
