"""A self-contained HTML dashboard from run records (plots embedded as PNG, no network needed).

bench-report --runs-dir runs --out report.html
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.io import atomic_write_text  # noqa: E402
from bench.leaderboard import aggregate, rank, records_frame  # noqa: E402
from bench.records import RunStore, now_iso  # noqa: E402
from bench.stats import read_predictions  # noqa: E402

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.done{color:#070}.failed{color:#b00}.skipped,.running{color:#a60}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}.muted{color:#777}
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
            text = f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)
            cells.append(f'<td class="{"l" if c in left else ""}">{html.escape(text)}</td>')
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Boolean mask of points no other point beats on both lower cost and higher score."""
    keep = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (
            (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        )
        keep[i] = not dominated.any()
    return keep


def _leaderboard_section(board: pd.DataFrame) -> str:
    parts = []
    for ds, g in board.groupby("dataset"):
        metric = (
            "test_dice"
            if "test_dice_mean" in g and g["test_dice_mean"].notna().any()
            else "test_auc"
        )
        show = pd.DataFrame(
            {
                "rank": g["rank"],
                "model": g["model"],
                "scheme": g["scheme"],
                "epochs": g["epochs"],
                "seeds": g["n_seeds"],
            }
        )
        for m in (metric, "test_acc", "test_f1", "test_ece"):
            if f"{m}_mean" in g and g[f"{m}_mean"].notna().any():
                show[m.removeprefix("test_") + " (mean ± std)"] = [
                    f"{a:.4f} ± {b:.4f}" if b == b else f"{a:.4f}"
                    for a, b in zip(g[f"{m}_mean"], g[f"{m}_std"], strict=True)
                ]
        if f"{metric}_ci95_lo" in g:
            show["95% CI"] = [
                f"[{lo:.3f}, {hi:.3f}]" if lo == lo else ""
                for lo, hi in zip(g[f"{metric}_ci95_lo"], g[f"{metric}_ci95_hi"], strict=True)
            ]
        show["params (M)"] = g["param_count_m"].round(2)
        show["train s"] = g["train_time_s"].round(1)
        parts.append(f"<h3>{html.escape(str(ds))}</h3>" + _table(show, left=("model", "scheme")))
    return "".join(parts)


def _curves_section(df: pd.DataFrame) -> str:
    parts = []
    for ds, g in df.groupby("dataset"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        for _, r in g.iterrows():
            path = Path(r["_dir"]) / "history.csv"
            if not path.exists():
                continue
            h = pd.read_csv(path)
            label = f"{r['model']} s{r['seed']}"
            if "train_loss" in h:
                axes[0].plot(h["epoch"], h["train_loss"], marker=".", label=label)
            metric = "val_auc" if "val_auc" in h else "val_dice" if "val_dice" in h else None
            if metric:
                axes[1].plot(h["epoch"], h[metric], marker=".", label=label)
                axes[1].set_ylabel(metric)
        axes[0].set_ylabel("train loss")
        for a in axes:
            a.set_xlabel("epoch")
        axes[1].legend(fontsize=6, ncol=2)
        fig.suptitle(str(ds))
        parts.append(_png(fig))
    return "".join(parts)


def _cost_section(board: pd.DataFrame) -> str:
    parts = []
    for ds, g in board.groupby("dataset"):
        metric = "test_auc_mean" if g["test_auc_mean"].notna().any() else "test_dice_mean"
        if metric not in g:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        for ax, col, label in zip(
            axes,
            ("param_count_m", "gmacs", "train_time_s"),
            ("params (M)", "GMACs", "train time (s)"),
            strict=True,
        ):
            d = g[[col, metric, "model"]].dropna()
            if d.empty:
                continue
            front = pareto_front(d[col].to_numpy(float), d[metric].to_numpy(float))
            ax.scatter(d[col], d[metric], c=np.where(front, "tab:red", "tab:blue"))
            for _, r in d.iterrows():
                ax.annotate(r["model"], (r[col], r[metric]), fontsize=7)
            pf = d[front].sort_values(col)
            ax.plot(pf[col], pf[metric], "r--", lw=1, label="Pareto front")
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(metric.removesuffix("_mean"))
            ax.legend(fontsize=7)
        fig.suptitle(f"{ds}: accuracy vs cost")
        parts.append(_png(fig))
    return "".join(parts)


def _prediction_plots(df: pd.DataFrame, label_names: dict[str, list[str]]) -> tuple[str, str]:
    from sklearn.metrics import confusion_matrix, roc_curve

    cm_parts, roc_parts = [], []
    for ds, g in df.groupby("dataset"):
        first = g.sort_values("seed").groupby("model").head(1)
        first = first[[Path(d, "predictions_test.csv").exists() for d in first["_dir"]]]
        if first.empty:
            continue
        n = len(first)
        fig_cm, axes_cm = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False)
        fig_roc, ax_roc = plt.subplots(figsize=(4.5, 4))
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
                names = label_names.get(ds, [str(i) for i in range(k)])
                ax.set_xticks(range(k), names[:k], rotation=45, fontsize=6, ha="right")
                ax.set_yticks(range(k), names[:k], fontsize=6)
                ax.set_xlabel("predicted")
                ax.set_ylabel("true")
                if r["task"] == "binary-class":
                    fpr, tpr, _ = roc_curve(y, s[:, -1])
                else:  # micro-average over one-vs-rest
                    fpr, tpr, _ = roc_curve(np.eye(k)[y].ravel(), s.ravel())
            ax.set_title(f"{r['model']} (seed {r['seed']})", fontsize=8)
            ax_roc.plot(fpr, tpr, label=str(r["model"]))
        ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
        ax_roc.set_xlabel("false positive rate")
        ax_roc.set_ylabel("true positive rate")
        ax_roc.set_title(f"{ds}: test ROC (first seed)", fontsize=9)
        ax_roc.legend(fontsize=7)
        cm_parts.append(f"<h3>{html.escape(str(ds))}</h3>" + _png(fig_cm))
        roc_parts.append(_png(fig_roc))
    return "".join(cm_parts), "".join(roc_parts)


def _spread_section(df: pd.DataFrame) -> str:
    parts = []
    for ds, g in df.groupby("dataset"):
        metric = "test_auc" if "test_auc" in g and g["test_auc"].notna().any() else "test_dice"
        if metric not in g:
            continue
        models = sorted(g["model"].unique())
        fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(models)), 3))
        for i, m in enumerate(models):
            v = g[g.model == m][metric].to_numpy(float)
            ax.scatter(np.full(len(v), i) + np.linspace(-0.1, 0.1, len(v)), v)
            ax.hlines(v.mean(), i - 0.25, i + 0.25, color="k")
        ax.set_xticks(range(len(models)), models, rotation=30, fontsize=7)
        ax.set_ylabel(metric)
        ax.set_title(f"{ds}: per-seed spread", fontsize=9)
        parts.append(_png(fig))
    return "".join(parts)


