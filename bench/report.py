"""An interactive, self-contained HTML dashboard from run records, with a page per run.

    bench-report --runs-dir runs --out report.html

One offline file: the charts are Plotly (its JavaScript inlined once; hover, zoom, click a
legend entry to hide a series), every table sorts by a click on its header, a filter bar hides
other datasets and models, and every run id opens that run's page (an anchor in the same file:
config, its difference from the other runs of its row and from the row's leader, learning
curves, per-class table, confusion matrix, ROC, reliability diagram, robustness heat map,
Grad-CAM, paths). The numbers are those of ``bench-leaderboard``: the same aggregation
(:func:`bench.board.board_from_records`, same bootstrap) feeds both. Any run store renders:
classification, segmentation, 2D, 3D or mixed, failed and interrupted runs listed; a section that
cannot be drawn says why in one line instead of stopping the report.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from plotly.utils import PlotlyJSONEncoder

from bench.board import BOOTSTRAP_RESAMPLES, Board, board_from_records
from bench.board.compare import rank_test
from bench.board.frame import default_metric
from bench.confidence.calibration import confidence_and_correct, reliability_bins
from bench.confidence.selective import aurc, risk_coverage
from bench.errors import ConfigError
from bench.io import atomic_write_text
from bench.metrics import dice_iou_from_overlaps
from bench.records import RunRecord, RunStore, canonical, flatten, now_iso
from bench.stats import cd_diagram, read_overlaps, read_predictions

log = logging.getLogger(__name__)
PALETTE = qualitative.Plotly + qualitative.D3

CSS = """
.overlays{display:flex;flex-wrap:wrap;gap:14px}.overlays figure{margin:0}
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1500px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e8eefc}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.l,th.l{text-align:left}.done{color:#070}.failed{color:#b00}.skipped,.running{color:#a60}
.interrupted{color:#a60}img{max-width:100%;border:1px solid #eee;margin:.3em 0}.muted{color:#777}
#filters{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd;
z-index:5}
#filters label{margin-right:1em}.run-page{display:none}.run-page.shown{display:block}
body.on-run #overview{display:none}.plot{width:100%;min-height:360px}
pre{background:#f7f7f7;padding:.5em;overflow:auto;font-size:.8em}
.diff td.changed{background:#fff3cd}
"""

SCRIPT = """
(function(){
const template = JSON.parse(document.getElementById('template').textContent);
const drawn = new Set();
function drawOne(div){
  const id = div.dataset.fig;
  if (drawn.has(id) || div.offsetParent === null) return;
  drawn.add(id);
  const f = JSON.parse(document.getElementById('fig-' + id).textContent);
  f.layout.template = template;
  Plotly.newPlot(div, f.data, f.layout, {displaylogo:false, responsive:true});
}
// a chart is drawn when it scrolls into view: a 200-run page opens without drawing them all
const seen = ('IntersectionObserver' in window) ? new IntersectionObserver(function(entries){
  entries.forEach(function(e){ if (e.isIntersecting) drawOne(e.target); });
}, {rootMargin: '400px'}) : null;
function draw(root){
  root.querySelectorAll('div.plot[data-fig]').forEach(function(div){
    if (seen) { seen.unobserve(div); seen.observe(div); } else drawOne(div);
  });
}
// a run's page is kept as inert text until it is opened: a 200-run report stays a small DOM
function runPage(id){
  let page = document.getElementById(id);
  if (page) return page;
  const src = document.getElementById('src-' + id);
  if (!src) return null;
  const holder = document.createElement('div');
  holder.innerHTML = src.textContent.split('<' + String.fromCharCode(92) + '/').join('</');
  page = holder.firstElementChild;
  document.body.insertBefore(page, document.getElementById('template'));
  makeSortable(page);
  return page;
}
function route(){
  const id = decodeURIComponent(location.hash.slice(1));
  const page = id.startsWith('run-') ? runPage(id) : null;
  document.querySelectorAll('section.run-page.shown').forEach(p => p.classList.remove('shown'));
  if (page) { page.classList.add('shown'); page.scrollIntoView(); }
  document.body.classList.toggle('on-run', !!page);
  draw(page || document.getElementById('overview'));
}
function cellValue(td){
  const t = td.dataset.sort !== undefined ? td.dataset.sort : td.textContent.trim();
  const n = parseFloat(t.replace(/[^0-9eE+.\\-]/g, ''));
  return (t !== '' && /^[-+]?[0-9.]/.test(t) && !isNaN(n)) ? n : t.toLowerCase();
}
function makeSortable(root){
root.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      const asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
      th.classList.add(asc ? 'asc' : 'desc');
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort(function(a, b){
        const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
        if (x === y) return 0;
        if (x === '' ) return 1; if (y === '') return -1;
        return (x < y ? -1 : 1) * (asc ? 1 : -1);
      });
      rows.forEach(r => body.appendChild(r));
    });
  });
});
}
makeSortable(document.getElementById('overview'));
function applyFilters(){
  const ds = document.getElementById('f-dataset').value;
  const model = document.getElementById('f-model').value;
  const text = document.getElementById('f-text').value.toLowerCase();
  document.querySelectorAll('[data-dataset]').forEach(function(el){
    const okDs = !ds || el.dataset.dataset === ds;
    const okModel = !model || !el.dataset.model || el.dataset.model === model;
    const okText = !text || el.tagName !== 'TR' || el.textContent.toLowerCase().includes(text);
    el.style.display = (okDs && okModel && okText) ? '' : 'none';
  });
  draw(document.getElementById('overview'));
}
['f-dataset', 'f-model', 'f-text'].forEach(function(id){
  const el = document.getElementById(id);
  if (el) el.addEventListener('input', applyFilters);
});
window.addEventListener('hashchange', route);
route();
})();
"""


class Page:
    """Collects the page's figures (Plotly JSON, drawn on demand by the page's script)."""

    def __init__(self) -> None:
        self.figures: dict[str, str] = {}

    def plot(self, fig: go.Figure, height: int = 360) -> str:
        """A placeholder div; the figure's JSON goes into its own script tag, parsed only when
        the chart is drawn (a 200-run page does not parse every chart at load)."""
        key = f"f{len(self.figures)}"
        fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50})
        self.figures[key] = json.dumps(fig.to_plotly_json(), cls=PlotlyJSONEncoder)
        return f'<div class="plot" data-fig="{key}"></div>'

    def scripts(self) -> str:
        """The figures' JSON, one script tag each, and the shared template once."""
        template = json.dumps(pio.templates["plotly_white"].to_plotly_json(), cls=PlotlyJSONEncoder)
        tags = [f'<script type="application/json" id="template">{_safe(template)}</script>']
        tags += [
            f'<script type="application/json" id="fig-{k}">{_safe(v)}</script>'
            for k, v in self.figures.items()
        ]
        return "".join(tags)


