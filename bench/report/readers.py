"""Readers of a run folder for the report: curves, per-sample predictions, per-case overlaps,
saved segmentation cases and Grad-CAM maps (file names from :class:`bench.records.RunFiles`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.board import Board
from bench.records import RunFiles
from bench.stats import read_overlaps, read_predictions

CASES_FILE = "test_cases.npz"


def _files(run_dir) -> RunFiles | None:
    return RunFiles(Path(run_dir)) if run_dir else None


def history(run_dir) -> pd.DataFrame | None:
    """The run's per-epoch curves, or None."""
    files = _files(run_dir)
    return pd.read_csv(files.history) if files and files.history.exists() else None


def predictions(run_dir, split: str = "test"):
    """``(index, y, scores)`` of the run's per-sample predictions, or None."""
    files = _files(run_dir)
    path = files.predictions(split) if files else None
    return read_predictions(path) if path is not None and path.exists() else None


def overlaps(run_dir) -> np.ndarray | None:
    """Per-case overlap counts of a segmentation run's test split, or None."""
    files = _files(run_dir)
    path = files.predictions("test") if files else None
    return read_overlaps(path)[1] if path is not None and path.exists() else None


def saved_cases(run_dir) -> dict | None:
    """The best and worst test case a segmentation run saved, or None."""
    path = Path(run_dir) / CASES_FILE if run_dir else None
    if path is None or not path.exists():
        return None
    with np.load(path) as z:
        cases = {k: z[k] for k in z.files}
    return cases if "best_image" in cases else None


def explain_maps(run_dir) -> list[Path]:
    """Grad-CAM grids ``bench-explain`` wrote for the run."""
    files = _files(run_dir)
    return sorted(files.explain.glob("*.png")) if files else []


def classification_runs(board: Board) -> pd.DataFrame:
    """The board's classification runs that have test predictions."""
    runs = board.runs[board.runs["kind"] == "classification"]
    has = [bool(d) and RunFiles(Path(d)).predictions("test").exists() for d in runs["_dir"]]
    return runs.loc[pd.Series(has, index=runs.index, dtype=bool)]
