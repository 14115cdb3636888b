"""Leaderboards from run records: mean ± std over seeds, bootstrap CIs, cost, paper references.

bench-leaderboard --runs-dir runs                 # results/leaderboard.csv (+ .md) and a table
bench-leaderboard --runs-dir runs --name pneumonia --reference --publish
bench-leaderboard --runs-dir runs --compare resnet50 bccnn --dataset pneumoniamnist
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cli import exit_code_of
from bench.errors import ConfigError
from bench.io import atomic_write_text
from bench.metrics import CLASSIFICATION_METRICS
from bench.records import RunStore, cpu_name, git_sha, now_iso
from bench.stats import bootstrap_ci, metric_fn, paired_bootstrap, read_predictions

log = logging.getLogger(__name__)

GROUP_KEYS = ["dataset", "input_size", "model", "scheme", "epochs"]
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
DEFAULT_REFERENCE = Path(__file__).resolve().parent.parent / "results/reference/medmnist_v2.csv"


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per done run: keys, test_/val_ metrics, cost and environment columns."""
    rows = []
    for r in records:
        if r.get("status") != "done":
            continue
        spec = r.get("spec") or {}
        row = {
            "run_id": r["run_id"],
            "dataset": r.get("dataset"),
            "task": r.get("task"),
            "input_size": (spec.get("input_size") or [None])[0],
            "model": r.get("model"),
            "scheme": r.get("scheme", "scratch"),
            "epochs": r.get("epochs"),
            "seed": r.get("seed"),
            "precision": r.get("precision"),
            "_dir": r.get("_dir"),
        }
        for split in ("test", "val"):
            for k, v in (r.get(split) or {}).items():
                row[f"{split}_{k}"] = v
        cost = r.get("cost") or {}
        for src, dst in COST_COLUMNS.items():
            v = cost.get(src)
            row[dst] = v / 1e6 if (src == "params_total" and v is not None) else v
        env = r.get("env") or {}
        row.update({k: env.get(k) for k in ("torch", "device", "git_sha")})
        rows.append(row)
    return pd.DataFrame(rows)


def _join_unique(values: pd.Series) -> str:
    return ";".join(sorted({str(v) for v in values if v is not None and v == v}))


def _group_predictions(runs: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]] | None:
    out = []
    for d in runs["_dir"]:
        path = Path(d) / "predictions_test.csv"
        if not path.exists():
            return None
        _, y, s = read_predictions(str(path))
        out.append((y, s))
    if len({len(y) for y, _ in out}) != 1:
        return None
    return out