def _inert(run_id: str, page_html: str) -> str:
    """A run page as unparsed text; the page's script builds it when the run is opened."""
    return (
        f'<script type="text/html" id="src-{_esc(run_anchor(run_id))}">{_safe(page_html)}</script>'
    )


def _safe(text: str) -> str:
    """JSON inside a script tag must not close it."""
    return text.replace("</", "<\\/")


def _esc(v) -> str:
    return html.escape(str(v))


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _table(
    df: pd.DataFrame,
    left: tuple[str, ...] = (),
    row_class: str | None = None,
    row_attrs: list[dict] | None = None,
    links: dict[str, list[str]] | None = None,
) -> str:
    """A sortable table; ``links[col]`` gives each row's anchor target for that column."""
    head = "".join(f'<th class="{"l" if c in left else ""}">{_esc(c)}</th>' for c in df)
    rows = []
    links = links or {}
    for i, (_, r) in enumerate(df.iterrows()):
        cls = f' class="{_esc(r[row_class])}"' if row_class else ""
        attrs = "".join(
            f' data-{k}="{_esc(v)}"' for k, v in (row_attrs[i] if row_attrs else {}).items()
        )
        cells = []
        for c in df:
            text = _esc(_cell(r[c]))
            target = links[c][i] if c in links else None
            if target:
                text = f'<a href="#{_esc(target)}">{text}</a>'
            cells.append(f'<td class="{"l" if c in left else ""}">{text}</td>')
        rows.append(f"<tr{cls}{attrs}>{''.join(cells)}</tr>")
    return (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _note(text: str) -> str:
    return f'<p class="muted">{_esc(text)}</p>'


def run_anchor(run_id: str) -> str:
    return f"run-{run_id}"


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Points no other point beats on both lower cost and higher score."""
    keep = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (
            (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        )
        keep[i] = not dominated.any()
    return keep


def _labels(g: pd.DataFrame, varying: list[str]) -> list[str]:
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
    names = dict(zip(rows["config_id"], _labels(rows, table.attrs.get("varying", [])), strict=True))
    return {k: names.get(k, k) for k in config_ids}


def _history(run_dir) -> pd.DataFrame | None:
    path = Path(run_dir) / "history.csv" if run_dir else None
    return pd.read_csv(path) if path is not None and path.exists() else None


def _predictions(run_dir):
    path = Path(run_dir) / "predictions_test.csv" if run_dir else None
    return read_predictions(path) if path is not None and path.exists() else None


def _classification_runs(board: Board) -> pd.DataFrame:
    runs = board.runs[board.runs["kind"] == "classification"]
    has = [bool(d) and Path(d, "predictions_test.csv").exists() for d in runs["_dir"]]
    return runs.loc[pd.Series(has, index=runs.index, dtype=bool)]


def _roc(y, s, task):
    from sklearn.metrics import roc_curve

    if y.ndim == 2:
        return roc_curve(y.ravel(), s.ravel())[:2]
    if task == "binary-class":
        return roc_curve(y, s[:, -1])[:2]
    return roc_curve(np.eye(s.shape[1])[y].ravel(), s.ravel())[:2]  # micro one-vs-rest


def _confusion(y, s, task) -> np.ndarray | None:
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


# -- overview sections ------------------------------------------------------------------------
def _per_dataset(ds: str, body: str) -> str:
    return f'<div data-dataset="{_esc(ds)}"><h3>{_esc(ds)}</h3>{body}</div>'


def cross_dataset_section(board: Board) -> str:
    """Mean ranks and the critical-difference diagram, when >= 2 datasets share >= 3 models."""
    test = rank_test(board.table, "test_auc")
    if not test.ran:
        return ""
    ranks = test.ranks.rename("mean rank").reset_index().rename(columns={"label": "model"})
    with tempfile.TemporaryDirectory() as tmp:
        path = cd_diagram(test, Path(tmp) / "cd.png")
        data = base64.b64encode(path.read_bytes()).decode() if path else ""
    img = f'<img alt="critical difference diagram" src="data:image/png;base64,{data}">'
    return _note(test.note) + _table(ranks, left=("model",)) + (img if data else "")


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
            None if e else run_anchor(first_run[c])
            for c, e in zip(g["config_id"], g["ensemble"].astype(bool), strict=True)
        ]
        attrs = [{"dataset": ds, "model": m} for m in g["model"]]
        parts.append(
            f'<div data-dataset="{_esc(ds)}"><h3>{_esc(ds)} '
            f"<span class='muted'>(ranked by {metric}; the model opens its first run)</span></h3>"
            + _table(show, left=("model", "scheme"), row_attrs=attrs, links={"model": anchors})
            + "</div>"
        )
    return "".join(parts)


def curves_section(board: Board, page: Page) -> str:
    parts = []
    for ds, g in board.runs.groupby("dataset"):
        names = row_labels(board, list(g["config_id"].unique()))
        fig = make_subplots(rows=1, cols=2, subplot_titles=("train loss", "validation metric"))
        drawn = False
        for i, (_, r) in enumerate(g.iterrows()):
            h = _history(r["_dir"])
            if h is None:
                continue
            label = f"{names[r['config_id']]} s{r['seed']}"
            epoch = h["epoch"] + 1
            # one colour per run in both panels; clicking its legend entry hides both curves
            line = {"color": PALETTE[i % len(PALETTE)]}
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
            parts.append(_per_dataset(ds, page.plot(fig)))
    return "".join(parts)


def cost_section(board: Board, page: Page) -> str:
    parts = []
    for ds, g in board.table.groupby("dataset"):
        metric = f"{default_metric(g['kind'].iloc[0])}_mean"
        if metric not in g or g[metric].isna().all():
            continue
        g = g.assign(train_min=g["train_time_s"].astype(float) / 60)
        labels = dict(zip(g.index, _labels(g, board.table.attrs.get("varying", [])), strict=True))
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
            front = pareto_front(d[col].to_numpy(float), d[metric].to_numpy(float))
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
        parts.append(_per_dataset(ds, page.plot(fig)))
    return "".join(parts)


def spread_section(board: Board, page: Page) -> str:
    parts = []
    for ds, g in board.runs.groupby("dataset"):
        metric = default_metric(g["kind"].iloc[0])
        if metric not in g or g[metric].isna().all():
            continue
        names = row_labels(board, sorted(g["config_id"].unique()))
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
        parts.append(_per_dataset(ds, page.plot(fig, 320)))
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
            color = PALETTE[i % len(PALETTE)]
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
        parts.append(_per_dataset(ds, page.plot(fig, 340)))
    return "".join(parts)


def seed_curves_section(board: Board, page: Page, kind: str) -> str:
    """ROC, reliability or risk-coverage curves of every run (every seed), one trace each."""
    parts = []
    for ds, g in _classification_runs(board).groupby("dataset"):
        names = row_labels(board, list(g["config_id"].unique()))
        fig = go.Figure()
        for _, r in g.sort_values(["config_id", "seed"]).iterrows():
            _, y, s = _predictions(r["_dir"])
            label = f"{names[r['config_id']]} s{r['seed']}"
            if kind == "roc":
                fpr, tpr = _roc(y, s, r["task"])
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
        parts.append(_per_dataset(ds, page.plot(fig, 380)))
    return "".join(parts)


def confusion_section(board: Board, page: Page) -> str:
    """Confusion matrix per row, summed over its seeds (every seed counts)."""
    parts = []
    for ds, g in _classification_runs(board).groupby("dataset"):
        names = row_labels(board, list(g["config_id"].unique()))
        cells = []
        for cid, rows in g.groupby("config_id"):
            total, labels = None, None
            for _, r in rows.iterrows():
                _, y, s = _predictions(r["_dir"])
                cm = _confusion(y, s, r["task"])
                if cm is None:
                    continue
                total = cm if total is None else total + cm
                rec = board.records.get(r["run_id"])
                labels = list((rec.spec or {}).get("label_names") or []) if rec else []
            if total is None:
                continue
            fig = confusion_figure(total, labels, f"{names[cid]} ({len(rows)} seed(s))")
            cells.append(page.plot(fig, 330))
        if cells:
            parts.append(_per_dataset(ds, "".join(cells)))
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
        parts.append(_per_dataset(ds, page.plot(fig, 340)))
    return "".join(parts)


def cases_section(board: Board, page: Page) -> str:
    """Segmentation: per-case Dice per row (every seed's cases), and each row's best and worst
    test case as image | truth | prediction overlays."""
    runs = board.runs[board.runs["kind"] == "segmentation"]
    parts = []
    for ds, g in runs.groupby("dataset"):
        names = row_labels(board, list(g["config_id"].unique()))
        fig = go.Figure()
        for cid, rows in g.groupby("config_id"):
            values = []
            for d in rows["_dir"]:
                path = Path(d) / "predictions_test.csv" if d else None
                if path is None or not path.exists():
                    continue
                dice, _ = dice_iou_from_overlaps(torch.as_tensor(read_overlaps(path)[1]))
                case = dice.nanmean(1).numpy()
                values += case[~np.isnan(case)].tolist()
            if values:
                fig.add_trace(go.Box(y=values, name=names[cid], boxpoints="all"))
        if fig.data:
            fig.update_layout(yaxis_title="per-case Dice")
            parts.append(_per_dataset(ds, page.plot(fig, 340)))
        overlays = [
            case_overlays(names[cid], rows) for cid, rows in g.groupby("config_id", sort=False)
        ]
        overlays = [o for o in overlays if o]
        if overlays:
            parts.append(
                _per_dataset(
                    ds,
                    "<p>Best and worst test case of each row (its first seed with saved cases): "
                    "image | truth | prediction, foreground in colour.</p>"
                    + '<div class="overlays">'
                    + "".join(overlays)
                    + "</div>",
                )
            )
    return "".join(parts)


def case_overlays(label: str, rows: pd.DataFrame) -> str:
    """An ``<img>`` of the row's best and worst test case (image | truth | prediction), or ''."""
    for seed, d in zip(rows["seed"], rows["_dir"], strict=True):
        path = Path(d) / "test_cases.npz" if d else None
        if path is None or not path.exists():
            continue
        with np.load(path) as z:
            cases = {k: z[k] for k in z.files}
        if "best_image" not in cases:
            continue
        return (
            f'<figure><img alt="{_esc(label)} best and worst test cases" '
            f'src="data:image/png;base64,{_overlay_png(cases)}">'
            f"<figcaption>{_esc(label)} · seed {_esc(seed)}</figcaption></figure>"
        )
    return ""


def _overlay_png(cases: dict) -> str:
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
        links = [run_anchor(r) for r in show["run"]]
        attrs = [{"dataset": ds} for ds in g["dataset"]]
        parts.append(
            f"<h3>{_esc(g['dataset'].iloc[0])} · {_esc(g['model'].iloc[0])}</h3>"
            + _table(show, left=("run",), row_attrs=attrs, links={"run": links})
        )
    return "".join(parts)


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


def search_section(records: list[RunRecord], page: Page) -> str:
    """Optuna studies: objective per trial (best so far), parallel coordinates of the searched
    values, and their importances when the study has at least 10 finished trials."""
    parts = []
    for name, trials in search_frame(records).items():
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
                imp = param_importances(trials, objective, params)
                bar = go.Figure(go.Bar(x=list(imp.values()), y=list(imp), orientation="h"))
                bar.update_layout(
                    title="parameter importance (Optuna fANOVA)", xaxis_title="importance"
                )
                body += page.plot(bar, 260)
            except Exception as e:  # importance needs variance: say why it is missing
                body += _note(f"parameter importance not computed: {type(e).__name__}: {e}")
        else:
            body += _note(f"parameter importance needs >= 10 finished trials ({len(done)} here)")
        links = {"run_id": [run_anchor(r) for r in trials["run_id"]]}
        body += _table(trials, left=("status", "run_id"), links=links)
        parts.append(f"<h3>{_esc(name)}</h3>{body}")
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
    return _table(
        df,
        left=("status", "run_id", "dataset", "model", "error"),
        row_class="status",
        row_attrs=attrs,
        links={"run_id": [run_anchor(r) for r in df["run_id"]]},
    )


# -- one page per run ---------------------------------------------------------------------------
def _config_diff(record: RunRecord, others: list[RunRecord]) -> pd.DataFrame:
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


def run_page(record: RunRecord, board: Board, page: Page) -> str:
    """One run's page (an anchor): what it is, how it differs, what it measured."""
    r = record
    head = (
        f'<section class="run-page" id="{_esc(run_anchor(r.run_id))}">'
        f'<p><a href="#">← back to the overview</a></p><h2>{_esc(r.run_id)}</h2>'
        f'<p><span class="{_esc(r.status)}">{_esc(r.status)}</span> · {_esc(r.dataset)} · '
        f"{_esc(r.model)} · seed {_esc(r.seed)} · best epoch "
        f"{_esc(None if r.best_epoch is None else r.best_epoch + 1)} of "
        f"{_esc(r.epochs_run)}</p>"
    )
    parts = [head]
    if r.error:
        parts.append(f"<pre>{_esc(r.error)}\n{_esc(r.traceback or '')}</pre>")
    for note in r.notes or []:
        parts.append(_note(note))
    run_dir = Path(r.dir) if r.dir else None
    paths = {
        "record": run_dir / "record.json" if run_dir else None,
        "predictions": run_dir / "predictions_test.csv" if run_dir else None,
        "history": run_dir / "history.csv" if run_dir else None,
        "checkpoint": run_dir / "checkpoints" / "best.ckpt" if run_dir else None,
    }
    parts.append(
        "<h3>Files</h3><ul>"
        + "".join(
            f"<li>{k}: <code>{_esc(p)}</code>{'' if p and p.exists() else ' (absent)'}</li>"
            for k, p in paths.items()
        )
        + "</ul>"
    )
    metrics = pd.DataFrame(
        [
            {"split": k, **v}
            for k, v in (("val", r.val), ("test", r.test), ("test@last", r.test_last))
            if v
        ]
    )
    if not metrics.empty:
        parts.append("<h3>Metrics</h3>" + _table(metrics, left=("split",)))
    peers = [
        o for o in board.records.values() if o.config_id == r.config_id and o.run_id != r.run_id
    ]
    diff = _config_diff(r, peers)
    parts.append(
        "<h3>Difference from the other runs of its row</h3>"
        + (_table(diff, left=("key",)) if not diff.empty else _note("no other run in this row"))
    )
    leader = _row_leader(board, r)
    if leader is not None and leader.config_id != r.config_id:
        diff = _config_diff(r, [leader])
        parts.append(
            f"<h3>Difference from the leader of {_esc(r.dataset)} "
            f'(<a href="#{_esc(run_anchor(leader.run_id))}">{_esc(leader.run_id)}</a>)</h3>'
            + _table(diff, left=("key",))
        )
    h = _history(run_dir)
    if h is not None:
        fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation metric"))
        for col in ("train_loss", "val_loss"):
            if col in h:
                fig.add_trace(go.Scatter(x=h["epoch"] + 1, y=h[col], name=col), 1, 1)
        for col in [c for c in h if c in ("val_auc", "val_acc", "val_dice", "val_iou")]:
            fig.add_trace(go.Scatter(x=h["epoch"] + 1, y=h[col], name=col), 1, 2)
        fig.update_xaxes(title_text="epoch", dtick=1 if len(h) <= 12 else None)
        parts.append("<h3>Learning curves</h3>" + page.plot(fig, 320))
    if r.per_class.get("test"):
        parts.append(
            "<h3>Per class (test)</h3>" + _table(pd.DataFrame(r.per_class["test"]), left=("class",))
        )
    pred = _predictions(run_dir) if r.kind == "classification" else None
    if pred is not None:
        _, y, s = pred
        labels = list((r.spec or {}).get("label_names") or [])
        cm = _confusion(y, s, r.task)
        plots = []
        if cm is not None:
            plots.append(page.plot(confusion_figure(cm, labels, "confusion matrix (test)"), 330))
        fpr, tpr = _roc(y, s, r.task)
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
        parts.append("<h3>Predictions</h3>" + "".join(plots))
    rob = (r.evaluations or {}).get("robustness")
    if rob and rob.get("corruptions"):
        names = sorted(rob["corruptions"])
        sevs = sorted({int(k) for v in rob["corruptions"].values() for k in v})
        z = [
            [rob["corruptions"][n].get(str(s), {}).get("balanced_error") for s in sevs]
            for n in names
        ]
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
        parts.append("<h3>Robustness</h3>" + page.plot(fig, 420))
    for png in sorted(run_dir.glob("explain/*.png")) if run_dir else []:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f'<h3>Grad-CAM</h3><img alt="Grad-CAM" src="data:image/png;base64,{data}">')
    parts.append(
        "<h3>Config</h3>"
        + _table(
            pd.DataFrame(sorted(flatten(r.config).items()), columns=["key", "value"]),
            left=("key", "value"),
        )
    )
    return "".join(parts) + "</section>"


def _row_leader(board: Board, record: RunRecord) -> RunRecord | None:
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


# -- the page ------------------------------------------------------------------------------------
def _section(title: str, render: Callable[[], str]) -> list[str]:
    try:
        body = render()
    except Exception as e:  # one broken section must not cost the whole report
        log.warning("report section %r not drawn: %s", title, e)
        body = _note(f"not drawn: {type(e).__name__}: {e}")
    return [f"<h2>{_esc(title)}</h2>", body] if body else []


def _filters(records: list[RunRecord]) -> str:
    datasets = sorted({str(r.dataset) for r in records})
    models = sorted({str(r.model) for r in records})

    def options(values):
        return '<option value="">all</option>' + "".join(
            f'<option value="{_esc(v)}">{_esc(v)}</option>' for v in values
        )

    return (
        '<div id="filters"><label>dataset <select id="f-dataset">'
        f"{options(datasets)}</select></label>"
        f'<label>model <select id="f-model">{options(models)}</select></label>'
        '<label>rows containing <input id="f-text" type="search" placeholder="any text">'
        "</label></div>"
    )


def build_report(runs_dir: str, out: str, title: str = "medbench report") -> Path:
    records, problems = RunStore(runs_dir).iter_records()
    page = Page()
    overview = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">{len(records)} runs in {_esc(runs_dir)}, generated {now_iso()}; '
        "numbers as bench-leaderboard computes them</p>",
    ]
    counts = pd.Series([r.status for r in records], dtype=object).value_counts().to_dict()
    overview.append("<p>" + ", ".join(f"{v} {k}" for k, v in counts.items()) + "</p>")
    if problems:
        overview.append(
            "<p class='failed'>Unreadable records: " + _esc("; ".join(problems)) + "</p>"
        )
    board = board_from_records(records, n_boot=BOOTSTRAP_RESAMPLES)
    runs_pages = []
    if not board.empty:
        overview += _section("Across datasets", lambda: cross_dataset_section(board))
        overview += _section("Leaderboard", lambda: leaderboard_section(board))
        overview += _section("Learning curves", lambda: curves_section(board, page))
        overview += _section("Accuracy vs cost", lambda: cost_section(board, page))
        overview += _section("Per-run spread", lambda: spread_section(board, page))
        overview += _section("Data efficiency", lambda: fraction_section(board, page))
        overview += _section(
            "ROC curves (every seed)", lambda: seed_curves_section(board, page, "roc")
        )
        overview += _section(
            "Calibration (reliability, every seed)",
            lambda: seed_curves_section(board, page, "calibration"),
        )
        overview += _section(
            "Selective prediction (risk-coverage, every seed)",
            lambda: seed_curves_section(board, page, "selective"),
        )
        overview += _section(
            "Confusion matrices (seeds summed)", lambda: confusion_section(board, page)
        )
        overview += _section("Robustness", lambda: robustness_section(records, page))
        overview += _section("Segmentation cases", lambda: cases_section(board, page))
        overview += _section("Cross-validation folds", lambda: cv_section(board))
        overview += _section("Hyperparameter search", lambda: search_section(records, page))
    elif records:
        overview.append(_note("no finished runs yet: nothing to rank"))
    overview += ["<h2>Runs</h2>", runs_table(records)] if records else []
    for r in records:
        try:
            runs_pages.append(_inert(r.run_id, run_page(r, board, page)))
        except Exception as e:  # one run's page must not cost the report
            log.warning("page of run %s not drawn: %s", r.run_id, e)
            runs_pages.append(
                _inert(
                    r.run_id,
                    f'<section class="run-page" id="{_esc(run_anchor(r.run_id))}">'
                    f"<h2>{_esc(r.run_id)}</h2>{_note(f'not drawn: {type(e).__name__}: {e}')}"
                    "</section>",
                )
            )
    html_page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f"{_filters(records)}<main id='overview'>{''.join(overview)}</main>"
        f"{''.join(runs_pages)}"
        f"{page.scripts()}"
        # Plotly last: the tables show while its 4.8 MB of JavaScript is still being parsed
        f"<script>{get_plotlyjs()}</script>"
        f"<script>{SCRIPT}</script></body></html>"
    )
    path = Path(out)
    atomic_write_text(path, html_page)
    return path


def run(args) -> int:
    """The body of ``bench-report`` (its options: :mod:`bench.commands.report`)."""
    if not Path(args.runs_dir).is_dir():
        raise ConfigError(f"run store {args.runs_dir} does not exist; run bench-train first")
    path = build_report(args.runs_dir, args.out, args.title)
    print(f"wrote {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")
    return 0
