"""One leaderboard row per configuration: runs that differ only in seed (or CV fold) are pooled.

A row's ``config_id`` hashes the resolved config without seeds and folds (and without the
settings the run id ignores: paths, logging, data loading). Within a dataset, the config keys
whose values differ between rows become columns (``task.optimizer.lr``, ``data.augment``, ...),
so rows can be told apart at a glance.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bench.board.frame import COST_COLUMNS, ENV_COLUMNS, default_metric
from bench.metrics import CLASSIFICATION_METRICS, classification_metrics, lower_is_better
from bench.records import RunFiles, RunRecord, config_for_row, flatten
from bench.stats import bootstrap_ci, metric_fn, read_outputs
from bench.toolkit import BOOTSTRAP_RESAMPLES

log = logging.getLogger(__name__)

SEGMENTATION_CI = ("dice", "iou", "hd95", "nsd")
SURFACE_METRICS = ("hd95", "nsd")  # need the per-case values of the test file
# always columns of their own: never repeated as "varying config" columns
IDENTITY_KEYS = ("model.name", "data.flag", "data.name", "data.size", "trainer.max_epochs")


def _join_unique(values) -> str:
    return ";".join(sorted({str(v) for v in values if v is not None and v == v}))


def run_outputs(runs: pd.DataFrame, kind: str) -> list[tuple] | None:
    """Per-sample test outputs of each run, or None when any is missing or misaligned."""
    out = []
    for d in runs["_dir"]:
        path = RunFiles(Path(d)).predictions("test") if d else None
        if path is None or not path.exists():
            return None
        out.append(read_outputs(path, kind))
    if len({len(arrays[0]) for arrays in out}) != 1:
        return None
    return out


def varying_keys(records: list[RunRecord]) -> list[str]:
    """Config keys whose values differ between the configurations of ``records``.

    ``model.*`` keys count only when they differ between configurations of the same model
    (BCCNN's ``model.depth`` is not a difference from a ResNet); identity keys (model name,
    dataset, size, epochs) are columns already.
    """
    by_config: dict[str, dict] = {}
    for r in records:
        by_config.setdefault(r.config_id, flatten(config_for_row(r.config)))
        by_config[r.config_id]["__model__"] = r.model
    if len(by_config) < 2:
        return []
    flats = list(by_config.values())
    keys = sorted({k for f in flats for k in f if k != "__model__"})
    varying = []
    for key in keys:
        if key in IDENTITY_KEYS or key.endswith("._target_") and key.startswith("model."):
            continue
        if key.startswith("model."):
            groups: dict[str, set] = {}
            for f in flats:
                groups.setdefault(f["__model__"], set()).add(repr(f.get(key)))
            if any(len(v) > 1 for v in groups.values()):
                varying.append(key)
        elif len({repr(f.get(key)) for f in flats}) > 1:
            varying.append(key)
    return varying


def _cell(value):
    return ",".join(map(str, value)) if isinstance(value, list) else value


def aggregate(
    df: pd.DataFrame,
    records: dict[str, RunRecord],
    ci_metrics: list[str] | None = None,
    n_boot: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    ensembles: bool = False,
) -> pd.DataFrame:
    """Collapse repeats: ``n_runs``/``n_seeds``/``n_folds``, ``<metric>_mean/_std`` (pandas,
    ddof=1), bootstrap ``test_<m>_ci95_lo/_hi`` over test samples (cases), mean cost, joined
    environment, the varying config columns; with ``ensembles`` one more row per configuration
    whose runs' test probabilities are averaged (seed or fold ensembles)."""
    if df.empty:
        return pd.DataFrame()
    metric_cols = [c for c in df.columns if c.startswith(("test_", "val_", "last_"))]
    rows = []
    for (dataset, config_id), g in df.groupby(["dataset", "config_id"], sort=True):
        kind = g["kind"].iloc[0]
        task = g["task"].iloc[0]
        first = records[g["run_id"].iloc[0]]
        row = {
            "dataset": dataset,
            "config_id": config_id,
            "kind": kind,
            "task": task,
            "input_size": g["input_size"].iloc[0],
            "model": g["model"].iloc[0],
            "scheme": g["scheme"].iloc[0],
            "epochs": g["epochs"].iloc[0],
            "ensemble": False,
            "n_runs": len(g),
            "n_seeds": int(g["seed"].nunique()),
            "n_folds": int(g["fold"].nunique()) if g["fold"].notna().any() else None,
            "cv_folds": g["cv_folds"].dropna().iloc[0] if g["cv_folds"].notna().any() else None,
        }
        for c in metric_cols:
            vals = g[c].dropna()
            if len(vals):
                row[f"{c}_mean"] = vals.mean()
                row[f"{c}_std"] = vals.std()
        wanted = ci_metrics if ci_metrics is not None else _default_ci(kind)
        outputs = run_outputs(g, kind) if wanted and n_boot > 0 else None
        if outputs:
            for m in wanted:
                if f"test_{m}" not in g:
                    continue
                if m in SURFACE_METRICS and any(len(o) < 2 for o in outputs):
                    continue
                _, lo, hi = bootstrap_ci(outputs, metric_fn(kind, m, task), n_boot, seed)
                row[f"test_{m}_ci95_lo"], row[f"test_{m}_ci95_hi"] = lo, hi
        for col in COST_COLUMNS.values():
            row[col] = g[col].mean() if col in g and g[col].notna().any() else None
        for col in ENV_COLUMNS:
            row[col] = _join_unique(g[col]) if col in g else ""
        row["run_ids"] = ";".join(g["run_id"])
        row["_first_run"] = first.run_id
        rows.append(row)
        if ensembles and kind == "classification" and len(g) >= 2:
            ens = _ensemble_row(row, g, task, outputs or run_outputs(g, kind), n_boot, seed)
            if ens:
                rows.append(ens)
    board = pd.DataFrame(rows)
    return _add_varying(board, records)