def aggregate(
    df: pd.DataFrame,
    metrics: list[str] | None = None,
    ci_metrics: list[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Collapse seeds: ``n_seeds``, ``<split>_<metric>_mean/_std`` (pandas, ddof=1), bootstrap
    ``_ci95_lo/_hi`` for ``ci_metrics`` (test split), mean cost, joined environment columns."""
    if df.empty:
        return pd.DataFrame()
    metric_cols = [c for c in df.columns if c.startswith(("test_", "val_"))]
    if metrics is not None:
        metric_cols = [c for c in metric_cols if c.split("_", 1)[1] in metrics]
    ci_metrics = CLASSIFICATION_METRICS if ci_metrics is None else ci_metrics
    rows = []
    for keys, g in df.groupby(GROUP_KEYS, dropna=False, sort=True):
        row = dict(zip(GROUP_KEYS, keys, strict=True))
        row["task"] = g["task"].iloc[0]
        row["n_seeds"] = int(g["seed"].nunique())
        for c in metric_cols:
            row[f"{c}_mean"] = g[c].mean()
            row[f"{c}_std"] = g[c].std()
        preds = _group_predictions(g) if ci_metrics and n_boot > 0 else None
        for m in ci_metrics if preds else []:
            if f"test_{m}" not in g:
                continue
            _, lo, hi = bootstrap_ci(preds, metric_fn(row["task"], m), n_boot, seed)
            row[f"test_{m}_ci95_lo"], row[f"test_{m}_ci95_hi"] = lo, hi
        for col in COST_COLUMNS.values():
            row[col] = g[col].mean() if col in g and g[col].notna().any() else None
        for col in ENV_COLUMNS:
            row[col] = _join_unique(g[col]) if col in g else ""
        row["run_ids"] = ";".join(g["run_id"])
        rows.append(row)
    return pd.DataFrame(rows)


def rank(board: pd.DataFrame, metric: str = "test_auc") -> pd.DataFrame:
    """Rank within each dataset by ``<metric>_mean`` (higher is better; ECE/Brier lower).

    ``rank`` counts the rows whose 95% CI lies entirely beyond this row's, plus one: rows whose
    intervals overlap the leader's share rank 1 (ties by CI overlap). Without CIs, plain order.
    """
    if board.empty:
        return board
    col = f"{metric}_mean"
    if col not in board:
        raise ConfigError(
            f"metric {metric!r} is not in the leaderboard; pick one of "
            f"{sorted(c[:-5] for c in board if c.endswith('_mean'))}"
        )
    lower_better = metric.endswith(("ece", "brier", "loss"))
    lo, hi = f"{metric}_ci95_lo", f"{metric}_ci95_hi"
    ranks = []
    for _, g in board.groupby("dataset", sort=False):
        for i, row in g.iterrows():
            if lo in g and hi in g and pd.notna(row.get(lo)):
                better = (g[hi] < row[lo]) if lower_better else (g[lo] > row[hi])
            else:
                better = (g[col] < row[col]) if lower_better else (g[col] > row[col])
            ranks.append((i, 1 + int(better.sum())))
    board = board.copy()
    board["rank"] = pd.Series(dict(ranks))
    return board.sort_values(["dataset", col], ascending=[True, lower_better]).reset_index(
        drop=True
    )


def add_reference(board: pd.DataFrame, ref_path: Path = DEFAULT_REFERENCE) -> pd.DataFrame:
    """Add ``ref_auc/ref_acc/delta_auc/delta_acc`` where the paper has the same dataset, input
    size and model."""
    ref = pd.read_csv(ref_path, comment="#")
    board = board.copy()
    flag = board["dataset"].str.replace(r"_\d+$", "", regex=True)
    keys = pd.DataFrame({"flag": flag, "size": board["input_size"], "model": board["model"]})
    merged = keys.merge(
        ref, how="left", left_on=["flag", "size", "model"], right_on=["dataset", "size", "model"]
    )
    board["ref_auc"] = merged["auc"].to_numpy()
    board["ref_acc"] = merged["acc"].to_numpy()
    board["delta_auc"] = board.get("test_auc_mean") - board["ref_auc"]
    board["delta_acc"] = board.get("test_acc_mean") - board["ref_acc"]
    return board


def _fmt(board: pd.DataFrame) -> pd.DataFrame:
    return board.drop(columns=["run_ids"], errors="ignore")


def to_markdown(board: pd.DataFrame, metrics=("auc", "acc", "f1")) -> str:
    """Compact Markdown table: mean ± std per metric, CI, cost."""
    lines = []
    cols = ["rank", "dataset", "input_size", "model", "scheme", "epochs", "n_seeds"]
    header = cols + [f"test {m}" for m in metrics] + ["AUC 95% CI", "params (M)", "GMACs"]
    if "ref_auc" in board:
        header += ["paper AUC", "Δ AUC"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for _, r in board.iterrows():
        cells = [str(r.get(c, "")) for c in cols]
        for m in metrics:
            mean, std = r.get(f"test_{m}_mean"), r.get(f"test_{m}_std")
            cells.append(
                ""
                if mean is None or mean != mean
                else f"{mean:.3f} ± {std:.3f}"
                if std == std
                else f"{mean:.3f}"
            )
        lo, hi = r.get("test_auc_ci95_lo"), r.get("test_auc_ci95_hi")
        cells.append(f"[{lo:.3f}, {hi:.3f}]" if lo is not None and lo == lo else "")
        cells.append(
            f"{r['param_count_m']:.2f}" if r.get("param_count_m") == r.get("param_count_m") else ""
        )
        cells.append(
            f"{r['gmacs']:.3f}"
            if r.get("gmacs") is not None and r.get("gmacs") == r.get("gmacs")
            else ""
        )
        if "ref_auc" in board:
            ref, d = r.get("ref_auc"), r.get("delta_auc")
            cells += [f"{ref:.3f}" if ref == ref else "", f"{d:+.3f}" if d == d else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(board: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``leaderboard.csv``, ``leaderboard.md`` and ``by_dataset/<dataset>.csv``, atomically."""
    written = []
    csv = _fmt(board).to_csv(index=False, float_format="%.6g")
    atomic_write_text(out_dir / "leaderboard.csv", csv)
    atomic_write_text(out_dir / "leaderboard.md", to_markdown(board))
    written += [out_dir / "leaderboard.csv", out_dir / "leaderboard.md"]
    for ds, g in board.groupby("dataset"):
        p = out_dir / "by_dataset" / f"{ds}.csv"
        atomic_write_text(p, _fmt(g).to_csv(index=False, float_format="%.6g"))
        written.append(p)
    return written


def write_provenance(
    out_dir: Path, argv: list[str], board: pd.DataFrame, recipe: str | None = None
) -> Path:
    """A README saying how the published tables were produced."""
    import torch

    text = [
        f"# {out_dir.name}",
        "",
        f"Produced {now_iso()} by `bench-leaderboard {' '.join(argv)}`.",
        "",
        *([f"Runs trained by: `{recipe}`", ""] if recipe else []),
        f"- commit(s) of the runs: {_join_unique(board['git_sha']) or 'unknown'}; "
        f"aggregated at commit {git_sha() or 'unknown'}",
        f"- hardware: {_join_unique(board['device'])} ({cpu_name()}, "
        f"{torch.get_num_threads()} threads); torch {_join_unique(board['torch'])}",
        f"- epochs: {_join_unique(board['epochs'])}; "
        f"seeds per row: {_join_unique(board['n_seeds'])}",
        "- CIs: percentile bootstrap over test samples, pooled over seeds (see bench/stats.py)",
        "",
        to_markdown(board),
    ]
    path = out_dir / "README.md"
    atomic_write_text(path, "\n".join(text))
    return path


def compare(
    df: pd.DataFrame, a: str, b: str, dataset: str | None, metric: str, n_boot: int, seed: int
) -> str:
    """Paired bootstrap of the metric difference, plus Wilcoxon over seeds where possible."""
    from scipy.stats import wilcoxon

    datasets = sorted(df["dataset"].unique()) if dataset is None else [dataset]
    lines = []
    for ds in datasets:
        ga, gb = (df[(df.dataset == ds) & (df.model == m)].sort_values("seed") for m in (a, b))
        if ga.empty or gb.empty:
            missing = a if ga.empty else b
            raise ConfigError(
                f"no done runs of {missing!r} on {ds!r}; models there: "
                f"{sorted(df[df.dataset == ds].model.unique())}"
            )
        pa, pb = _group_predictions(ga), _group_predictions(gb)
        task = ga["task"].iloc[0]
        if pa is None or pb is None:
            raise ConfigError(f"predictions_test.csv missing for some runs on {ds!r}; rerun them")
        diff, p = paired_bootstrap(pa, pb, metric_fn(task, metric), n_boot, seed)
        lines.append(
            f"{ds}: {metric}({a}) - {metric}({b}) = {diff:+.4f}; paired bootstrap over "
            f"{len(pa[0][0])} test samples ({n_boot} resamples, seed-mean): p = {p:.4f}"
        )
        common = sorted(set(ga.seed) & set(gb.seed))
        if len(common) >= 2:
            xa = ga.set_index("seed").loc[common, f"test_{metric}"]
            xb = gb.set_index("seed").loc[common, f"test_{metric}"]
            try:
                w = wilcoxon(xa, xb)
                lines.append(
                    f"{ds}: Wilcoxon signed-rank over {len(common)} seeds: p = {w.pvalue:.4f}"
                )
            except ValueError as e:
                lines.append(f"{ds}: Wilcoxon over seeds not computable ({e})")
    return "\n".join(lines)


def log_to_wandb(board: pd.DataFrame, group: str | None, project: str = "medbench") -> None:
    """Log the leaderboard as a ``wandb.Table`` in an ``aggregate`` run of the sweep's group."""
    import wandb

    from bench.tracking import resolve_wandb_mode

    run = wandb.init(
        project=project,
        group=group,
        job_type="aggregate",
        name=f"leaderboard-{group or 'all'}",
        mode=resolve_wandb_mode("auto"),
    )
    try:
        table = _fmt(board).astype(object).where(board.notna(), None)
        run.log({"leaderboard": wandb.Table(dataframe=table)})
    finally:
        wandb.finish()


def build(
    runs_dir: str,
    metric: str = "test_auc",
    reference: bool = False,
    n_boot: int = 1000,
    ci_metrics: list[str] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    records, problems = RunStore(runs_dir).iter_records()
    df = records_frame(records)
    if df.empty:
        return pd.DataFrame(), problems
    board = rank(aggregate(df, ci_metrics=ci_metrics, n_boot=n_boot, seed=seed), metric)
    if reference:
        board = add_reference(board)
    return board, problems


PRINT_COLUMNS = [
    "rank",
    "dataset",
    "model",
    "scheme",
    "epochs",
    "n_seeds",
    "test_auc_mean",
    "test_auc_std",
    "test_acc_mean",
    "test_acc_std",
    "test_dice_mean",
    "param_count_m",
    "train_time_s",
    "ref_auc",
    "delta_auc",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench-leaderboard", description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", default="runs", help="run store to read (default: runs)")
    p.add_argument("--out", default=None, help="output folder (default: results/ or results/NAME)")
    p.add_argument("--name", default=None, help="study name: writes results/NAME/")
    p.add_argument("--metric", default="test_auc", help="ranking metric (default test_auc)")
    p.add_argument("--reference", action="store_true", help="add MedMNIST v2 paper deltas")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0: no CIs)")
    p.add_argument(
        "--ci-metrics",
        default="auc,acc",
        help="comma list of test metrics to bootstrap, or 'all' (default auc,acc)",
    )
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="paired test of two models")
    p.add_argument("--dataset", default=None, help="dataset for --compare (default: all shared)")
    p.add_argument("--publish", action="store_true", help="write a provenance README too")
    p.add_argument(
        "--recipe", default=None, help="with --publish: the command that trained the runs"
    )
    p.add_argument("--wandb", action="store_true", help="log the table to a W&B aggregate run")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = p.parse_args(argv)
    return exit_code_of(lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The command body of bench-leaderboard (errors are reported by :func:`main`)."""
    ci = (
        list(CLASSIFICATION_METRICS)
        if args.ci_metrics == "all"
        else [m for m in args.ci_metrics.split(",") if m]
    )
    unknown = [m for m in ci if m not in CLASSIFICATION_METRICS]
    if unknown:
        raise ConfigError(f"--ci-metrics: unknown {unknown}; valid: {CLASSIFICATION_METRICS}")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        raise ConfigError(
            f"--name {args.name!r} must be a plain folder name (letters, digits, _ . -); "
            "use --out for another location"
        )
    if args.compare:
        records, _ = RunStore(args.runs_dir).iter_records()
        print(
            compare(
                records_frame(records),
                *args.compare,
                args.dataset,
                args.metric.removeprefix("test_"),
                args.n_boot or 1000,
                args.seed,
            )
        )
        return 0
    board, problems = build(args.runs_dir, args.metric, args.reference, args.n_boot, ci, args.seed)
    for line in problems:
        print(f"warning: skipped unreadable record {line}", file=sys.stderr)
    if board.empty:
        print(f"no finished runs in {args.runs_dir}; run bench-train first", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path("results") / (args.name or "")
    written = write_outputs(board, out)
    if args.publish:
        written.append(
            write_provenance(out, sys.argv[1:] if argv is None else argv, board, args.recipe)
        )
    if args.wandb:
        groups = {
            json.loads((Path(d) / "record.json").read_text()).get("sweep_group")
            for d in board["run_ids"]
            .str.split(";")
            .explode()
            .map(lambda r: str(Path(args.runs_dir) / r))
        }
        log_to_wandb(board, groups.pop() if len(groups) == 1 else None)
    cols = [c for c in PRINT_COLUMNS if c in board and board[c].notna().any()]
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format
    ):
        print(board[cols].to_string(index=False))
    print(f"wrote {written[0]} ({len(board)} rows)")
    return 0


def cli() -> None:
    sys.exit(main())
