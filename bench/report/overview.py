"""The report's overview sections about ranking: across data sets, the leaderboard, learning
curves, accuracy vs cost, per-run spread, data efficiency, cross-validation folds, the runs."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bench.board import Board
from bench.board.compare import rank_test
from bench.board.frame import default_metric
from bench.records import RunRecord
from bench.report import analysis, kit, readers
from bench.report.kit import Page
from bench.stats import cd_diagram


def cross_dataset_section(board: Board) -> str:
    """Mean ranks and the critical-difference diagram, when >= 2 datasets share >= 3 models."""
    test = rank_test(board.table, "test_auc")
    if not test.ran:
        return ""
    ranks = test.ranks.rename("mean rank").reset_index().rename(columns={"label": "model"})
    with tempfile.TemporaryDirectory() as tmp:
        path = cd_diagram(test, Path(tmp) / "cd.png")
        data = base64.b64encode(path.read_bytes()).decode() if path else ""
    img = kit.png(data, "critical difference diagram")
    return kit.note(test.note) + kit.table(ranks, left=("model",)) + (img if data else "")


def leaderboard_section(board: Board) -> str:
    table = board.table
    varying = table.attrs.get("varying", [])
    first_run = {
        cid: g.sort_values("seed")["run_id"].iloc[0] for cid, g in board.runs.groupby("config_id")
    }
    parts = []
    for ds, g in table.groupby("dataset"):
        metric = (
            g["rank_by"].dropna().iloc[0]
            if g["rank_by"].notna().any()
            else default_metric(g["kind"].iloc[0])
        )
        show = pd.DataFrame({"rank": g["rank"], "model": g["model"], "scheme": g["scheme"]})
        for k in varying:
            if k in g and g[k].notna().any():
                show[k] = g[k]
        show["epochs"] = g["epochs"]
        show["runs"] = g["n_runs"]
        extra = (
            ("test_iou", "test_dice_pooled")
            if metric == "test_dice"
            else ("test_acc", "test_f1", "test_ece", "test_ece_ts", "test_aurc")
        )
        for m in (metric, *extra):
            if f"{m}_mean" in g and g[f"{m}_mean"].notna().any():
                std = g.get(f"{m}_std", pd.Series(np.nan, index=g.index))
                show[m.removeprefix("test_") + " (mean ± std)"] = [
                    "" if a != a else f"{a:.4f}" + ("" if b != b else f" ± {b:.4f}")
                    for a, b in zip(g[f"{m}_mean"], std, strict=True)
                ]
        if f"{metric}_ci95_lo" in g:
            show["95% CI"] = [
                f"[{lo:.3f}, {hi:.3f}]" if lo == lo else ""
                for lo, hi in zip(g[f"{metric}_ci95_lo"], g[f"{metric}_ci95_hi"], strict=True)
            ]
        show["params (M)"] = g["param_count_m"].astype(float).round(2)
        show["train min/run"] = (g["train_time_s"].astype(float) / 60).round(2)
        anchors = [
            None if e else kit.run_anchor(first_run[c])
            for c, e in zip(g["config_id"], g["ensemble"].astype(bool), strict=True)
        ]
        attrs = [{"dataset": ds, "model": m} for m in g["model"]]
        parts.append(
            kit.per_dataset(
                ds,
                kit.table(
                    show, left=("model", "scheme"), row_attrs=attrs, links={"model": anchors}
                ),
                aside=f"ranked by {metric}; the model opens its first run",
            )
        )
    return "".join(parts)


def curves_section(board: Board, page: Page) -> str:
    parts = []
    for ds, g in board.runs.groupby("dataset"):
        names = analysis.row_labels(board, list(g["config_id"].unique()))
        fig = make_subplots(rows=1, cols=2, subplot_titles=("train loss", "validation metric"))
        drawn = False
        for i, (_, r) in enumerate(g.iterrows()):
            h = readers.history(r["_dir"])
            if h is None:
                continue
            label = f"{names[r['config_id']]} s{r['seed']}"
            epoch = h["epoch"] + 1
            # one colour per run in both panels; clicking its legend entry hides both curves
            line = {"color": kit.PALETTE[i % len(kit.PALETTE)]}
            if "train_loss" in h:
                fig.add_trace(
                    go.Scatter(
                        x=epoch, y=h["train_loss"], name=label, legendgroup=label, line=line
                    ),
                    1,
                    1,
                )
            metric = "val_auc" if "val_auc" in h else "val_dice" if "val_dice" in h else None
            if metric:
                fig.add_trace(
                    go.Scatter(
                        x=epoch,
                        y=h[metric],
                        name=label,
                        legendgroup=label,
                        showlegend="train_loss" not in h,
                        line=line,
                    ),
                    1,
                    2,
                )
                fig.update_yaxes(title_text=metric, row=1, col=2)
            drawn = True
        if drawn:
            fig.update_xaxes(title_text="epoch", dtick=1 if len(epoch) <= 12 else None)
            parts.append(kit.per_dataset(ds, page.plot(fig)))
    return "".join(parts)


def cost_section(board: Board, page: Page) -> str:
    parts = []
    for ds, g in board.table.groupby("dataset"):
        metric = f"{default_metric(g['kind'].iloc[0])}_mean"
        if metric not in g or g[metric].isna().all():
            continue
        g = g.assign(train_min=g["train_time_s"].astype(float) / 60)
        labels = dict(
            zip(g.index, analysis.labels(g, board.table.attrs.get("varying", [])), strict=True)
        )
        fig = make_subplots(
            rows=1,
            cols=3,
            subplot_titles=("params (M)", "GMACs", "train min/run"),
            horizontal_spacing=0.08,
        )
        for col_i, col in enumerate(("param_count_m", "gmacs", "train_min"), start=1):
            d = g[[col, metric]].dropna()
            d = d[d[col].astype(float) > 0]
            if d.empty:
                continue
            front = analysis.pareto_front(d[col].to_numpy(float), d[metric].to_numpy(float))
            fig.add_trace(
                go.Scatter(
                    x=d[col].astype(float),
                    y=d[metric],
                    mode="markers",
                    marker={"color": np.where(front, "#d62728", "#1f77b4"), "size": 10},
                    text=[labels[i] for i in d.index],
                    hovertemplate="%{text}<br>%{x:.3g}, %{y:.4f}<extra></extra>",
                    showlegend=False,
                ),
                1,
                col_i,
            )
            pf = d[front].sort_values(col)
            fig.add_trace(
                go.Scatter(
                    x=pf[col].astype(float),
                    y=pf[metric],
                    mode="lines",
                    line={"dash": "dash", "color": "#d62728"},
                    name="Pareto front",
                    showlegend=col_i == 1,
                ),
                1,
                col_i,
            )
            fig.update_xaxes(type="log", row=1, col=col_i)
        fig.update_yaxes(title_text=metric.removesuffix("_mean"), row=1, col=1)
        parts.append(kit.per_dataset(ds, page.plot(fig)))
    return "".join(parts)


def spread_section(board: Board, page: Page) -> str:
    parts = []
    for ds, g in board.runs.groupby("dataset"):
        metric = default_metric(g["kind"].iloc[0])
        if metric not in g or g[metric].isna().all():
            continue
        names = analysis.row_labels(board, sorted(g["config_id"].unique()))
        fig = go.Figure()
        for cid, rows in g.groupby("config_id"):
            fig.add_trace(
                go.Box(
                    y=rows[metric].astype(float),
                    name=names[cid],
                    boxpoints="all",
                    text=[f"seed {s}" for s in rows["seed"]],
                )
            )
        fig.update_layout(yaxis_title=metric, title="per-run spread (seeds, folds)")
        parts.append(kit.per_dataset(ds, page.plot(fig, 320)))
    return "".join(parts)


def fraction_section(board: Board, page: Page) -> str:
    """Metric vs training fraction per model, with the 95% CI as a band (data efficiency)."""
    table = board.table
    if "data.fraction" not in table:
        return ""
    parts = []
    for ds, g in table.groupby("dataset"):
        metric = default_metric(g["kind"].iloc[0])
        g = g[~g["ensemble"].astype(bool)].copy()
        g["fraction"] = [1.0 if v is None or v != v else float(v) for v in g["data.fraction"]]
        if g["fraction"].nunique() < 2:
            continue
        fig = go.Figure()
        for i, (model, m) in enumerate(g.groupby("model")):
            m = m.sort_values("fraction")
            color = kit.PALETTE[i % len(kit.PALETTE)]
            if f"{metric}_ci95_lo" in m:
                band = pd.concat([m["fraction"], m["fraction"][::-1]])
                edge = pd.concat([m[f"{metric}_ci95_hi"], m[f"{metric}_ci95_lo"][::-1]])
                fig.add_trace(
                    go.Scatter(
                        x=band,
                        y=edge.astype(float),
                        fill="toself",
                        opacity=0.2,
                        line={"width": 0, "color": color},
                        legendgroup=str(model),
                        showlegend=False,
                        hoverinfo="skip",
                    )
                )
            fig.add_trace(
                go.Scatter(
                    x=m["fraction"],
                    y=m[f"{metric}_mean"],
                    name=str(model),
                    legendgroup=str(model),
                    line={"color": color},
                )
            )
        fig.update_layout(
            xaxis_type="log",
            xaxis_title="fraction of the training split",
            yaxis_title=metric,
            title="data efficiency (band: 95% CI)",
        )
        parts.append(kit.per_dataset(ds, page.plot(fig, 340)))
    return "".join(parts)


def cv_section(board: Board) -> str:
    """Per-fold results of cross-validation rows."""
    runs = board.runs
    if "fold" not in runs or runs["fold"].isna().all():
        return ""
    parts = []
    for _, g in runs[runs["fold"].notna()].groupby("config_id"):
        metric = default_metric(g["kind"].iloc[0])
        show = pd.DataFrame(
            {
                "fold": g["fold"].astype(int),
                "seed": g["seed"],
                f"val {metric}": [
                    board.records[r].val.get(metric.removeprefix("test_")) for r in g["run_id"]
                ],
                metric: g[metric],
                "run": g["run_id"],
            }
        ).sort_values("fold")
        links = [kit.run_anchor(r) for r in show["run"]]
        attrs = [{"dataset": ds} for ds in g["dataset"]]
        parts.append(
            kit.heading(
                f"{g['dataset'].iloc[0]} · {g['model'].iloc[0]}",
                kit.table(show, left=("run",), row_attrs=attrs, links={"run": links}),
            )
        )
    return "".join(parts)


def runs_table(records: list[RunRecord]) -> str:
    rows, attrs = [], []
    for r in sorted(records, key=lambda r: (str(r.dataset), str(r.model), str(r.seed))):
        rows.append(
            {
                "status": r.status,
                "run_id": r.run_id,
                "dataset": r.dataset,
                "model": r.model,
                "seed": r.seed,
                "test auc/dice": r.test.get("auc", r.test.get("dice")),
                "train min": None
                if r.cost.train_time_s is None
                else round(r.cost.train_time_s / 60, 2),
                "error": r.error or "",
            }
        )
        attrs.append({"dataset": r.dataset, "model": r.model})
    df = pd.DataFrame(rows)
    return kit.table(
        df,
        left=("status", "run_id", "dataset", "model", "error"),
        row_class="status",
        row_attrs=attrs,
        links={"run_id": [kit.run_anchor(r) for r in df["run_id"]]},
    )
