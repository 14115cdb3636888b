"""Leaderboard files: CSV (flat, one row per configuration), Markdown, per dataset, per class,
comparison matrices, rank tests, and the provenance README of a published study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.io import atomic_write_text
from bench.records import RunRecord, git_sha, now_iso

INTERNAL = ("_first_run",)


def _fmt(board: pd.DataFrame) -> pd.DataFrame:
    return board.drop(columns=[c for c in INTERNAL if c in board])


def _num(v, spec: str = ".3f") -> str:
    try:
        return "" if v is None or v != v else format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


def mean_std(row, col: str) -> str:
    """``mean ± std`` of a leaderboard row's ``<col>_mean``/``_std`` (3 decimals; empty if NaN)."""
    mean, std = row.get(f"{col}_mean"), row.get(f"{col}_std")
    if mean is None or mean != mean:
        return ""
    return f"{mean:.3f} ± {std:.3f}" if std is not None and std == std else f"{mean:.3f}"


def _text(value) -> str:
    """A cell as text: empty for a missing value (legacy rows are read back from CSV, where an
    empty cell is NaN and an integer column with gaps is float), whole floats without ``.0``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def markdown(board: pd.DataFrame) -> str:
    """Compact Markdown per dataset: the row's identity, varying config, key metrics, cost."""
    varying = board.attrs.get("varying", [])
    out = []
    for ds, g in board.groupby("dataset", sort=True):
        metric = (
            g["rank_by"].dropna().iloc[0]
            if "rank_by" in g and g["rank_by"].notna().any()
            else "test_auc"
        )
        name = metric.removeprefix("test_")
        cols = [c for c in varying if c in g and g[c].notna().any()]
        seg = metric == "test_dice"
        header = [
            "rank",
            "model",
            "scheme",
            *cols,
            "epochs",
            "runs",
            f"{name} (mean ± std)",
            "95% CI",
        ]
        header += ["IoU", "Dice pooled"] if seg else ["ACC", "last-epoch AUC"]
        header += ["params (M)", "GMACs", "train min/run"]
        ref = "ref_note" in g and g["ref_note"].notna().any()
        if ref:
            header += ["paper AUC", "Δ AUC", "paper protocol"]
        out += [f"### {ds}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, r in g.iterrows():
            lo, hi = r.get(f"{metric}_ci95_lo"), r.get(f"{metric}_ci95_hi")
            runs = f"ens×{int(r['n_members'])}" if r.get("ensemble") else _text(r.get("n_runs"))
            cells = [
                _num(r.get("rank"), ".0f"),
                str(r["model"]) + (" †" if str(r.get("runs_in_repo")).lower() == "false" else ""),
                str(r["scheme"]),
                *[_text(r.get(c)) for c in cols],
                _text(r.get("epochs")),
                runs,
                mean_std(r, metric),
                f"[{lo:.3f}, {hi:.3f}]" if lo is not None and lo == lo else "",
            ]
            if seg:
                cells += [mean_std(r, "test_iou"), mean_std(r, "test_dice_pooled")]
            else:
                cells += [mean_std(r, "test_acc"), mean_std(r, "last_auc")]
            minutes = r.get("train_time_s")
            cells += [
                _num(r.get("param_count_m"), ".2f"),
                _num(r.get("gmacs"), ".3f"),
                _num(minutes / 60 if minutes is not None and minutes == minutes else None, ".1f"),
            ]
            if ref:
                d = r.get("delta_auc")
                cells += [
                    _num(r.get("ref_auc")),
                    f"{d:+.3f}" if d is not None and d == d else "",
                    _text(r.get("ref_note")),
                ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def per_class_frame(board: pd.DataFrame, records: dict[str, RunRecord]) -> pd.DataFrame:
    """Per class and row: precision, recall, specificity, F1 (mean ± std over runs), support."""
    rows = []
    for _, r in board.iterrows():
        if r.get("ensemble") or r.get("kind") != "classification":
            continue
        # legacy rows (their runs not in the repository) have no records here
        ids = [i for i in str(r["run_ids"]).split(";") if i in records]
        tables = [records[i].per_class.get("test") for i in ids]
        tables = [t for t in tables if t]
        if not tables:
            continue
        for c, entry in enumerate(tables[0]):
            row = {
                "dataset": r["dataset"],
                "model": r["model"],
                "scheme": r["scheme"],
                "config_id": r["config_id"],
                "class": entry["class"],
                "support": entry["support"],
                "n_runs": len(tables),
            }
            for m in ("precision", "recall", "specificity", "f1"):
                vals = np.array([t[c][m] for t in tables], dtype=float)
                row[f"{m}_mean"] = vals.mean()
                row[f"{m}_std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _compute_lines(board: pd.DataFrame, records: dict[str, RunRecord]) -> list[str]:
    """Wall time per run (record to record) summed per row and over the study."""
    if not records:
        return []
    ids = [
        i
        for ids in board.loc[~board["ensemble"].astype(bool), "run_ids"]
        for i in str(ids).split(";")
    ]
    here = [i for i in ids if i in records]
    walls = [records[i].cost.wall_time_s or 0.0 for i in here]
    devices = sorted({records[i].env.device or "?" for i in here})
    elsewhere = len(ids) - len(here)
    kept = (
        f"; {elsewhere} more run(s) were published earlier from a store not at hand "
        "(their cost is in their rows' `train min/run`)"
        if elsewhere
        else ""
    )
    return [
        f"- compute: {len(here)} runs, {sum(walls) / 3600:.2f} h of run wall time in total "
        f"(per row: the `train min/run` column) on {', '.join(devices)}{kept}",
    ]


def _trained_on(records: dict[str, RunRecord]) -> str:
    """The CPUs and thread counts the runs trained with, from their records: the page says where
    its numbers were measured, never where they happened to be aggregated."""
    seen = sorted(
        {
            f"{r.env.cpu}, {r.env.cpu_threads} thread{'s' if r.env.cpu_threads != 1 else ''}"
            for r in records.values()
            if r.env.cpu and r.env.cpu_threads
        }
    )
    return f" (trained on {'; '.join(seen)})" if seen else ""


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))
    return path


def write_outputs(board: pd.DataFrame, out_dir: Path, records: dict[str, RunRecord]) -> list[Path]:
    """``leaderboard.csv``/``.md``, ``by_dataset/<dataset>.csv``, ``per_class.csv``."""
    written = [write_csv(out_dir / "leaderboard.csv", _fmt(board))]
    atomic_write_text(out_dir / "leaderboard.md", markdown(board))
    written.append(out_dir / "leaderboard.md")
    for ds, g in board.groupby("dataset"):
        written.append(write_csv(out_dir / "by_dataset" / f"{ds}.csv", _fmt(g)))
    per_class = per_class_frame(board, records)
    if not per_class.empty:
        written.append(write_csv(out_dir / "per_class.csv", per_class))
    return written


def write_provenance(
    out_dir: Path,
    argv: list[str],
    board: pd.DataFrame,
    recipe: str | None = None,
    notes: list[str] | None = None,
    records: dict[str, RunRecord] | None = None,
    narrative: str | None = None,
) -> Path:
    """A README saying how the published tables were produced: command, commit, hardware, the
    compute per row and in total, and the study's own notes (``narrative``)."""

    def joined(col):
        return ";".join(sorted({str(v) for v in board.get(col, []) if v is not None and v == v}))

    text = [
        f"# {out_dir.name}",
        "",
        f"Produced {now_iso()} by `bench-leaderboard {' '.join(argv)}`.",
        "",
        *([f"Runs trained by: `{recipe}`", ""] if recipe else []),
        f"- commit(s) of the runs: {joined('git_sha') or 'unknown'}; "
        f"aggregated at commit {git_sha() or 'unknown'}",
        f"- hardware: {joined('device')}{_trained_on(records or {})}; torch {joined('torch')}",
        f"- epochs: {joined('epochs')}; runs per row: {joined('n_runs')}",
        "- CIs: percentile bootstrap over test samples (cases for segmentation), pooled over "
        "seeds (bench/stats.py); rows share rank 1 when their CI overlaps the leader's",
        *[f"- {n}" for n in notes or []],
        *_compute_lines(board, records or {}),
        "",
        *([narrative.strip(), ""] if narrative else []),
        "## Leaderboard",
        "",
        markdown(board),
    ]
    path = out_dir / "README.md"
    atomic_write_text(path, "\n".join(text))
    return path
