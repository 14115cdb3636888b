"""One page per run (an anchor of the report): what the run is, how it differs from the other
runs of its row and from the leader, what it measured (curves, per-class table, confusion
matrix, ROC, reliability, robustness, Grad-CAM) and its config."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bench.board import Board
from bench.confidence.calibration import confidence_and_correct, reliability_bins
from bench.records import RunFiles, RunRecord, flatten
from bench.report import analysis, kit, readers
from bench.report.kit import Page


def _files(run_dir: Path | None) -> list[tuple[str, Path | None, bool]]:
    files = RunFiles(run_dir) if run_dir else None
    paths = {
        "record": files.record if files else None,
        "predictions": files.predictions("test") if files else None,
        "history": files.history if files else None,
        "checkpoint": files.best if files else None,
    }
    return [(k, p, bool(p and p.exists())) for k, p in paths.items()]


def _metrics(r: RunRecord) -> str:
    splits = (("val", r.val), ("test", r.test), ("test@last", r.test_last))
    metrics = pd.DataFrame([{"split": k, **v} for k, v in splits if v])
    return "" if metrics.empty else kit.heading("Metrics", kit.table(metrics, left=("split",)))


def _differences(r: RunRecord, board: Board) -> str:
    peers = [
        o for o in board.records.values() if o.config_id == r.config_id and o.run_id != r.run_id
    ]
    diff = analysis.config_diff(r, peers)
    out = kit.heading(
        "Difference from the other runs of its row",
        kit.table(diff, left=("key",)) if not diff.empty else kit.note("no other run in this row"),
    )
    leader = analysis.row_leader(board, r)
    if leader is not None and leader.config_id != r.config_id:
        out += kit.render(
            "leader_diff.html.j2",
            dataset=r.dataset,
            anchor=kit.run_anchor(leader.run_id),
            leader=leader.run_id,
            table=kit.table(analysis.config_diff(r, [leader]), left=("key",)),
        )
    return out


def _curves(run_dir: Path | None, page: Page) -> str:
    h = readers.history(run_dir)
    if h is None:
        return ""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation metric"))
    for col in ("train_loss", "val_loss"):
        if col in h:
            fig.add_trace(go.Scatter(x=h["epoch"] + 1, y=h[col], name=col), 1, 1)
    for col in [c for c in h if c in ("val_auc", "val_acc", "val_dice", "val_iou")]:
        fig.add_trace(go.Scatter(x=h["epoch"] + 1, y=h[col], name=col), 1, 2)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(h) <= 12 else None)
    return kit.heading("Learning curves", page.plot(fig, 320))


def _predictions(r: RunRecord, run_dir: Path | None, page: Page) -> str:
    pred = readers.predictions(run_dir) if r.kind == "classification" else None
    if pred is None:
        return ""
    _, y, s = pred
    labels = list((r.spec or {}).get("label_names") or [])
    cm = analysis.confusion(y, s, r.task)
    plots = []
    if cm is not None:
        fig = analysis.confusion_figure(cm, labels, "confusion matrix (test)")
        plots.append(page.plot(fig, 330))
    fpr, tpr = analysis.roc(y, s, r.task)
    fig = go.Figure(
        [
            go.Scatter(x=fpr, y=tpr, name="ROC"),
            go.Scatter(x=[0, 1], y=[0, 1], name="chance", line={"dash": "dot"}),
        ]
    )
    fig.update_layout(
        title="ROC (test)", xaxis_title="false positive rate", yaxis_title="true positive rate"
    )
    plots.append(page.plot(fig, 330))
    bins = reliability_bins(*confidence_and_correct(y, s, r.task))
    if bins:
        conf, acc, count = map(np.array, zip(*bins, strict=True))
        fig = go.Figure(
            [
                go.Bar(
                    x=conf,
                    y=acc,
                    name="accuracy",
                    width=0.05,
                    text=count,
                    hovertemplate="conf %{x:.2f}: acc %{y:.2f} (%{text})",
                ),
                go.Scatter(x=[0, 1], y=[0, 1], name="perfect", line={"dash": "dot"}),
            ]
        )
        fig.update_layout(
            title="reliability (test)", xaxis_title="confidence", yaxis_title="accuracy"
        )
        plots.append(page.plot(fig, 330))
    return kit.heading("Predictions", "".join(plots))


def _robustness(r: RunRecord, page: Page) -> str:
    rob = (r.evaluations or {}).get("robustness")
    if not rob or not rob.get("corruptions"):
        return ""
    names = sorted(rob["corruptions"])
    sevs = sorted({int(k) for v in rob["corruptions"].values() for k in v})
    z = [[rob["corruptions"][n].get(str(s), {}).get("balanced_error") for s in sevs] for n in names]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(s) for s in sevs],
            y=names,
            colorscale="Reds",
            colorbar={"title": "balanced error"},
        )
    )
    fig.update_layout(
        title=f"robustness ({rob.get('set', 'MedMNIST-C')}; clean "
        f"{rob['clean']['balanced_error']:.3f})",
        xaxis_title="severity",
    )
    return kit.heading("Robustness", page.plot(fig, 420))


def run_page(record: RunRecord, board: Board, page: Page) -> str:
    """One run's page (an anchor): what it is, how it differs, what it measured."""
    r = record
    run_dir = Path(r.dir) if r.dir else None
    blocks = [_metrics(r), _differences(r, board), _curves(run_dir, page)]
    if r.per_class.get("test"):
        per_class = pd.DataFrame(r.per_class["test"])
        blocks.append(kit.heading("Per class (test)", kit.table(per_class, left=("class",))))
    blocks += [_predictions(r, run_dir, page), _robustness(r, page)]
    for png in readers.explain_maps(run_dir):
        data = base64.b64encode(png.read_bytes()).decode()
        blocks.append(kit.heading("Grad-CAM", kit.png(data, "Grad-CAM")))
    config = pd.DataFrame(sorted(flatten(r.config).items()), columns=["key", "value"])
    blocks.append(kit.heading("Config", kit.table(config, left=("key", "value"))))
    return kit.render(
        "run_page.html.j2",
        r=r,
        anchor=kit.run_anchor(r.run_id),
        best_epoch=None if r.best_epoch is None else r.best_epoch + 1,
        files=_files(run_dir),
        blocks=[kit.Markup(b) for b in blocks if b],
    )


def not_drawn_page(record: RunRecord, error: Exception) -> str:
    """The page of a run whose page could not be drawn: its id and why."""
    return kit.render(
        "run_page_failed.html.j2",
        anchor=kit.run_anchor(record.run_id),
        run_id=record.run_id,
        why=f"not drawn: {type(error).__name__}: {error}",
    )
