"""A self-contained HTML dashboard from run records (plots embedded as PNG, no network needed).

    bench-report --runs-dir runs --out report.html

Renders any run store: classification, segmentation, 2D, 3D or mixed, with failed and interrupted
runs listed. Each section appears when its data exists; a section that cannot be drawn says why
in one line instead of stopping the report.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.board import BOOTSTRAP_RESAMPLES, Board, board_from_records  # noqa: E402
from bench.board.compare import rank_test  # noqa: E402
from bench.board.frame import default_metric  # noqa: E402
from bench.confidence.calibration import confidence_and_correct, reliability_bins  # noqa: E402
from bench.confidence.selective import aurc, risk_coverage  # noqa: E402
from bench.errors import ConfigError  # noqa: E402
from bench.io import atomic_write_text  # noqa: E402
from bench.metrics import dice_iou_from_overlaps
from bench.records import RunRecord, RunStore, now_iso  # noqa: E402
from bench.stats import cd_diagram, read_overlaps, read_predictions  # noqa: E402

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.done{color:#070}.failed{color:#b00}.skipped,.running{color:#a60}
.interrupted{color:#a60}img{max-width:100%;border:1px solid #eee;margin:.3em 0}.muted{color:#777}
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


def _table(df: pd.DataFrame, left: tuple[str, ...] = (), row_class: str | None = None) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(str(c))}</th>' for c in df)
    rows = []
    for _, r in df.iterrows():
        cls = f' class="{html.escape(str(r[row_class]))}"' if row_class else ""
        cells = []
        for c in df.columns:
            v = r[c]
            text = (
                f"{v:.4f}"
                if isinstance(v, float) and v == v
                else ""
                if v is None or v != v
                else str(v)
            )
            cells.append(f'<td class="{"l" if c in left else ""}">{html.escape(text)}</td>')
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _note(text: str) -> str:
    return f'<p class="muted">{html.escape(text)}</p>'


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Boolean mask of points no other point beats on both lower cost and higher score."""
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
    """Plot labels of leaderboard rows, as the table names them (model plus the config
    values that vary between rows), so two rows of one model never look identical."""
    table = board.table
    rows = table[~table["ensemble"].astype(bool)] if "ensemble" in table else table
    rows = rows[rows["config_id"].isin(config_ids)].drop_duplicates("config_id")
    names = dict(zip(rows["config_id"], _labels(rows, table.attrs.get("varying", [])), strict=True))
    return {k: names.get(k, k) for k in config_ids}


# -- sections ---------------------------------------------------------------------------------
def leaderboard_section(board: Board) -> str:
    table = board.table
    varying = table.attrs.get("varying", [])
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
        show["train min/run"] = (g["train_time_s"].astype(float) / 60).round(1)
        parts.append(
            f"<h3>{html.escape(str(ds))} <span class='muted'>(ranked by {metric})</span></h3>"
            + _table(show, left=("model", "scheme"))
        )
    return "".join(parts)


def stats_section(board: Board) -> str:
    test = rank_test(board.table, "test_auc")
    if not test.ran:
        return _note(test.note)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = cd_diagram(test, Path(tmp) / "cd.png")
        data = base64.b64encode(path.read_bytes()).decode()
    return _note(test.note) + f'<img alt="critical difference" src="data:image/png;base64,{data}">'


