"""What the report computes from runs (no HTML): Pareto fronts, row labels, ROC and confusion
matrices, config differences, the row leader, Optuna trials and their fANOVA importances, and
segmentation case overlays."""

from __future__ import annotations

import base64
import json
import tempfile

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from bench.board import Board
from bench.records import RunRecord, canonical, flatten


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Points no other point beats on both lower cost and higher score."""
    keep = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (
            (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        )
        keep[i] = not dominated.any()
    return keep


def labels(g: pd.DataFrame, varying: list[str]) -> list[str]:
    """Row names: the model plus the config values that vary between rows."""
    out = []
    for _, r in g.iterrows():
        extra = [
            f"{k.split('.')[-1]}={r[k]}"
            for k in varying
            if k in r and r[k] is not None and r[k] == r[k]
        ]
        name = str(r["model"]) + (" (ens)" if r.get("ensemble") else "")
        out.append(name + (f" [{', '.join(extra)}]" if extra else ""))
    return out


def row_labels(board: Board, config_ids: list[str]) -> dict[str, str]:
    """Labels of leaderboard rows as the table names them (model plus the config values that
    vary between rows), so two rows of one model never look identical."""
    table = board.table
    rows = table[~table["ensemble"].astype(bool)] if "ensemble" in table else table
    rows = rows[rows["config_id"].isin(config_ids)].drop_duplicates("config_id")
    names = dict(zip(rows["config_id"], labels(rows, table.attrs.get("varying", [])), strict=True))
    return {k: names.get(k, k) for k in config_ids}


def roc(y, s, task):
    """(false positive rate, true positive rate) of the test scores (micro one-vs-rest for
    several classes)."""
    from sklearn.metrics import roc_curve

    if y.ndim == 2:
        return roc_curve(y.ravel(), s.ravel())[:2]
    if task == "binary-class":
        return roc_curve(y, s[:, -1])[:2]
    return roc_curve(np.eye(s.shape[1])[y].ravel(), s.ravel())[:2]  # micro one-vs-rest


def confusion(y, s, task) -> np.ndarray | None:
    """The confusion matrix (true rows, predicted columns); None for multi-label."""
    from sklearn.metrics import confusion_matrix

    if y.ndim == 2:
        return None
    pred = (s[:, -1] > 0.5).astype(int) if task == "binary-class" else s.argmax(1)
    return confusion_matrix(y, pred, labels=list(range(s.shape[1])))


def confusion_figure(cm: np.ndarray, labels: list[str], title: str) -> go.Figure:
    """A confusion-matrix heat map with counts in the cells (true rows, predicted columns)."""
    labels = labels or [str(i) for i in range(len(cm))]
    fig = go.Figure(
        go.Heatmap(
            z=cm,
            x=labels,
            y=labels,
            colorscale="Blues",
            text=cm,
            texttemplate="%{text}",
            showscale=False,
        )
    )
    fig.update_layout(
        title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed"
    )
    return fig


def config_diff(record: RunRecord, others: list[RunRecord]) -> pd.DataFrame:
    """The config keys where ``record`` differs from each of ``others`` (paths aside)."""
    mine = flatten(canonical(record.config))
    rows = []
    for other in others:
        theirs = flatten(canonical(other.config))
        for key in sorted(set(mine) | set(theirs)):
            if key.startswith(("paths.", "hydra.")) or mine.get(key) == theirs.get(key):
                continue
            rows.append({"key": key, "this run": mine.get(key), other.run_id: theirs.get(key)})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby("key", as_index=False).first()


def row_leader(board: Board, record: RunRecord) -> RunRecord | None:
    """The first run of the rank-1 row on the record's dataset."""
    if board.empty:
        return None
    table = board.table
    top = table[(table["dataset"] == record.dataset) & (~table["ensemble"].astype(bool))]
    if top.empty:
        return None
    cid = top.sort_values("rank").iloc[0]["config_id"]
    runs = board.runs[board.runs["config_id"] == cid].sort_values("seed")
    return board.records.get(runs["run_id"].iloc[0]) if len(runs) else None


def search_frame(records: list[RunRecord]) -> dict[str, pd.DataFrame]:
    """Per Optuna study: one row per trial (number, status, objective, the searched values)."""
    studies: dict[str, list[RunRecord]] = {}
    for r in records:
        hs = (r.config or {}).get("hparams_search") or {}
        if hs.get("trial_number") is not None:
            studies.setdefault(str(hs.get("study_name") or "study"), []).append(r)
    out = {}
    for name, recs in studies.items():
        flats = [flatten(canonical(r.config)) for r in recs]
        keys = sorted({k for f in flats for k in f})
        varying = [
            k
            for k in keys
            if not k.startswith(("hparams_search.", "paths.", "data.fingerprint"))
            and k not in ("seed", "data.seed")
            and len({json.dumps(f.get(k), default=str) for f in flats}) > 1
        ]
        metric = (recs[0].config.get("hparams_search") or {}).get("metric") or "auc"
        rows = []
        for r, f in zip(recs, flats, strict=True):
            rows.append(
                {
                    "trial": int(r.config["hparams_search"]["trial_number"]),
                    "status": r.status,
                    f"val_{metric}": r.val.get(metric),
                    **{k: f.get(k) for k in varying},
                    "run_id": r.run_id,
                }
            )
        out[name] = pd.DataFrame(rows).sort_values("trial")
    return out


def param_importances(trials: pd.DataFrame, objective: str, params: list[str]) -> dict:
    """Optuna's fANOVA importances of the searched values, from the trials' records."""
    import optuna

    done = trials[trials[objective].notna()]
    dists = {}
    for p in params:
        values = done[p].dropna()
        if values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            lo, hi = float(values.min()), float(values.max())
            if lo == hi:
                continue
            dists[p] = optuna.distributions.FloatDistribution(lo, hi, log=lo > 0 and hi / lo > 20)
        else:
            dists[p] = optuna.distributions.CategoricalDistribution(
                sorted(map(str, values.unique()))
            )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in done.iterrows():
        params_ = {
            p: (
                str(row[p])
                if isinstance(d, optuna.distributions.CategoricalDistribution)
                else float(row[p])
            )
            for p, d in dists.items()
        }
        study.add_trial(
            optuna.trial.create_trial(
                params=params_, distributions=dists, value=float(row[objective])
            )
        )
    # fANOVA, seeded: the same page every time (Optuna 5's default evaluator is PED-ANOVA)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return {
        k: float(v)
        for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()
    }


def overlay_png(cases: dict) -> str:
    """Best and worst case as image | truth | prediction, a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ListedColormap([(0, 0, 0, 0), (1, 0.2, 0.2, 0.55), (0.2, 0.6, 1, 0.55)] * 3)
    fig, axes = plt.subplots(2, 3, figsize=(6.6, 4.6), dpi=80)
    for r, which in enumerate(("best", "worst")):
        image = cases[f"{which}_image"]
        for c, (title, mask) in enumerate(
            (
                ("image", None),
                ("truth", cases[f"{which}_truth"]),
                ("prediction", cases[f"{which}_pred"]),
            )
        ):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray")
            if mask is not None:
                ax.imshow(mask, cmap=colours, vmin=0, vmax=colours.N - 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                dice = float(cases[f"{which}_dice"])
                ax.set_ylabel(f"{which}: case {int(cases[f'{which}_index'])}\nDice {dice:.3f}")
            if r == 0:
                ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with tempfile.TemporaryFile() as f:
        fig.savefig(f, format="png")
        plt.close(fig)
        f.seek(0)
        return base64.b64encode(f.read()).decode()