def _default_ci(kind: str) -> list[str]:
    return list(SEGMENTATION_CI) if kind == "segmentation" else ["auc", "acc"]


def _ensemble_row(row: dict, g: pd.DataFrame, task: str, outputs, n_boot: int, seed: int):
    """The configuration's runs as one model: their test probabilities averaged."""
    if not outputs:
        return None
    y = outputs[0][0]
    score = np.mean([s for _, s in outputs], axis=0)
    ens = {k: v for k, v in row.items() if not k.startswith(("test_", "val_", "last_"))}
    ens.update({"ensemble": True, "n_members": len(outputs)})
    for m, v in classification_metrics(y, score, task).items():
        ens[f"test_{m}_mean"] = v
    for m in ("auc", "acc") if n_boot > 0 else ():
        _, lo, hi = bootstrap_ci([(y, score)], metric_fn("classification", m, task), n_boot, seed)
        ens[f"test_{m}_ci95_lo"], ens[f"test_{m}_ci95_hi"] = lo, hi
    return ens


def _add_varying(board: pd.DataFrame, records: dict[str, RunRecord]) -> pd.DataFrame:
    """Add the per-dataset varying config keys as columns (empty where a row lacks the key)."""
    if board.empty:
        return board
    board = board.copy()
    varying_all: list[str] = []
    for _, g in board.groupby("dataset"):
        recs = [records[r] for r in g["_first_run"]]
        keys = varying_keys(recs)
        for key in keys:
            if key not in board:
                board[key] = None
            for i, rid in zip(g.index, g["_first_run"], strict=True):
                board.at[i, key] = _cell(flatten(config_for_row(records[rid].config)).get(key))
        varying_all += [k for k in keys if k not in varying_all]
    board.attrs["varying"] = varying_all
    return board


def rank(board: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Rank within each dataset by ``<metric>_mean`` (lower is better for ECE/Brier/NLL...).

    ``metric`` None ranks each dataset by its kind's default (test AUC; per-case test Dice for
    segmentation). ``rank`` counts the rows whose 95% CI lies entirely beyond this row's, plus
    one: rows whose intervals overlap the leader's share rank 1. Without CIs, plain order.
    """
    if board.empty:
        return board
    parts = []
    for _, g in board.groupby("dataset", sort=True):
        m = metric or default_metric(g["kind"].iloc[0])
        col = f"{m}_mean"
        g = g.copy()
        if col not in g or g[col].isna().all():
            g["rank"] = None
            g["rank_by"] = None
            parts.append(g)
            continue
        lower = lower_is_better(m)
        lo, hi = f"{m}_ci95_lo", f"{m}_ci95_hi"
        ranks = []
        for _, row in g.iterrows():
            if pd.isna(row.get(col)):
                ranks.append(None)
                continue
            if lo in g and hi in g and pd.notna(row.get(lo)):
                better = (g[hi] < row[lo]) if lower else (g[lo] > row[hi])
            else:
                better = (g[col] < row[col]) if lower else (g[col] > row[col])
            ranks.append(1 + int(better.sum()))
        g["rank"] = ranks
        g["rank_by"] = m
        parts.append(g.sort_values(col, ascending=lower, na_position="last"))
    out = pd.concat(parts, ignore_index=True)
    out.attrs = board.attrs
    return out


__all__ = ["CLASSIFICATION_METRICS", "aggregate", "rank", "varying_keys"]
