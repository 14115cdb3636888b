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
from bench.board.compare import compare_all, compare_pair, matrix_of, rank_test
from bench.board.merge import merge_per_class, merge_published
from bench.board.notes import render_notes, replace_notes
from bench.board.outputs import write_csv, write_outputs, write_provenance
from bench.board.select import check_metric, printed_table, select_records
from bench.errors import ConfigError
from bench.io import atomic_write_text
from bench.metrics import CLASSIFICATION_METRICS
from bench.records import RunStore
from bench.stats import cd_diagram
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


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The command body of bench-leaderboard (errors are reported by :func:`main`)."""
    if args.notes_only:  # a published study whose run store is elsewhere: notes only
        if not args.notes:
            raise ConfigError("--notes-only re-renders study notes: give --notes FILE")
        out = study_dir(args)
        replace_notes(out / "README.md", render_notes(Path(args.notes).read_text(), out))
        print(f"wrote {out / 'README.md'} (notes from {args.notes})")
        return 0
    if args.cross_dataset:
        from bench.board.cross import publish_cross

        if not Path(args.cross_dataset).is_dir():
            raise ConfigError(f"--cross-dataset {args.cross_dataset}: no such folder")
        written = publish_cross(
            Path(args.cross_dataset), f"bench-leaderboard {' '.join(argv)}", args.rank_test
        )
        for path in written:
            print(f"wrote {path}")
        return 0
    ci = _ci_metrics(args.ci_metrics)
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise ConfigError(
            f"--name {args.name!r} must be a plain folder name (letters, digits, _ . -); "
            "use --out for another location"
        )
    records, problems = [], []
    for store in args.runs_dir:
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
    records = select_records(records, args.dataset, args.where)
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
    table = board.table
    if args.compare:
        metric = (args.metric or "test_auc").removeprefix("test_")
        print(
            compare_pair(
                board.runs,
                table,
                *args.compare,
                args.dataset,
                metric,
                args.n_boot or 1000,
                args.seed,
            )
        )
        return 0
    out = study_dir(args)
    previous_per_class = None
    if args.keep_published:
        if not args.publish:
            raise ConfigError("--keep-published adds to a published study: give --publish too")
        table = merge_published(table, out / "leaderboard.csv", args.metric)
        if (out / "per_class.csv").exists():
            previous_per_class = pd.read_csv(out / "per_class.csv")
    written = write_outputs(table, out, board.records)
    notes: list[str] = []
    kept = table.attrs.get("kept_config_ids", [])
    if kept:
        merge_per_class(out / "per_class.csv", previous_per_class, kept)
        print(f"kept {len(kept)} published configuration(s) this store does not hold")
        notes.append(
            f"{len(kept)} configuration(s) kept from the earlier publication of this study "
            "(`--keep-published`: their runs are not in this store); `compare/` is rewritten "
            "only with --compare-all over a store that holds every row"
        )
    if args.compare_all:
        metric = args.metric
        for ds, pairs in compare_all(
            board.runs, table, metric, args.n_boot or 1000, args.seed
        ).items():
            written.append(write_csv(out / "compare" / f"{ds}.csv", pairs))
            matrix = matrix_of(pairs)
            atomic_write_text(
                out / "compare" / f"{ds}_p_holm.csv", matrix.to_csv(float_format="%.4g")
            )
            sig = int(pairs["significant"].sum())
            notes.append(f"{ds}: {sig} of {len(pairs)} pairs differ at Holm-adjusted p < 0.05")
    if args.rank_test:
        test = rank_test(table, args.metric or "test_auc")
        notes.append(test.note)
        if test.ran:
            written.append(
                write_csv(out / "friedman_ranks.csv", test.ranks.rename("mean_rank").reset_index())
            )
            atomic_write_text(out / "nemenyi.csv", test.nemenyi.to_csv(float_format="%.4g"))
            written.append(cd_diagram(test, out / "cd_diagram.png"))
    for n in notes:
        print(n)
    if args.publish:
        # the notes' figures are read from the CSVs just written (bench/board/notes.py)
        narrative = render_notes(Path(args.notes).read_text(), out) if args.notes else None
        written.append(
            write_provenance(out, argv, table, args.recipe, notes, board.records, narrative)
        )
    if args.wandb:
        log_to_wandb(table, {r.sweep_group for r in board.records.values() if r.done}, out)
    with pd.option_context(
        "display.width", 200, "display.max_columns", 40, "display.float_format", "{:.4f}".format
    ):
        print(printed_table(table).to_string(index=False, na_rep=""))
    print(f"wrote {written[0]} ({len(table)} rows)")
    return 0


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
