"""The report's overview sections about evaluation: ROC, calibration and risk-coverage curves of
every seed, confusion matrices, robustness, segmentation cases, Optuna studies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from bench.board import Board
from bench.confidence.calibration import confidence_and_correct, reliability_bins
from bench.confidence.selective import aurc, risk_coverage
from bench.metrics import dice_iou_from_overlaps
from bench.records import RunRecord
from bench.report import analysis, kit, readers
from bench.report.kit import Page


def seed_curves_section(board: Board, page: Page, kind: str) -> str:
    """ROC, reliability or risk-coverage curves of every run (every seed), one trace each."""
    parts = []
    for ds, g in readers.classification_runs(board).groupby("dataset"):
        names = analysis.row_labels(board, list(g["config_id"].unique()))
        fig = go.Figure()
        for _, r in g.sort_values(["config_id", "seed"]).iterrows():
            _, y, s = readers.predictions(r["_dir"])
            label = f"{names[r['config_id']]} s{r['seed']}"
            if kind == "roc":
                fpr, tpr = analysis.roc(y, s, r["task"])
                fig.add_trace(go.Scatter(x=fpr, y=tpr, name=label, mode="lines"))
            elif kind == "calibration":
                bins = reliability_bins(*confidence_and_correct(y, s, r["task"]))
                if bins:
                    conf, acc, _ = map(np.array, zip(*bins, strict=True))
                    fig.add_trace(go.Scatter(x=conf, y=acc, name=label, mode="lines+markers"))
            else:
                conf, correct = confidence_and_correct(y, s, r["task"])
                cov, risk = risk_coverage(conf, correct)
                fig.add_trace(
                    go.Scatter(x=cov, y=risk, name=f"{label} (AURC {aurc(conf, correct):.3f})")
                )
        axes = {
            "roc": ("false positive rate", "true positive rate", True),
            "calibration": ("confidence", "accuracy", True),
            "selective": ("coverage (cases kept)", "risk (error rate)", False),
        }[kind]
        if axes[2]:
            fig.add_trace(
                go.Scatter(
                    x=[0, 1],
                    y=[0, 1],
                    mode="lines",
                    name="chance / perfect",
                    line={"dash": "dot", "color": "#999"},
                )
            )
        fig.update_layout(xaxis_title=axes[0], yaxis_title=axes[1])
        parts.append(kit.per_dataset(ds, page.plot(fig, 380)))
    return "".join(parts)


def confusion_section(board: Board, page: Page) -> str:
    """Confusion matrix per row, summed over its seeds (every seed counts)."""
    parts = []
    for ds, g in readers.classification_runs(board).groupby("dataset"):
        names = analysis.row_labels(board, list(g["config_id"].unique()))
        cells = []
        for cid, rows in g.groupby("config_id"):
            total, labels = None, None
            for _, r in rows.iterrows():
                _, y, s = readers.predictions(r["_dir"])
                cm = analysis.confusion(y, s, r["task"])
                if cm is None:
                    continue
                total = cm if total is None else total + cm
                rec = board.records.get(r["run_id"])
                labels = list((rec.spec or {}).get("label_names") or []) if rec else []
            if total is None:
                continue
            fig = analysis.confusion_figure(total, labels, f"{names[cid]} ({len(rows)} seed(s))")
            cells.append(page.plot(fig, 330))
        if cells:
            parts.append(kit.per_dataset(ds, "".join(cells)))
    return "".join(parts)


def robustness_section(records: list[RunRecord], page: Page) -> str:
    """Accuracy vs corruption severity per model (mean over corruptions and seeds)."""
    rows = []
    for r in records:
        rob = (r.evaluations or {}).get("robustness")
        if not rob:
            continue
        rows.append(
            {
                "dataset": r.dataset,
                "model": r.model,
                "severity": 0,
                "acc": rob.get("clean", {}).get("acc"),
            }
        )
        for sev in rob.get("corruptions", {}).values():
            for level, m in sev.items():
                rows.append(
                    {
                        "dataset": r.dataset,
                        "model": r.model,
                        "severity": int(level),
                        "acc": m.get("acc"),
                    }
                )
    if not rows:
        return ""
    df = pd.DataFrame(rows)
    parts = []
    for ds, g in df.groupby("dataset"):
        fig = go.Figure()
        for model, m in g.groupby("model"):
            curve = m.groupby("severity")["acc"].mean()
            fig.add_trace(go.Scatter(x=curve.index, y=curve.values, name=str(model)))
        fig.update_layout(
            xaxis_title="severity (0 = clean)",
            xaxis_dtick=1,
            yaxis_title="accuracy (mean over corruptions)",
        )
        parts.append(kit.per_dataset(ds, page.plot(fig, 340)))
    return "".join(parts)


def cases_section(board: Board, page: Page) -> str:
    """Segmentation: per-case Dice per row (every seed's cases), and each row's best and worst
    test case as image | truth | prediction overlays."""
    runs = board.runs[board.runs["kind"] == "segmentation"]
    parts = []
    for ds, g in runs.groupby("dataset"):
        names = analysis.row_labels(board, list(g["config_id"].unique()))
        fig = go.Figure()
        for cid, rows in g.groupby("config_id"):
            values = []
            for d in rows["_dir"]:
                counts = readers.overlaps(d)
                if counts is None:
                    continue
                dice, _ = dice_iou_from_overlaps(torch.as_tensor(counts))
                case = dice.nanmean(1).numpy()
                values += case[~np.isnan(case)].tolist()
            if values:
                fig.add_trace(go.Box(y=values, name=names[cid], boxpoints="all"))
        if fig.data:
            fig.update_layout(yaxis_title="per-case Dice")
            parts.append(kit.per_dataset(ds, page.plot(fig, 340)))
        overlays = [
            case_overlays(names[cid], rows) for cid, rows in g.groupby("config_id", sort=False)
        ]
        overlays = [o for o in overlays if o]
        if overlays:
            parts.append(kit.per_dataset(ds, kit.render("overlays.html.j2", overlays=overlays)))
    return "".join(parts)


def case_overlays(label: str, rows: pd.DataFrame) -> str:
    """A figure of the row's best and worst test case (image | truth | prediction), or ''."""
    for seed, d in zip(rows["seed"], rows["_dir"], strict=True):
        cases = readers.saved_cases(d)
        if cases is not None:
            data = analysis.overlay_png(cases)
            return kit.png(data, f"{label} best and worst test cases", f"{label} · seed {seed}")
    return ""


def search_section(records: list[RunRecord], page: Page) -> str:
    """Optuna studies: objective per trial (best so far), parallel coordinates of the searched
    values, and their importances when the study has at least 10 finished trials."""
    parts = []
    for name, trials in analysis.search_frame(records).items():
        objective = next(c for c in trials if c.startswith("val_"))
        params = [c for c in trials if c not in ("trial", "status", objective, "run_id")]
        done = trials[trials[objective].notna()]
        fig = go.Figure(
            [
                go.Scatter(
                    x=done["trial"],
                    y=done[objective],
                    mode="markers",
                    name="trial",
                    text=done["run_id"],
                ),
                go.Scatter(
                    x=done["trial"],
                    y=done[objective].cummax(),
                    mode="lines",
                    name="best so far",
                    line={"shape": "hv"},
                ),
            ]
        )
        fig.update_layout(
            title=f"study {name}: {objective} per trial", xaxis_title="trial", yaxis_title=objective
        )
        body = page.plot(fig, 320)
        dims = []
        for p in [*params, objective]:
            col = done[p]
            if col.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
                dims.append({"label": p, "values": col.astype(float).tolist()})
            else:
                codes, names = pd.factorize(col.astype(str))
                dims.append(
                    {
                        "label": p,
                        "values": codes.tolist(),
                        "tickvals": list(range(len(names))),
                        "ticktext": list(names),
                    }
                )
        if len(dims) >= 2 and len(done) >= 2:
            par = go.Figure(
                go.Parcoords(
                    dimensions=dims,
                    line={
                        "color": done[objective].astype(float).tolist(),
                        "colorscale": "Viridis",
                        "showscale": True,
                    },
                )
            )
            par.update_layout(title="searched values (lines coloured by the objective)")
            body += page.plot(par, 380)
        if len(done) >= 10 and params:
            try:
                imp = analysis.param_importances(trials, objective, params)
                bar = go.Figure(go.Bar(x=list(imp.values()), y=list(imp), orientation="h"))
                bar.update_layout(
                    title="parameter importance (Optuna fANOVA)", xaxis_title="importance"
                )
                body += page.plot(bar, 260)
            except Exception as e:  # importance needs variance: say why it is missing
                body += kit.note(f"parameter importance not computed: {type(e).__name__}: {e}")
        else:
            body += kit.note(f"parameter importance needs >= 10 finished trials ({len(done)} here)")
        links = {"run_id": [kit.run_anchor(r) for r in trials["run_id"]]}
        body += kit.table(trials, left=("status", "run_id"), links=links)
        parts.append(kit.heading(name, body))
    return "".join(parts)