def curves_section(board: Board) -> str:
    parts = []
    for ds, g in board.runs.groupby("dataset"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        drawn = False
        names = row_labels(board, list(g["config_id"].unique()))
        for _, r in g.iterrows():
            path = Path(r["_dir"]) / "history.csv" if r["_dir"] else None
            if path is None or not path.exists():
                continue
            h = pd.read_csv(path)
            label = f"{names[r['config_id']]} s{r['seed']}"
            if "train_loss" in h:
                axes[0].plot(h["epoch"], h["train_loss"], marker=".", label=label)
            metric = "val_auc" if "val_auc" in h else "val_dice" if "val_dice" in h else None
            if metric:
                axes[1].plot(h["epoch"], h[metric], marker=".", label=label)
                axes[1].set_ylabel(metric)
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        axes[0].set_ylabel("train loss")
        for a in axes:
            a.set_xlabel("epoch")
        axes[1].legend(fontsize=6, ncol=2)
        fig.suptitle(str(ds))
        parts.append(_png(fig))
    return "".join(parts)


def cost_section(board: Board) -> str:
    parts = []
    for ds, g in board.table.groupby("dataset"):
        metric = f"{default_metric(g['kind'].iloc[0])}_mean"
        if metric not in g or g[metric].isna().all():
            continue
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        for ax, col, label in zip(
            axes,
            ("param_count_m", "gmacs", "train_time_s"),
            ("params (M)", "GMACs", "train time (s)"),
            strict=True,
        ):
            d = g[[col, metric, "model"]].dropna()
            d = d[d[col].astype(float) > 0]
            if d.empty:
                continue
            front = pareto_front(d[col].to_numpy(float), d[metric].to_numpy(float))
            ax.scatter(d[col].astype(float), d[metric], c=np.where(front, "tab:red", "tab:blue"))
            for _, r in d.iterrows():
                ax.annotate(r["model"], (float(r[col]), r[metric]), fontsize=7)
            pf = d[front].sort_values(col)
            ax.plot(pf[col].astype(float), pf[metric], "r--", lw=1, label="Pareto front")
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(metric.removesuffix("_mean"))
            ax.legend(fontsize=7)
        fig.suptitle(f"{ds}: accuracy vs cost")
        parts.append(_png(fig))
    return "".join(parts)


def spread_section(board: Board) -> str:
    parts = []
    for ds, g in board.runs.groupby("dataset"):
        metric = default_metric(g["kind"].iloc[0])
        if metric not in g or g[metric].isna().all():
            continue
        keys = sorted(g["config_id"].unique())
        labels = row_labels(board, keys)
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(keys)), 3))
        for i, k in enumerate(keys):
            v = g[g.config_id == k][metric].to_numpy(float)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.1, 0.1, len(v)), v)
            ax.hlines(v.mean(), i - 0.25, i + 0.25, color="k")
        ax.set_xticks(range(len(keys)), [labels[k] for k in keys], rotation=30, fontsize=7)
        ax.set_ylabel(metric)
        ax.set_title(f"{ds}: per-run spread (seeds, folds)", fontsize=9)
        parts.append(_png(fig))
    return "".join(parts)


def fraction_section(board: Board) -> str:
    """Metric vs training fraction per model, with 95% CIs (a data-efficiency curve)."""
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
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for model, m in g.groupby("model"):
            m = m.sort_values("fraction")
            y = m[f"{metric}_mean"].to_numpy(float)
            ax.plot(m["fraction"], y, marker="o", label=str(model))
            if f"{metric}_ci95_lo" in m:
                ax.fill_between(
                    m["fraction"],
                    m[f"{metric}_ci95_lo"].astype(float),
                    m[f"{metric}_ci95_hi"].astype(float),
                    alpha=0.2,
                )
        ax.set_xscale("log")
        ax.set_xlabel("fraction of the training split")
        ax.set_ylabel(metric)
        ax.set_title(f"{ds}: data efficiency (band: 95% CI)", fontsize=9)
        ax.legend(fontsize=7)
        parts.append(_png(fig))
    return "".join(parts)


def _first_runs(board: Board) -> pd.DataFrame:
    runs = board.runs[board.runs["kind"] == "classification"]
    has = pd.Series(
        [bool(d) and Path(d, "predictions_test.csv").exists() for d in runs["_dir"]],
        index=runs.index,
        dtype=bool,
    )
    runs = runs.loc[has]
    return runs.sort_values("seed").groupby(["dataset", "config_id"]).head(1)


def calibration_section(board: Board) -> str:
    """Reliability diagram per model (first seed) and ECE before/after temperature scaling."""
    parts = []
    for ds, g in _first_runs(board).groupby("dataset"):
        n = len(g)
        fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
        for ax, (_, r) in zip(axes[0], g.iterrows(), strict=True):
            _, y, s = read_predictions(Path(r["_dir"]) / "predictions_test.csv")
            bins = reliability_bins(*confidence_and_correct(y, s, r["task"]))
            if bins:
                conf, acc, count = map(np.array, zip(*bins, strict=True))
                ax.bar(conf, acc, width=0.05, alpha=0.7, label="accuracy")
            ax.plot([0, 1], [0, 1], "k:", lw=1)
            ece, ece_ts = r.get("test_ece"), r.get("test_ece_ts")
            sub = f"ECE {ece:.3f}" if ece == ece and ece is not None else ""
            if ece_ts is not None and ece_ts == ece_ts:
                sub += f" → {ece_ts:.3f} (T-scaled)"
            ax.set_title(f"{r['model']} s{r['seed']}\n{sub}", fontsize=7)
            ax.set_xlabel("confidence")
            ax.set_ylabel("accuracy")
        parts.append(f"<h3>{html.escape(str(ds))}</h3>" + _png(fig))
    return "".join(parts)


