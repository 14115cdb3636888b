"""``bench-speed parity``: is the fast CPU preset still right? fp32 rows against the rows of
``trainer=cpu_fast`` of the same data set, model and seeds, from their run records.

For each (data set, model): test AUC and ACC, mean ± std over seeds, under both settings; the
difference of the means and the seed spread it is judged against (the larger of the two
settings' standard deviations). ``parity`` is True when every difference is within that spread.
Written to ``precision_parity.csv``; the records come from run stores (a study's committed
``runs/``), so the table is rebuilt from the repository.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import ConfigError
from bench.records import RunRecord, RunStore

METRICS = ("auc", "acc")


def _setting(r: RunRecord) -> str:
    layout = "channels-last" if (r.config.get("task") or {}).get("channels_last") else "NCHW"
    return f"{r.precision} {layout}"


def parity_table(records: list[RunRecord], models: list[str], datasets: list[str]) -> pd.DataFrame:
    """One row per (data set, model): fp32 vs the bf16 preset, mean ± std and the verdict."""
    done = [
        r
        for r in records
        if r.done and r.model in models and r.dataset in datasets and not r.cv and r.epochs
    ]
    rows = []
    for (ds, model), group in pd.DataFrame(
        [{"dataset": r.dataset, "model": r.model, "record": r} for r in done]
    ).groupby(["dataset", "model"]):
        recs = list(group["record"])
        fp32 = [r for r in recs if r.precision == "32-true"]
        fast = [r for r in recs if r.precision.startswith("bf16")]
        seeds = sorted({r.seed for r in fp32} & {r.seed for r in fast})
        if not seeds:
            continue
        fp32 = [r for r in fp32 if r.seed in seeds]
        fast = [r for r in fast if r.seed in seeds]
        row = {
            "dataset": ds,
            "model": model,
            "seeds": ";".join(map(str, seeds)),
            "fp32_setting": _setting(fp32[0]),
            "fast_setting": _setting(fast[0]),
            "epochs": fp32[0].epochs,
        }
        verdicts = []
        for m in METRICS:
            a = pd.Series([r.test.get(m) for r in fp32], dtype=float)
            b = pd.Series([r.test.get(m) for r in fast], dtype=float)
            spread = max(a.std(), b.std())
            diff = b.mean() - a.mean()
            row.update(
                {
                    f"fp32_{m}_mean": a.mean(),
                    f"fp32_{m}_std": a.std(),
                    f"fast_{m}_mean": b.mean(),
                    f"fast_{m}_std": b.std(),
                    f"diff_{m}": diff,
                    f"seed_spread_{m}": spread,
                }
            )
            verdicts.append(abs(diff) <= spread)
        row["fp32_train_min"] = sum(r.cost.train_time_s or 0 for r in fp32) / len(fp32) / 60
        row["fast_train_min"] = sum(r.cost.train_time_s or 0 for r in fast) / len(fast) / 60
        row["parity"] = all(verdicts)
        rows.append(row)
    return pd.DataFrame(rows)


def parity(args) -> int:
    """``bench-speed parity``: the table from the given run stores."""
    records = []
    for store in args.stores:
        if not Path(store).is_dir():
            raise ConfigError(f"--stores {store}: no such run store")
        records += RunStore(store).iter_records()[0]
    table = parity_table(records, args.parity_models, args.parity_datasets)
    if table.empty:
        raise ConfigError("no (data set, model) has finished fp32 and bf16 runs of common seeds")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "precision_parity.csv", index=False, float_format="%.6g")
    print(table.to_string(index=False))
    return 0
