"""Selective prediction: how the error falls when the least confident cases are referred to a
human. Risk-coverage curve and its area (AURC, Geifman & El-Yaniv 2017; lower is better)."""

from __future__ import annotations

import numpy as np


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk): keeping the k most confident samples, k = 1..n; risk = error rate."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    errors = 1.0 - np.asarray(correct, dtype=np.float64)[order]
    k = np.arange(1, len(order) + 1)
    return k / len(order), np.cumsum(errors) / k


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean of the risks over all coverages."""
    _, risk = risk_coverage(confidence, correct)
    return float(risk.mean()) if len(risk) else float("nan")
