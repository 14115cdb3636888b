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
from bench.speed.cpu_page import cpu_page

METRICS = ("auc", "acc")
COLUMNS = [
    "dataset", "model", "seeds", "fp32_seeds_done", "fast_seeds_done", "fp32_setting",
    "fast_setting", "epochs",
    *(
        name
        for m in METRICS
        for name in (f"fp32_{m}_mean", f"fp32_{m}_std", f"fast_{m}_mean", f"fast_{m}_std",
                     f"diff_{m}", f"seed_spread_{m}")
    ),
    "fp32_train_min", "fast_train_min", "parity",
]  # fmt: skip


def _setting(r: RunRecord) -> str:
    layout = "channels-last" if (r.config.get("task") or {}).get("channels_last") else "NCHW"
    return f"{r.precision} {layout}"


def _seed_list(seeds) -> str:
    return ";".join(map(str, sorted(seeds)))


def _compare(fp32: list[RunRecord], fast: list[RunRecord]) -> tuple[dict, bool]:
    """Mean ± std of each metric under both settings, the difference of the means, the seed
    spread it is judged against (the larger std), the wall time per run; and whether every
    difference lies within its spread."""
    stats, within = {}, True
    for m in METRICS:
        a = pd.Series([r.test.get(m) for r in fp32], dtype=float)
        b = pd.Series([r.test.get(m) for r in fast], dtype=float)
        spread, diff = max(a.std(), b.std()), b.mean() - a.mean()
        stats |= {
            f"fp32_{m}_mean": a.mean(),
            f"fp32_{m}_std": a.std(),
            f"fast_{m}_mean": b.mean(),
            f"fast_{m}_std": b.std(),
            f"diff_{m}": diff,
            f"seed_spread_{m}": spread,
        }
        within = within and bool(abs(diff) <= spread)
    for side, recs in (("fp32", fp32), ("fast", fast)):
        stats[f"{side}_train_min"] = sum(r.cost.train_time_s or 0 for r in recs) / len(recs) / 60
    return stats, within


def parity_table(
    records: list[RunRecord],
    models: list[str],
    datasets: list[str],
    seeds: tuple[int, ...] = (0, 1, 2),
) -> pd.DataFrame:
    """One row per asked (data set, model): fp32 vs the bf16 preset over the seeds both have.

    ``parity`` is ``yes``/``no`` once both settings have finished every asked seed, and
    ``pending`` before that (a pair with no run at all included), so a missing pair is said
    on the page instead of dropped from it; the means of a pending pair cover the seeds both
    settings have."""
    done = [
        r
        for r in records
        if r.done
        and r.model in models
        and r.dataset in datasets
        and not r.cv
        and r.epochs
        and r.seed in seeds
    ]
    rows = []
    for ds in sorted(datasets):
        for model in sorted(models):
            recs = [r for r in done if r.dataset == ds and r.model == model]
            fp32 = [r for r in recs if r.precision == "32-true"]
            fast = [r for r in recs if r.precision.startswith("bf16")]
            common = sorted({r.seed for r in fp32} & {r.seed for r in fast})
            row = {
                "dataset": ds,
                "model": model,
                "seeds": _seed_list(common),
                "fp32_seeds_done": _seed_list({r.seed for r in fp32}),
                "fast_seeds_done": _seed_list({r.seed for r in fast}),
            }
            rows.append(row)
            if not common:
                row["parity"] = "pending"
                continue
            fp32 = [r for r in fp32 if r.seed in common]
            fast = [r for r in fast if r.seed in common]
            row.update(
                fp32_setting=_setting(fp32[0]), fast_setting=_setting(fast[0]),
                epochs=fp32[0].epochs,
            )  # fmt: skip
            stats, within = _compare(fp32, fast)
            row.update(stats)
            complete = set(common) == set(seeds)
            row["parity"] = ("yes" if within else "no") if complete else "pending"
    return pd.DataFrame(rows, columns=COLUMNS)


def parity(args) -> int:
    """``bench-speed parity``: the table from the given run stores."""
    records = []
    for store in args.stores:
        if not Path(store).is_dir():
            raise ConfigError(f"--stores {store}: no such run store")
        records += RunStore(store).iter_records()[0]
    table = parity_table(
        records, args.parity_models, args.parity_datasets, tuple(args.parity_seeds)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "precision_parity.csv", index=False, float_format="%.6g")
    print(table.to_string(index=False))
    page = cpu_page(out)
    if page:
        print(f"wrote {page}")
    return 0