def selective_section(board: Board) -> str:
    """Risk-coverage curves and AURC (lower is better) per model, first seed."""
    parts = []
    for ds, g in _first_runs(board).groupby("dataset"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        names = row_labels(board, list(g["config_id"].unique()))
        for _, r in g.iterrows():
            _, y, s = read_predictions(Path(r["_dir"]) / "predictions_test.csv")
            conf, correct = confidence_and_correct(y, s, r["task"])
            cov, risk = risk_coverage(conf, correct)
            name = names[r["config_id"]]
            ax.plot(cov, risk, label=f"{name} (AURC {aurc(conf, correct):.3f})")
        ax.set_xlabel("coverage (cases kept)")
        ax.set_ylabel("risk (error rate)")
        ax.set_title(f"{ds}: risk-coverage (first seed)", fontsize=9)
        ax.legend(fontsize=7)
        parts.append(_png(fig))
    return "".join(parts)


def robustness_section(records: list[RunRecord]) -> str:
    """Accuracy vs corruption severity per model (mean over corruptions and seeds)."""
    rows = []
    for r in records:
        rob = (r.evaluations or {}).get("robustness")
        if not rob:
            continue
        for corr, sev in rob.get("corruptions", {}).items():
            for level, metrics in sev.items():
                rows.append(
                    {
                        "dataset": r.dataset,
                        "model": r.model,
                        "corruption": corr,
                        "severity": int(level),
                        "acc": metrics.get("acc"),
                    }
                )
        rows.append(
            {
                "dataset": r.dataset,
                "model": r.model,
                "corruption": "clean",
                "severity": 0,
                "acc": rob.get("clean", {}).get("acc"),
            }
        )
    if not rows:
        return ""
    df = pd.DataFrame(rows)
    parts = []
    for ds, g in df.groupby("dataset"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for model, m in g.groupby("model"):
            curve = m.groupby("severity")["acc"].mean()
            ax.plot(curve.index, curve.values, marker="o", label=str(model))
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("accuracy (mean over corruptions)")
        ax.set_title(f"{ds}: robustness to corruptions", fontsize=9)
        ax.legend(fontsize=7)
        parts.append(_png(fig))
    return "".join(parts)


def prediction_plots(board: Board) -> tuple[str, str]:
    from sklearn.metrics import confusion_matrix, roc_curve

    labels = {
        r.dataset: list((r.spec or {}).get("label_names") or []) for r in board.records.values()
    }
    cm_parts, roc_parts = [], []
    for ds, first in _first_runs(board).groupby("dataset"):
        n = len(first)
        fig_cm, axes_cm = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False)
        fig_roc, ax_roc = plt.subplots(figsize=(4.5, 4))
        row_names = row_labels(board, list(first["config_id"].unique()))
        for ax, (_, r) in zip(axes_cm[0], first.iterrows(), strict=True):
            _, y, s = read_predictions(str(Path(r["_dir"]) / "predictions_test.csv"))
            if y.ndim == 2:  # multi-label: micro ROC only
                fpr, tpr, _ = roc_curve(y.ravel(), s.ravel())
                ax.axis("off")
            else:
                pred = (s[:, -1] > 0.5).astype(int) if r["task"] == "binary-class" else s.argmax(1)
                k = s.shape[1]
                cm = confusion_matrix(y, pred, labels=list(range(k)))
                ax.imshow(cm, cmap="Blues")
                for (i, j), v in np.ndenumerate(cm):
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
                names = labels.get(ds) or [str(i) for i in range(k)]
                ax.set_xticks(range(k), names[:k], rotation=45, fontsize=6, ha="right")
                ax.set_yticks(range(k), names[:k], fontsize=6)
                ax.set_xlabel("predicted")
                ax.set_ylabel("true")
                if r["task"] == "binary-class":
                    fpr, tpr, _ = roc_curve(y, s[:, -1])
                else:  # micro-average over one-vs-rest
                    fpr, tpr, _ = roc_curve(np.eye(k)[y].ravel(), s.ravel())
            ax.set_title(f"{row_names[r['config_id']]} (seed {r['seed']})", fontsize=8)
            ax_roc.plot(fpr, tpr, label=row_names[r["config_id"]])
        ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
        ax_roc.set_xlabel("false positive rate")
        ax_roc.set_ylabel("true positive rate")
        ax_roc.set_title(f"{ds}: test ROC (first seed)", fontsize=9)
        ax_roc.legend(fontsize=7)
        cm_parts.append(f"<h3>{html.escape(str(ds))}</h3>" + _png(fig_cm))
        roc_parts.append(_png(fig_roc))
    return "".join(cm_parts), "".join(roc_parts)


def cases_section(board: Board) -> str:
    """Segmentation: the distribution of per-case Dice per model (first seed)."""

    runs = board.runs[board.runs["kind"] == "segmentation"]
    parts = []
    for ds, g in (
        runs.sort_values("seed").groupby(["dataset", "config_id"]).head(1).groupby("dataset")
    ):
        data, names = [], []
        for _, r in g.iterrows():
            path = Path(r["_dir"]) / "predictions_test.csv" if r["_dir"] else None
            if path is None or not path.exists():
                continue
            import torch

            dice, _ = dice_iou_from_overlaps(torch.as_tensor(read_overlaps(path)[1]))
            case = dice.nanmean(1).numpy()
            data.append(case[~np.isnan(case)])
            names.append(str(r["model"]))
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(data)), 3))
        ax.boxplot(data)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=7)
        ax.set_ylabel("per-case Dice")
        ax.set_title(f"{ds}: per-case Dice (first seed)", fontsize=9)
        parts.append(_png(fig))
    return "".join(parts)


