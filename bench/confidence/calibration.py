"""Temperature scaling (Guo et al. 2017) fitted on validation outputs, applied to test outputs,
and the reliability-diagram bins.

Saved probabilities are enough: for softmax outputs ``log p`` equals the logits up to a constant
per sample, which softmax ignores, so ``softmax(log p / T)`` is ``softmax(logits / T)``; for
sigmoid outputs (multi-label) the logits are ``log(p / (1 - p))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.metrics import classification_metrics, scores_from_logits

EPS = 1e-7


def logits_from_scores(score: np.ndarray, task: str) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(score), dtype=torch.float64).clamp(EPS, 1 - EPS)
    return torch.log(p / (1 - p)) if task == "multi-label" else torch.log(p)


def _nll(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "multi-label":
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y.double())
    return torch.nn.functional.cross_entropy(logits, y.long().reshape(-1))


def fit_temperature(score: np.ndarray, y: np.ndarray, task: str) -> float:
    """The temperature that minimises the NLL of ``score`` (validation outputs), by L-BFGS on
    ``log T`` (so T stays positive)."""
    logits = logits_from_scores(score, task)
    target = torch.as_tensor(np.asarray(y))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _nll(logits / log_t.exp(), target, task)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if np.isfinite(t) else 1.0


def apply_temperature(score: np.ndarray, t: float, task: str) -> np.ndarray:
    return scores_from_logits(logits_from_scores(score, task) / t, task).numpy()


@dataclass
class CalibrationResult:
    temperature: float
    val_nll_before: float
    val_nll_after: float
    val_ece_before: float
    val_ece_after: float
    test: dict[str, float]  # ece/brier/nll after scaling (as ece_ts, brier_ts, nll_ts)


def temperature_scale(
    val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], task: str
) -> CalibrationResult:
    """Fit T on ``val`` = (y, score), apply to ``test``; metrics before and after."""
    (yv, sv), (yt, st) = val, test
    t = fit_temperature(sv, yv, task)
    names = ("ece", "brier", "nll")
    before = classification_metrics(yv, sv, task, names)
    after = classification_metrics(yv, apply_temperature(sv, t, task), task, names)
    test_after = classification_metrics(yt, apply_temperature(st, t, task), task, names)
    return CalibrationResult(
        temperature=t,
        val_nll_before=before["nll"],
        val_nll_after=after["nll"],
        val_ece_before=before["ece"],
        val_ece_after=after["ece"],
        test={f"{k}_ts": v for k, v in test_after.items()},
    )


def confidence_and_correct(y: np.ndarray, score: np.ndarray, task: str):
    """Top-label confidence and correctness per sample (per sample-label for multi-label)."""
    score = np.asarray(score, dtype=np.float64)
    if task == "multi-label":
        pred = score > 0.5
        conf = np.where(pred, score, 1 - score).ravel()
        correct = (pred == (np.asarray(y).reshape(score.shape) > 0.5)).ravel()
        return conf, correct
    y = np.asarray(y).reshape(-1)
    if task == "binary-class":
        pred = (score[:, -1] > 0.5).astype(int)
        conf = np.where(pred == 1, score[:, -1], 1 - score[:, -1])
    else:
        pred = score.argmax(1)
        conf = score.max(1)
    return conf, pred == y


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15):
    """Per equal-width confidence bin: (mean confidence, accuracy, count)."""
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        m = idx == b
        if m.any():
            out.append((float(conf[m].mean()), float(correct[m].mean()), int(m.sum())))
    return out
