"""Robustness tables from the records ``bench-robust`` filled (``evaluations.robustness``): the
long per-corruption table and the per-model summary, rebuilt from records alone (a published
study's committed runs included)."""

from __future__ import annotations

import pandas as pd

from bench.records import RunRecord


def robustness_rows(records: list[RunRecord]) -> pd.DataFrame:
    """Long table: dataset, model, config_id, seed, corruption, family, severity, metrics."""
    rows = []
    for r in records:
        rob = (r.evaluations or {}).get("robustness")
        if not rob:
            continue
        base = {
            "dataset": r.dataset,
            "model": r.model,
            "scheme": r.scheme,
            "config_id": r.config_id,
            "seed": r.seed,
        }
        rows.append(
            {**base, "corruption": "clean", "family": "clean", "severity": 0, **rob["clean"]}
        )
        for name, sevs in rob["corruptions"].items():
            for sev, m in sevs.items():
                rows.append(
                    {
                        **base,
                        "corruption": name,
                        "family": rob["families"][name],
                        "severity": int(sev),
                        **m,
                    }
                )
    return pd.DataFrame(rows)


def robustness_table(records: list[RunRecord]) -> pd.DataFrame:
    """Per dataset x model x corruption x severity: mean and std over seeds."""
    df = robustness_rows(records)
    if df.empty:
        return df
    keys = ["dataset", "model", "scheme", "config_id", "corruption", "family", "severity"]
    agg = df.groupby(keys)[["acc", "auc", "balanced_error"]].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg["n_runs"] = df.groupby(keys).size()
    return agg.reset_index()


def summary_table(records: list[RunRecord]) -> pd.DataFrame:
    """Per dataset x model: clean balanced error, mean BE and RBE over corruptions (± seeds)."""
    rows = []
    for r in records:
        rob = (r.evaluations or {}).get("robustness")
        if rob:
            rows.append(
                {
                    "dataset": r.dataset,
                    "model": r.model,
                    "config_id": r.config_id,
                    "seed": r.seed,
                    "clean_balanced_error": rob["clean"]["balanced_error"],
                    "mean_be": rob["mean_be"],
                    "mean_rbe": rob["mean_rbe"],
                    **{f"be_{k}": v for k, v in rob["be"].items()},
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    num = [c for c in df.columns if c not in ("dataset", "model", "config_id", "seed")]
    agg = df.groupby(["dataset", "model", "config_id"])[num].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    return agg.reset_index()
