"""The Python API: train a configuration, read a leaderboard, load a finished run.

    import bench
    record = bench.train(["data=synthetic", "model=bccnn", "trainer.max_epochs=1"])
    table = bench.leaderboard("runs")              # the DataFrame bench-leaderboard prints
    run = bench.load_run(record.dir)
    probs = run.predict(run.test_arrays()[0])      # uint8 images -> probabilities

``bench.train`` composes ``conf/train.yaml`` with the overrides as ``bench-train`` would (user
mistakes raise :class:`bench.errors.BenchError` subclasses with the same one-line messages) and
returns the run's record (skipped runs return the record they matched).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.board import BOOTSTRAP_RESAMPLES, board_from_records
from bench.board.select import printed_table, select_records
from bench.errors import BenchError, ConfigError
from bench.finished import Run, load_run
from bench.job.entry import train as train_config
from bench.job.instantiate import compose_train
from bench.records import RunRecord, RunStore, load_record

__all__ = ["Run", "leaderboard", "load_run", "train"]


def train(overrides: list[str] | None = None, output_dir: str | Path = "outputs/api") -> RunRecord:
    """Compose and run one configuration; returns its record (raises for a user mistake)."""
    cfg = compose_train(overrides, paths={"output_dir": str(output_dir)})
    outcome = train_config(cfg)
    if outcome.record_path is None:
        raise ConfigError(outcome.error or "the run did not start")
    record = load_record(outcome.record_path)
    if record.status == "failed" and outcome.exit_code == 2:
        raise BenchError(record.error or "the run failed")
    return record


def leaderboard(
    runs_dir: str | Path = "runs",
    metric: str | None = None,
    datasets: list[str] | None = None,
    where: list[str] | None = None,
    n_boot: int = BOOTSTRAP_RESAMPLES,
    full: bool = False,
) -> pd.DataFrame:
    """The leaderboard of a run store as bench-leaderboard prints it (``full``: every column
    of leaderboard.csv)."""
    records, _ = RunStore(runs_dir).iter_records()
    records = select_records(records, datasets, list(where or []))
    board = board_from_records(records, metric, n_boot=n_boot)
    if board.empty:
        return board.table
    return board.table if full else printed_table(board.table)
