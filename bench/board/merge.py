"""Keep the rows of an already published study whose runs this store does not hold.

A study can be trained on several machines (an H100 for most rows, a CPU for one more): the
store at hand then holds only some of its runs. ``bench-leaderboard --publish --keep-published``
adds the new rows to the published ``leaderboard.csv`` instead of replacing it, and re-ranks.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.board.aggregate import rank


def merge_published(board: pd.DataFrame, published: Path, metric: str | None) -> pd.DataFrame:
    """``board`` plus the rows of ``published`` whose ``config_id`` it lacks, ranked again."""
    if not Path(published).exists():
        return board
    old = pd.read_csv(published)
    kept = old[~old["config_id"].astype(str).isin(set(board["config_id"].astype(str)))]
    if kept.empty:
        return board
    drop = ["rank", "rank_by"]
    merged = pd.concat(
        [board.drop(columns=drop, errors="ignore"), kept.drop(columns=drop, errors="ignore")],
        ignore_index=True,
    )
    merged.attrs = dict(board.attrs)
    merged.attrs["kept_config_ids"] = sorted(set(kept["config_id"].astype(str)))
    return rank(merged, metric)


def merge_per_class(path: Path, previous: pd.DataFrame | None, kept_ids: list[str]) -> None:
    """Put the per-class rows of the kept configurations back into ``per_class.csv``."""
    if previous is None or not kept_ids:
        return
    rows = previous[previous["config_id"].astype(str).isin(kept_ids)]
    current = pd.read_csv(path) if Path(path).exists() else pd.DataFrame()
    pd.concat([current, rows], ignore_index=True).to_csv(path, index=False)
