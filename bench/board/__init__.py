"""Leaderboards from run records: one row per configuration, mean ± std over seeds (and folds),
bootstrap CIs, cost, paper deltas at the paper's protocol, and the statistics between rows.

    from bench.board import build_board
    board = build_board("runs")        # a Board: .table (pandas), .runs, .records
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bench.board.aggregate import aggregate, rank
from bench.board.frame import default_metric, runs_frame
from bench.board.reference import add_reference
from bench.records import RunRecord, RunStore
from bench.toolkit import BOOTSTRAP_RESAMPLES


@dataclass
class Board:
    """A leaderboard table and what it was built from."""

    table: pd.DataFrame
    runs: pd.DataFrame
    records: dict[str, RunRecord]
    problems: list[str] = field(default_factory=list)
    n_unfinished: int = 0

    @property
    def empty(self) -> bool:
        return self.table.empty


def board_from_records(
    records: list[RunRecord],
    metric: str | None = None,
    reference: bool = False,
    n_boot: int = BOOTSTRAP_RESAMPLES,
    ci_metrics: list[str] | None = None,
    seed: int = 0,
    ensembles: bool = False,
) -> Board:
    """Records -> the leaderboard (rows, CIs from ``n_boot`` resamples seeded by ``seed``)."""
    by_id = {r.run_id: r for r in records}
    runs = runs_frame(records)
    unfinished = sum(1 for r in records if not r.done)
    if runs.empty:
        return Board(pd.DataFrame(), runs, by_id, n_unfinished=unfinished)
    table = aggregate(runs, by_id, ci_metrics, n_boot, seed, ensembles)
    table = rank(table, metric)
    if reference:
        table = add_reference(table, by_id)
    return Board(table, runs, by_id, n_unfinished=unfinished)


def build_board(runs_dir: str, **kwargs) -> Board:
    """Read every record under ``runs_dir`` (unreadable ones become ``problems``) and build."""
    records, problems = RunStore(runs_dir).iter_records()
    board = board_from_records(records, **kwargs)
    board.problems = problems
    return board


__all__ = ["BOOTSTRAP_RESAMPLES", "Board", "board_from_records", "build_board", "default_metric"]