def runs_table(records: list[RunRecord]) -> str:
    rows = []
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
    return _table(
        pd.DataFrame(rows),
        left=("status", "run_id", "dataset", "model", "error"),
        row_class="status",
    )


def _section(title: str, render: Callable[[], str]) -> list[str]:
    try:
        body = render()
    except Exception as e:  # one broken section must not cost the whole report
        log.warning("report section %r not drawn: %s", title, e)
        body = _note(f"not drawn: {type(e).__name__}: {e}")
    return [f"<h2>{html.escape(title)}</h2>", body] if body else []


def build_report(runs_dir: str, out: str, title: str = "medbench report") -> Path:
    records, problems = RunStore(runs_dir).iter_records()
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">{len(records)} runs in {html.escape(str(runs_dir))}, '
        f"generated {now_iso()}</p>",
    ]
    counts = pd.Series([r.status for r in records], dtype=object).value_counts().to_dict()
    sections.append("<p>" + ", ".join(f"{v} {k}" for k, v in counts.items()) + "</p>")
    if problems:
        sections.append(
            "<p class='failed'>Unreadable records: " + html.escape("; ".join(problems)) + "</p>"
        )
    board = board_from_records(records, n_boot=BOOTSTRAP_RESAMPLES)
    if not board.empty:
        cm, roc = "", ""
        try:
            cm, roc = prediction_plots(board)
        except Exception as e:
            log.warning("confusion matrices not drawn: %s", e)
        sections += _section("Leaderboard", lambda: leaderboard_section(board))
        sections += _section("Ranks across datasets", lambda: stats_section(board))
        sections += _section("Learning curves", lambda: curves_section(board))
        sections += _section("Accuracy vs cost", lambda: cost_section(board))
        sections += _section("Per-run spread", lambda: spread_section(board))
        sections += _section("Data efficiency", lambda: fraction_section(board))
        sections += _section("Calibration (reliability)", lambda: calibration_section(board))
        sections += _section("Selective prediction", lambda: selective_section(board))
        sections += _section("Robustness", lambda: robustness_section(records))
        sections += _section("Per-case Dice", lambda: cases_section(board))
        sections += _section("Confusion matrices", lambda: cm)
        sections += _section("ROC curves", lambda: roc)
        explain = sorted(Path(runs_dir).glob("*/explain/*.png"))
        if explain:
            sections.append("<h2>Grad-CAM explanations</h2>")
            for p in explain:
                data = base64.b64encode(p.read_bytes()).decode()
                sections.append(
                    f"<h3>{html.escape(p.parent.parent.name)}</h3>"
                    f'<img alt="gradcam" src="data:image/png;base64,{data}">'
                )
    elif records:
        sections.append(_note("no finished runs yet: nothing to rank"))
    sections += ["<h2>Runs</h2>", runs_table(records)] if records else []
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = Path(out)
    atomic_write_text(path, page)
    return path


def run(args) -> int:
    """The body of ``bench-report`` (its options: :mod:`bench.commands.report`)."""
    if not Path(args.runs_dir).is_dir():
        raise ConfigError(f"run store {args.runs_dir} does not exist; run bench-train first")
    path = build_report(args.runs_dir, args.out, args.title)
    print(f"wrote {path.resolve()}")
    return 0
