"""Choosing and showing a leaderboard: which runs (``--dataset``, ``--where``), which columns
are printed, which metric ranks. The library under ``bench-leaderboard`` and ``bench.leaderboard``.
"""

from __future__ import annotations

import pandas as pd

from bench.board.terminal import blank_missing
from bench.errors import ConfigError
from bench.records import canonical, flatten

PRINT_COLUMNS = [
    "rank",
    "dataset",
    "model",
    "scheme",
    "epochs",
    "n_runs",
    "test_auc_mean",
    "test_auc_std",
    "test_acc_mean",
    "test_dice_mean",
    "test_dice_std",
    "param_count_m",
    "train_time_s",
    "ref_auc",
    "delta_auc",
]


def printed_table(table: pd.DataFrame) -> pd.DataFrame:
    """The columns bench-leaderboard prints: rank, dataset, model, the config values that vary
    between rows, runs, the ranking metric with its spread, size and cost."""
    show = [c for c in PRINT_COLUMNS if c in table and table[c].notna().any()]
    show[4:4] = [c for c in table.attrs.get("varying", []) if c in table]
    return blank_missing(table[show], table.attrs.get("varying", []))


def hydra_value(value) -> str:
    """A config value written the way Hydra writes it on a command line (true, null, 0.1)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _normalise(want: str) -> str:
    low = want.lower()
    return (
        {"none": "null", "~": "null"}.get(low, low)
        if low in ("true", "false", "null", "none", "~")
        else want
    )


def select_records(records: list, datasets: list[str] | None, where: list[str]) -> list:
    """Runs of ``datasets`` whose config has every ``key=value`` of ``where`` (values compared
    as Hydra writes them); a filter that matches nothing is an error listing what is there."""
    if datasets:
        present = sorted({r.dataset for r in records})
        unknown = [d for d in datasets if d not in present]
        if unknown:
            raise ConfigError(
                f"--dataset {' '.join(unknown)}: no runs of that dataset; datasets in the store: "
                f"{', '.join(present) or 'none'}"
            )
        records = [r for r in records if r.dataset in datasets]
    for cond in where:
        key, sep, want = cond.partition("=")
        if not key or not sep:
            raise ConfigError(f"--where {cond!r}: write key=value, e.g. data.cv.folds=5")
        values = {}
        for r in records:
            flat = {**flatten(canonical(r.config)), **flatten(r.config)}
            values[r.run_id] = hydra_value(flat[key]) if key in flat else None
        if all(v is None for v in values.values()):
            raise ConfigError(
                f"--where {key}: no run's config has that key; check the spelling against "
                "a record's config (e.g. model.name, data.size, trainer.max_epochs)"
            )

        def matches(value: str | None, want: str = want) -> bool:
            if value in ("true", "false", "null"):  # False/None as Python writes them
                return value == _normalise(want)
            return value == want

        kept = [r for r in records if matches(values[r.run_id])]
        if not kept:
            seen = sorted({v if v is not None else "(unset)" for v in values.values()})
            raise ConfigError(
                f"--where {key}={want} matches no run; values of {key} in the store: "
                f"{', '.join(seen)}"
            )
        records = kept
    return records


def check_metric(table: pd.DataFrame, metric: str) -> None:
    """``--metric`` must be a column the leaderboard has (``test_auc``, ``val_acc``, ...)."""
    if f"{metric}_mean" in table or metric in table:
        return
    available = sorted(c.removesuffix("_mean") for c in table.columns if c.endswith("_mean"))
    raise ConfigError(
        f"--metric {metric}: not in the leaderboard; available: {', '.join(available)}"
    )
