"""Bootstrap confidence intervals and paired tests on saved per-sample predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from bench.metrics import classification_metrics


def read_predictions(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, target (N,) or (N,L), score (N,C)) from a ``predictions_*.csv``."""
    df = pd.read_csv(path).sort_values("index")
    tcols = (
        ["target"]
        if "target" in df
        else sorted((c for c in df if c.startswith("target_")), key=lambda c: int(c.split("_")[1]))
    )
    scols = sorted((c for c in df if c.startswith("score_")), key=lambda c: int(c.split("_")[1]))
    target = df[tcols].to_numpy()
    if target.shape[1] == 1 and tcols == ["target"]:
        target = target[:, 0]
    return df["index"].to_numpy(), target, df[scols].to_numpy(dtype=np.float32)


def metric_fn(task: str, metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return lambda y, s: classification_metrics(y, s, task, (metric,))[metric]


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    runs: Sequence[tuple[np.ndarray, np.ndarray]],
    fn: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap over test samples, pooled over seeds.

    ``runs`` holds one (targets, scores) pair per seed, all on the same test samples in the same
    order. Each resample draws one set of sample indices, scores every seed on it and averages
    over seeds, so the interval is for the seed-mean metric. Returns (point, lo, hi).
    """
    n = len(runs[0][0])
    point = float(np.mean([fn(y, s) for y, s in runs]))
    stats = np.empty(n_boot)
    for b, idx in enumerate(_resample_indices(n, n_boot, seed)):
        stats[b] = np.mean([fn(y[idx], s[idx]) for y, s in runs])
    stats = stats[np.isfinite(stats)]
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(lo), float(hi)


def paired_bootstrap(
    runs_a: Sequence[tuple[np.ndarray, np.ndarray]],
    runs_b: Sequence[tuple[np.ndarray, np.ndarray]],
    fn: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Seed-mean metric difference A - B and its two-sided paired-bootstrap p-value."""
    n = len(runs_a[0][0])
    if any(len(y) != n for y, _ in [*runs_a, *runs_b]):
        raise ValueError("paired comparison needs both models scored on the same test samples")

    def seed_mean(runs, idx):
        return np.mean([fn(y[idx], s[idx]) for y, s in runs])

    full = np.arange(n)
    diff = seed_mean(runs_a, full) - seed_mean(runs_b, full)
    diffs = np.array(
        [
            seed_mean(runs_a, idx) - seed_mean(runs_b, idx)
            for idx in _resample_indices(n, n_boot, seed)
        ]
    )
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return float(diff), float(min(1.0, max(p, 1 / n_boot)))
