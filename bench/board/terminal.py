"""A compact leaderboard for the console (the end of a sweep)."""

from __future__ import annotations

import pandas as pd

from bench.board import board_from_records
from bench.records import RunStore

# no rank column: ranks need the bootstrap CIs (bench-leaderboard); this table prints at once
COLUMNS = ["dataset", "model", "scheme", "n_runs"]
FOOTER = "(best mean first; bench-leaderboard ranks rows by their 95% CIs)"


def blank_missing(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` with missing values shown empty (a config key a row does not have)."""
    table = table.copy()
    for c in columns:
        if c in table:
            table[c] = ["" if v is None or v != v else v for v in table[c]]
    return table


def sweep_board_text(runs_dir: str, run_ids: list[str]) -> str:
    """The leaderboard of the runs ``run_ids`` (no bootstrap: it prints at once)."""
    store = RunStore(runs_dir)
    records = [r for r in (store.read(i) for i in dict.fromkeys(run_ids)) if r is not None]
    board = board_from_records(records, n_boot=0)
    if board.empty:
        return ""
    table = board.table
    cols = COLUMNS[:3] + [c for c in table.attrs.get("varying", []) if c in table] + COLUMNS[3:]
    for m in ("test_auc", "test_acc", "test_dice"):
        if f"{m}_mean" in table and table[f"{m}_mean"].notna().any():
            table[m] = [
                "" if a != a else f"{a:.3f}" + ("" if b != b else f" ± {b:.3f}")
                for a, b in zip(
                    table[f"{m}_mean"],
                    table.get(f"{m}_std", table[f"{m}_mean"] * float("nan")),
                    strict=True,
                )
            ]
            cols.append(m)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        text = blank_missing(table[cols], table.attrs.get("varying", [])).to_string(
            index=False, na_rep=""
        )
    return f"{text}\n{FOOTER}"
