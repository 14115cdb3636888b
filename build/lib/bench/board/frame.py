"""Run records -> one row per finished run (pandas), the input of every leaderboard table."""

from __future__ import annotations

import pandas as pd

from bench.records import RunRecord

COST_COLUMNS = {
    "params_total": "param_count_m",
    "gmacs": "gmacs",
    "train_time_s": "train_time_s",
    "epoch_time_s": "epoch_time_s",
    "train_samples_per_sec": "train_samples_per_sec",
    "infer_samples_per_sec": "infer_samples_per_sec",
    "peak_mem_mb": "peak_mem_mb",
}
ENV_COLUMNS = ["torch", "device", "precision", "git_sha"]


def default_metric(kind: str | None) -> str:
    """The ranking metric of a task kind: test AUC, or per-case test Dice for segmentation."""
    return "test_dice" if kind == "segmentation" else "test_auc"


def runs_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per done run: keys, ``test_``/``val_``/``last_`` metrics, cost and environment.

    ``last_*`` are the test metrics of the last epoch's weights (what the official MedMNIST
    scripts report); ``test_*`` those of the best-validation weights.
    """
    rows = []
    for r in records:
        if not r.done:
            continue
        spec = r.spec or {}
        cv = r.cv or {}
        row = {
            "run_id": r.run_id,
            "config_id": r.config_id,
            "dataset": r.dataset,
            "kind": r.kind or "classification",
            "task": r.task,
            "input_size": (spec.get("input_size") or [None])[0],
            "model": r.model,
            "scheme": r.scheme,
            "epochs": r.epochs,
            "seed": r.seed,
            "fold": cv.get("fold"),
            "cv_folds": cv.get("folds"),
            "precision": r.precision,
            "_dir": str(r.dir) if r.dir else None,
        }
        for prefix, metrics in (("test", r.test), ("val", r.val), ("last", r.test_last)):
            for k, v in (metrics or {}).items():
                if isinstance(v, (int, float)):
                    row[f"{prefix}_{k}"] = v
        cost = vars(r.cost)
        for src, dst in COST_COLUMNS.items():
            v = cost.get(src)
            row[dst] = v / 1e6 if (src == "params_total" and v is not None) else v
        row.update({"torch": r.env.torch, "device": r.env.device, "git_sha": r.env.git_sha})
        rows.append(row)
    return pd.DataFrame(rows)
