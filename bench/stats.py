"""Statistics on saved per-sample outputs and on leaderboard tables.

- bootstrap confidence intervals over test samples (cases for segmentation), pooled over seeds;
- paired bootstrap tests between two rows, every pair of rows with Holm's correction;
- Friedman's test over datasets with the Nemenyi post-hoc test and a critical-difference
  diagram (scipy, scikit-posthocs);
- and the arithmetic that says when a test *cannot* reach significance with the data given
  (then it is not run, and a one-line note says why).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics import classification_metrics, segmentation_metrics_from_overlaps
from bench.toolkit import BOOTSTRAP_RESAMPLES

Arrays = tuple[np.ndarray, ...]


# -- per-sample outputs -----------------------------------------------------------------------
def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, target (N,) or (N,L), score (N,C)) from a classification ``predictions_*.csv``."""
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


def read_overlaps(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(index, overlaps (N, C-1, 3)) from a segmentation ``predictions_*.csv`` (per case)."""
    df = pd.read_csv(path).sort_values("index")
    classes = sorted({int(c.split("_")[1]) for c in df if c.startswith("inter_")})
    ov = np.stack(
        [df[[f"inter_{c}", f"pred_{c}", f"true_{c}"]].to_numpy(np.float64) for c in classes],
        axis=1,
    )
    return df["index"].to_numpy(), ov


def read_surface(path: str | Path) -> np.ndarray | None:
    """Per-case HD95 and surface Dice (N, C-1, 2) from a segmentation ``predictions_*.csv``;
    None when the file has none (validation, older runs)."""
    df = pd.read_csv(path).sort_values("index")
    classes = sorted({int(c.split("_")[1]) for c in df if c.startswith("hd95_")})
    if not classes:
        return None
    return np.stack([df[[f"hd95_{c}", f"nsd_{c}"]].to_numpy(np.float64) for c in classes], axis=1)


def read_outputs(path: str | Path, kind: str) -> Arrays:
    """The arrays a metric function takes: (target, score), or (overlaps,) and, where the
    file has them, (overlaps, surface)."""
    if kind == "segmentation":
        surface = read_surface(path)
        ov = read_overlaps(path)[1]
        return (ov,) if surface is None else (ov, surface)
    _, y, s = read_predictions(path)
    return y, s


def metric_fn(kind_or_task: str, metric: str, task: str | None = None) -> Callable[..., float]:
    """``fn(*arrays) -> float`` for one metric: ``fn(y, s)`` for classification tasks (pass
    the task name), ``fn(overlaps)`` for ``segmentation``. AUC and ACC of single-label tasks
    also get ``fn.batch(y, s, idx)``: the metric on every resample ``idx`` (B, N) at once."""
    if kind_or_task == "segmentation":
        return lambda ov, surface=None: segmentation_metrics_from_overlaps(ov, None, surface)[
            metric
        ]
    task = task or kind_or_task

    def fn(y, s):
        return classification_metrics(y, s, task, (metric,))[metric]

    if task != "multi-label" and metric in ("auc", "acc"):
        fn.batch = lambda y, s, idx: batch_metric(y, s, idx, task, metric)
    return fn


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC per row (ties count one half), NaN where a row lacks a class."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(1)
    n_neg = positive.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        u = (ranks * positive).sum(1) - n_pos * (n_pos + 1) / 2
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def batch_metric(y, s, idx: np.ndarray, task: str, metric: str) -> np.ndarray:
    """AUC or ACC (MedMNIST's definitions, as :func:`classification_metrics`) on every row of
    resample indices ``idx`` (B, N) at once; NaN where the metric is undefined."""
    y = np.asarray(y).reshape(-1).astype(np.int64)
    s = np.asarray(s, dtype=np.float64)
    yb, sb = y[idx], s[idx]  # (B, N), (B, N, C)
    if metric == "acc":
        pred = (sb[..., -1] > 0.5).astype(np.int64) if task == "binary-class" else sb.argmax(-1)
        return (pred == yb).mean(1)
    if task == "binary-class":
        auc = _rank_auc(sb[..., -1], yb == 1)
        return np.where(_n_present(yb, 2) >= 2, auc, np.nan)
    k = s.shape[1]
    per_class = np.stack([_rank_auc(sb[..., c], yb == c) for c in range(k)], axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as intended
        mean = np.nanmean(per_class, axis=1)
    return np.where(_n_present(yb, k) >= 2, mean, np.nan)


def _n_present(yb: np.ndarray, k: int) -> np.ndarray:
    return np.stack([(yb == c).any(1) for c in range(k)], axis=1).sum(1)


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    runs: Sequence[Arrays],
    fn: Callable[..., float],
    n_boot: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap over test samples, pooled over seeds.

    ``runs`` holds one tuple of per-sample arrays per seed, all on the same test samples in
    the same order. Each resample draws one set of sample indices, scores every seed on it and
    averages over seeds, so the interval is for the seed-mean metric. Returns (point, lo, hi).
    """
    n = len(runs[0][0])
    point = float(np.mean([fn(*arrays) for arrays in runs]))
    indices = _resample_indices(n, n_boot, seed)
    batch = getattr(fn, "batch", None)
    if batch is not None and n_boot:  # every resample at once (the same numbers, vectorised)
        stats = np.mean([batch(*arrays, indices) for arrays in runs], axis=0)
    else:
        stats = np.empty(n_boot)
        for b, idx in enumerate(indices):
            stats[b] = np.mean([fn(*(a[idx] for a in arrays)) for arrays in runs])
    stats = stats[np.isfinite(stats)]
    if not len(stats):  # no resamples, or a metric undefined on every one
        return point, float("nan"), float("nan")
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(lo), float(hi)


def paired_bootstrap(
    runs_a: Sequence[Arrays],
    runs_b: Sequence[Arrays],
    fn: Callable[..., float],
    n_boot: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Seed-mean metric difference A - B and its two-sided paired-bootstrap p-value."""
    n = len(runs_a[0][0])
    if any(len(arrays[0]) != n for arrays in [*runs_a, *runs_b]):
        raise ValueError("paired comparison needs both models scored on the same test samples")

    def seed_mean(runs, idx):
        return np.mean([fn(*(a[idx] for a in arrays)) for arrays in runs])

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


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (statsmodels' ``multipletests``)."""
    from statsmodels.stats.multitest import multipletests

    if len(pvalues) == 0:
        return np.array([])
    return multipletests(np.asarray(pvalues, float), method="holm")[1]


# -- can a test reach significance? -----------------------------------------------------------
def wilcoxon_min_p(n: int) -> float:
    """Smallest two-sided exact p of a Wilcoxon signed-rank test on ``n`` pairs: 2 / 2**n."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def friedman_min_p(n_datasets: int, k_models: int) -> float:
    """Smallest p of Friedman's chi-square test: every dataset ranks the models alike."""
    from scipy.stats import chi2

    if n_datasets < 1 or k_models < 2:
        return 1.0
    return float(chi2.sf(n_datasets * (k_models - 1), k_models - 1))


@dataclass
class RankTest:
    """Friedman + Nemenyi over datasets: mean ranks, p-values, or a note why not run."""

    metric: str
    ran: bool = False
    note: str = ""
    friedman_p: float | None = None
    statistic: float | None = None
    # the smallest p Friedman's test can give at this many datasets and models
    min_p: float | None = None
    ranks: pd.Series = field(default_factory=pd.Series)
    nemenyi: pd.DataFrame = field(default_factory=pd.DataFrame)
    matrix: pd.DataFrame = field(default_factory=pd.DataFrame)


def friedman_nemenyi(
    matrix: pd.DataFrame,
    metric: str,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    always: bool = False,
) -> RankTest:
    """Friedman's test over ``matrix`` (datasets x models, complete), Nemenyi post-hoc.

    Not run (with a note) for fewer than 2 datasets or 3 models, or when even perfect agreement
    between datasets could not reach ``alpha`` -- unless ``always``: then it runs and the note
    says that no difference can be significant at this many datasets.
    """
    from scipy.stats import friedmanchisquare

    out = RankTest(metric=metric, matrix=matrix)
    per_dataset = matrix.notna().sum(axis=1)
    matrix = matrix.dropna(axis=0, how="any")
    n, k = matrix.shape
    if n < 2 or k < 3:
        have = ", ".join(f"{ds}: {int(c)}" for ds, c in per_dataset.items())
        out.note = (
            f"Friedman/Nemenyi not run: needs >= 2 datasets on which the same >= 3 models all "
            f"have {metric}; the store has {len(per_dataset)} dataset(s) (models with {metric}: "
            f"{have or 'none'})"
        )
        return out
    floor = friedman_min_p(n, k)
    out.min_p = floor
    if floor >= alpha and not always:
        out.note = (
            f"Friedman not run: with {n} datasets x {k} models the smallest possible p is "
            f"{floor:.3f} >= {alpha}; add datasets"
        )
        return out
    import scikit_posthocs as sp

    stat, p = friedmanchisquare(*[matrix[c].to_numpy() for c in matrix.columns])
    ranks = matrix.rank(axis=1, ascending=not higher_is_better).mean()
    out.ran, out.friedman_p, out.statistic = True, float(p), float(stat)
    out.ranks = ranks.sort_values()
    values = matrix.to_numpy() if higher_is_better else -matrix.to_numpy()
    out.nemenyi = sp.posthoc_nemenyi_friedman(pd.DataFrame(values, columns=matrix.columns))
    out.note = (
        f"Friedman chi2 = {stat:.3f}, p = {p:.4f} over {n} datasets x {k} models; "
        f"Nemenyi post-hoc p-values in nemenyi.csv"
    )
    if floor >= alpha:
        out.note += (
            f" (with {n} datasets x {k} models the smallest possible p is {floor:.3f} >= "
            f"{alpha}: no difference can be significant until more datasets are added)"
        )
    return out


def cd_diagram(test: RankTest, path: Path) -> Path | None:
    """A critical-difference diagram (scikit-posthocs) of a :class:`RankTest` that ran."""
    if not test.ran:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(7, 2 + 0.15 * len(test.ranks)))
    sp.critical_difference_diagram(test.ranks, test.nemenyi, ax=ax)
    ax.set_title(f"mean rank by {test.metric} (Friedman p = {test.friedman_p:.3g})", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def paired_wilcoxon_holm(
    values: pd.DataFrame, alpha: float = 0.05, higher_is_better: bool = True
) -> pd.DataFrame:
    """Every pair of models compared on matched (data set, seed) cells, as MedMNIST+ does:
    ``values`` has one row per cell (index) and one column per model; a pair uses the cells
    both have. Wilcoxon's signed-rank test (exact, two-sided; scipy), Holm-corrected over the
    pairs. Columns: a, b, n_pairs, mean_diff (a - b), wins_a, statistic, p, p_holm,
    significant, min_possible_p (2 / 2**n: below ``alpha`` only from 6 pairs on)."""
    from scipy.stats import wilcoxon

    rows = []
    models = list(values.columns)
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            both = values[[a, b]].dropna()
            diff = (both[a] - both[b]).to_numpy(float)
            if not higher_is_better:
                diff = -diff
            n = len(diff)
            if n == 0 or not np.any(diff):
                stat, p = float("nan"), 1.0
            else:
                res = wilcoxon(diff, alternative="two-sided", method="auto", zero_method="wilcox")
                stat, p = float(res.statistic), float(res.pvalue)
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "n_pairs": n,
                    "mean_diff": float(diff.mean()) if n else float("nan"),
                    "wins_a": int((diff > 0).sum()),
                    "statistic": stat,
                    "p": p,
                    "min_possible_p": wilcoxon_min_p(n),
                }
            )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    return out