def _runs_table(records: list[dict]) -> str:
    rows = []
    for r in sorted(
        records, key=lambda r: (str(r.get("dataset")), str(r.get("model")), str(r.get("seed")))
    ):
        test = r.get("test") or {}
        rows.append(
            {
                "status": r.get("status"),
                "run_id": r.get("run_id"),
                "dataset": r.get("dataset"),
                "model": r.get("model"),
                "seed": r.get("seed"),
                "test auc/dice": test.get("auc", test.get("dice")),
                "train s": (r.get("cost") or {}).get("train_time_s"),
                "error": r.get("error") or "",
            }
        )
    return _table(
        pd.DataFrame(rows),
        left=("status", "run_id", "dataset", "model", "error"),
        row_class="status",
    )


def build_report(runs_dir: str, out: str, title: str = "medbench report") -> Path:
    records, problems = RunStore(runs_dir).iter_records()
    df = records_frame(records)
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">{len(records)} runs in {html.escape(str(runs_dir))}, '
        f"generated {now_iso()}</p>",
    ]
    counts = pd.Series([r.get("status") for r in records]).value_counts().to_dict()
    sections.append("<p>" + ", ".join(f"{v} {k}" for k, v in counts.items()) + "</p>")
    if problems:
        sections.append(
            "<p class='failed'>Unreadable records: " + html.escape("; ".join(problems)) + "</p>"
        )
    if not df.empty:
        board = rank(aggregate(df, ci_metrics=["auc"], n_boot=300))
        labels = {r.get("dataset"): (r.get("spec") or {}).get("label_names") for r in records}
        cm, roc = _prediction_plots(df, {k: v for k, v in labels.items() if v})
        sections += [
            "<h2>Leaderboard</h2>",
            _leaderboard_section(board),
            "<h2>Learning curves</h2>",
            _curves_section(df),
            "<h2>Accuracy vs cost</h2>",
            _cost_section(board),
            "<h2>Per-seed spread</h2>",
            _spread_section(df),
            "<h2>Confusion matrices</h2>",
            cm,
            "<h2>ROC curves</h2>",
            roc,
        ]
        explain = sorted(Path(runs_dir).glob("*/explain/*.png"))
        if explain:
            sections.append("<h2>Grad-CAM explanations</h2>")
            for p in explain:
                data = base64.b64encode(p.read_bytes()).decode()
                sections.append(
                    f"<h3>{html.escape(p.parent.parent.name)}</h3>"
                    f'<img alt="gradcam" src="data:image/png;base64,{data}">'
                )
    sections += ["<h2>Runs</h2>", _runs_table(records)]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = Path(out)
    atomic_write_text(path, page)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench-report", description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--out", default="report.html")
    p.add_argument("--title", default="medbench report")
    args = p.parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        print(
            f"error: run store {args.runs_dir} does not exist; run bench-train first",
            file=sys.stderr,
        )
        return 2
    path = build_report(args.runs_dir, args.out, args.title)
    print(f"wrote {path.resolve()}")
    return 0


def cli() -> None:
    sys.exit(main())
