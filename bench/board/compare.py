"""Comparisons between leaderboard rows: paired bootstrap (one pair, or all pairs with Holm's
correction), Wilcoxon over seeds where it can reach significance, Friedman/Nemenyi over
datasets."""

from __future__ import annotations

import pandas as pd

from bench.board.aggregate import run_outputs
from bench.board.frame import default_metric
from bench.errors import ConfigError
from bench.metrics import lower_is_better
from bench.stats import (
    RankTest,
    friedman_nemenyi,
    holm,
    metric_fn,
    paired_bootstrap,
    wilcoxon_min_p,
)


def row_label(row: pd.Series, varying: list[str]) -> str:
    """``model`` plus the row's varying config values, e.g. ``bccnn[task.optimizer.lr=0.1]``."""
    extra = [
        f"{k}={row[k]}" for k in varying if k in row and row[k] is not None and row[k] == row[k]
    ]
    label = str(row["model"]) + (f"-{row['scheme']}" if row["scheme"] != "scratch" else "")
    return label + (f"[{','.join(extra)}]" if extra else "")


def _outputs(df: pd.DataFrame, board_row: pd.Series):
    runs = df[df["run_id"].isin(str(board_row["run_ids"]).split(";"))]
    out = run_outputs(runs, board_row["kind"])
    if out is None:
        raise ConfigError(
            f"predictions_test.csv missing for some runs of {board_row['model']} on "
            f"{board_row['dataset']}; rerun them"
        )
    return out, runs


def compare_pair(
    df: pd.DataFrame,
    board: pd.DataFrame,
    a: str,
    b: str,
    dataset: str | list[str] | None,
    metric: str,
    n_boot: int,
    seed: int,
) -> str:
    """Paired bootstrap of ``metric(a) - metric(b)``; Wilcoxon over shared seeds when >= 6.

    Without ``dataset`` every dataset on which both models have runs is compared."""
    from scipy.stats import wilcoxon

    single = board[~board.ensemble.astype(bool)]
    for m in (a, b):
        if m not in set(single.model):
            raise ConfigError(
                f"--compare: no done runs of model {m!r}; models in the store: "
                f"{', '.join(sorted(single.model.unique()))}"
            )
    if dataset is None:
        shared = set(single[single.model == a].dataset) & set(single[single.model == b].dataset)
        if not shared:
            raise ConfigError(
                f"--compare: {a!r} and {b!r} share no dataset ({a}: "
                f"{', '.join(sorted(set(single[single.model == a].dataset)))}; {b}: "
                f"{', '.join(sorted(set(single[single.model == b].dataset)))})"
            )
        datasets = sorted(shared)
    else:
        datasets = [dataset] if isinstance(dataset, str) else list(dataset)
    lines = []
    for ds in datasets:
        g = board[(board.dataset == ds) & (~board.ensemble.astype(bool))]
        ra, rb = (g[g.model == m] for m in (a, b))
        if ra.empty or rb.empty:
            missing = a if ra.empty else b
            raise ConfigError(
                f"no done runs of {missing!r} on {ds!r}; models there: {sorted(g.model.unique())}"
            )
        if len(ra) > 1 or len(rb) > 1:
            raise ConfigError(
                f"{a if len(ra) > 1 else b!r} has several configurations on {ds!r}; use "
                "--compare-all to test every row against every other"
            )
        ra, rb = ra.iloc[0], rb.iloc[0]
        (pa, runs_a), (pb, runs_b) = _outputs(df, ra), _outputs(df, rb)
        fn = metric_fn(ra["kind"], metric, ra["task"])
        diff, p = paired_bootstrap(pa, pb, fn, n_boot, seed)
        lines.append(
            f"{ds}: {metric}({a}) - {metric}({b}) = {diff:+.4f}; paired bootstrap over "
            f"{len(pa[0][0])} test samples ({n_boot} resamples, seed-mean): p = {p:.4f}"
        )
        common = sorted(set(runs_a.seed) & set(runs_b.seed))
        if wilcoxon_min_p(len(common)) >= 0.05:
            lines.append(
                f"{ds}: Wilcoxon over seeds not run: with {len(common)} shared seeds its "
                f"smallest possible p is {wilcoxon_min_p(len(common)):.3f} (needs >= 6 seeds)"
            )
        else:
            xa = runs_a.set_index("seed").loc[common, f"test_{metric}"]
            xb = runs_b.set_index("seed").loc[common, f"test_{metric}"]
            w = wilcoxon(xa, xb)
            lines.append(f"{ds}: Wilcoxon signed-rank over {len(common)} seeds: p = {w.pvalue:.4f}")
    return "\n".join(lines)


def compare_all(
    df: pd.DataFrame, board: pd.DataFrame, metric: str | None, n_boot: int, seed: int
) -> dict[str, pd.DataFrame]:
    """Per dataset, every pair of rows: metric difference (row - column) and its paired
    bootstrap p-value, Holm-adjusted over the dataset's pairs. Returns long tables.
    ``metric`` None: each dataset's default (test AUC; per-case test Dice for segmentation)."""
    varying = board.attrs.get("varying", [])
    out = {}
    for ds, g in board.groupby("dataset"):
        g = g[~g["ensemble"].astype(bool)]
        if len(g) < 2:
            continue
        labelled = [(row_label(r, varying), r) for _, r in g.iterrows()]
        outs = {label: _outputs(df, r)[0] for label, r in labelled}
        first = labelled[0][1]
        m = metric or default_metric(first["kind"])
        fn = metric_fn(first["kind"], m.removeprefix("test_"), first["task"])
        pairs = []
        for i, (la, _) in enumerate(labelled):
            for lb, _ in labelled[i + 1 :]:
                diff, p = paired_bootstrap(outs[la], outs[lb], fn, n_boot, seed)
                pairs.append({"a": la, "b": lb, "diff": diff, "p": p})
        table = pd.DataFrame(pairs)
        table["p_holm"] = holm(table["p"].to_numpy())
        table["significant"] = table["p_holm"] < 0.05
        out[ds] = table
    return out


def matrix_of(table: pd.DataFrame, value: str = "p_holm") -> pd.DataFrame:
    """A square matrix (rows x columns = labels) from a long pairwise table."""
    labels = list(dict.fromkeys([*table["a"], *table["b"]]))
    m = pd.DataFrame(index=labels, columns=labels, dtype=float)
    for _, r in table.iterrows():
        m.loc[r["a"], r["b"]] = r[value]
        m.loc[r["b"], r["a"]] = -r[value] if value == "diff" else r[value]
    return m


def rank_test(board: pd.DataFrame, metric: str) -> RankTest:
    """Friedman + Nemenyi over datasets, models as ``model-scheme`` labels (one row each)."""
    g = board[~board["ensemble"].astype(bool)]
    col = f"{metric}_mean"
    if col not in g:
        return RankTest(metric=metric, note=f"rank test not run: no {metric} in the leaderboard")
    g = g.assign(
        label=[
            str(m) + ("" if s == "scratch" else f"-{s}")
            for m, s in zip(g.model, g.scheme, strict=True)
        ]
    )
    dup = g.duplicated(["dataset", "label"])
    if dup.any():
        # several configurations of one model on a dataset: keep the best per dataset
        g = g.sort_values(col, ascending=lower_is_better(metric)).drop_duplicates(
            ["dataset", "label"]
        )
    matrix = g.pivot(index="dataset", columns="label", values=col)
    return friedman_nemenyi(matrix, metric, higher_is_better=not lower_is_better(metric))
