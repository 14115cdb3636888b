"""``bench-leaderboard``: leaderboard CSV/Markdown files and a printed table from a run store.

bench-leaderboard --runs-dir runs                  # results/leaderboard.csv (+ .md)
bench-leaderboard --runs-dir runs --name pneumoniamnist --reference --publish
bench-leaderboard --runs-dir runs --compare resnet18 bccnn --dataset pneumoniamnist
bench-leaderboard --runs-dir runs --compare-all --rank-test --ensembles
bench-leaderboard --cross-dataset results --rank-test     # results/README.md across studies
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from bench.board import board_from_records
from bench.board.compare import compare_pair
from bench.board.cross import publish_cross
from bench.board.notes import render_notes, replace_notes
from bench.board.publish import (
    StudyOptions,
    add_runs,
    publish_study,
    read_manifest,
    write_study,
)
from bench.board.select import check_metric, printed_table, select_records
from bench.errors import ConfigError
from bench.metrics import CLASSIFICATION_METRICS
from bench.records import RunStore
from bench.tracking import resolve_wandb_mode


def _ci_metrics(value: str | None) -> list[str] | None:
    if value is None:
        return None
    ci = list(CLASSIFICATION_METRICS) if value == "all" else [m for m in value.split(",") if m]
    unknown = [m for m in ci if m not in (*CLASSIFICATION_METRICS, "dice", "iou", "dice_pooled")]
    if unknown:
        raise ConfigError(f"--ci-metrics: unknown {unknown}; valid: {CLASSIFICATION_METRICS}")
    return ci


def study_dir(args: argparse.Namespace) -> Path:
    """Where a study's files go: ``--out``, else ``results/<--name>``."""
    return Path(args.out) if args.out else Path("results") / (args.name or "")


def _special(args: argparse.Namespace, argv: list[str]) -> int | None:
    """The modes that read no run store of their own: notes only, cross-data-set, publishing
    every study from its committed runs, adding runs to a study. None for the ordinary board."""
    if args.keep_published:
        raise ConfigError(
            "--keep-published is retired: a published row needs its runs; copy them into the "
            "study with --add-runs STORE --name STUDY, then bench-leaderboard --publish-all"
        )
    if args.notes_only:  # a published study whose run store is elsewhere: notes only
        if not args.notes:
            raise ConfigError("--notes-only re-renders study notes: give --notes FILE")
        out = study_dir(args)
        replace_notes(out / "README.md", render_notes(Path(args.notes).read_text(), out))
        print(f"wrote {out / 'README.md'} (notes from {args.notes})")
        return 0
    if args.add_runs:
        if not (args.name or args.out):
            raise ConfigError(
                "--add-runs copies runs into a study: give --name STUDY (or --out FOLDER)"
            )
        added = add_runs([Path(s) for s in args.add_runs], study_dir(args), args.dataset)
        print(f"added {len(added)} run(s) to {study_dir(args) / 'runs'}")
        return 0
    if args.publish_all:
        results = Path(args.publish_all)
        for study in read_manifest(results):
            written = publish_study(results, study, ["--publish-all", str(results)])
            print(f"{study.name}: wrote {len(written)} files")
        args.cross_dataset, args.rank_test = str(results), True
    if args.cross_dataset:
        if not Path(args.cross_dataset).is_dir():
            raise ConfigError(f"--cross-dataset {args.cross_dataset}: no such folder")
        written = publish_cross(
            Path(args.cross_dataset), f"bench-leaderboard {' '.join(argv)}", args.rank_test
        )
        for path in written:
            print(f"wrote {path}")
        return 0
    return None


def _read_stores(stores: list[str]) -> list:
    records, problems = [], []
    for store in stores:
        if not Path(store).is_dir():
            raise ConfigError(
                f"--runs-dir {store}: no such folder; give the paths.runs_dir of your runs "
                "(default: runs)"
            )
        got, bad = RunStore(store).iter_records()
        records += got
        problems += bad
    for line in problems:
        print(f"warning: skipped unreadable record {line}", file=sys.stderr)
    return records


def _study_options(args: argparse.Namespace) -> StudyOptions:
    return StudyOptions(
        name=args.name or "",
        reference=args.reference,
        ensembles=args.ensembles,
        compare_all=args.compare_all,
        rank_test=args.rank_test,
        metric=args.metric,
        notes=args.notes if args.publish else None,
        recipe=args.recipe,
        n_boot=args.n_boot,
        seed=args.seed,
    )


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The command body of bench-leaderboard (errors are reported by :func:`main`)."""
    special = _special(args, argv)
    if special is not None:
        return special
    ci = _ci_metrics(args.ci_metrics)
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise ConfigError(
            f"--name {args.name!r} must be a plain folder name (letters, digits, _ . -); "
            "use --out for another location"
        )
    records = select_records(_read_stores(args.runs_dir), args.dataset, args.where)
    board = board_from_records(
        records, args.metric, args.reference, args.n_boot, ci, args.seed, args.ensembles
    )
    if board.empty:
        where = " ".join(args.runs_dir)
        n = len(records)
        why = f"{n} run(s) match but none is done" if n else "the store holds no runs"
        print(f"no finished runs in {where} ({why}); run bench-train first", file=sys.stderr)
        return 1
    if args.metric:
        check_metric(board.table, args.metric)
    if board.n_unfinished:
        print(f"note: {board.n_unfinished} unfinished run(s) (failed/interrupted/running) left out")
    # what a reader must know about the numbers (an undefined metric stored as NaN, ...), once
    for note in sorted({n for r in board.records.values() if r.done for n in r.notes or []}):
        print(f"note: {note}")
    if args.compare:
        metric = (args.metric or "test_auc").removeprefix("test_")
        pair = compare_pair(
            board.runs, board.table, *args.compare, args.dataset, metric, args.n_boot or 1000,
            args.seed,
        )  # fmt: skip
        print(pair)
        return 0
    written = _write(args, argv, board)
    if args.wandb:
        log_to_wandb(board.table, {r.sweep_group for r in board.records.values() if r.done},
                     study_dir(args))  # fmt: skip
    with pd.option_context(
        "display.width", 200, "display.max_columns", 40, "display.float_format", "{:.4f}".format
    ):
        print(printed_table(board.table).to_string(index=False, na_rep=""))
    print(f"wrote {written[0]} ({len(board.table)} rows)")
    return 0


def _write(args: argparse.Namespace, argv: list[str], board) -> list[Path]:
    """The board's files (with --compare-all/--rank-test their tables); with --publish the
    study's provenance README and notes too."""
    study = _study_options(args)
    return write_study(board.table, board, study, study_dir(args), argv, readme=args.publish)


def log_to_wandb(table: pd.DataFrame, groups: set, out: Path, project: str = "medbench") -> None:
    """Log the leaderboard as a ``wandb.Table`` in an ``aggregate`` run of the sweep's group;
    the offline run folder goes under ``out``, next to the tables."""
    import wandb

    group = next(iter(groups)) if len(groups) == 1 else None
    run = wandb.init(
        project=project,
        group=group,
        job_type="aggregate",
        name=f"leaderboard-{group or 'all'}",
        mode=resolve_wandb_mode("auto"),
        dir=str(out),
    )
    try:
        shown = table.drop(columns=["_first_run"], errors="ignore")
        shown = shown.astype(object).where(shown.notna(), None)
        run.log({"leaderboard": wandb.Table(dataframe=shown)})
    finally:
        wandb.finish()
