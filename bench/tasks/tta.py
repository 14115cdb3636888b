"""Test-time augmentation maths: the flipped views of an input and the average of their
probabilities. Used by the tasks' final evaluation (``eval.tta``) and by ``bench-tta``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.errors import ConfigError

TTA_MODES = ("none", "identity", "flips")


def views(mode: str, spatial_dims: int) -> list[tuple[int, ...]]:
    """The spatial axes flipped by each view (``()`` is the image itself)."""
    if mode == "identity":
        return [()]
    if mode == "flips":
        last = [-1, -2, -3][:spatial_dims]
        if spatial_dims == 2:
            return [(), (-1,), (-2,), (-1, -2)]
        return [(), *[(a,) for a in last]]
    raise ConfigError(f"eval.tta={mode!r} is not one of: {', '.join(TTA_MODES)}")


def tta_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mode: str,
    task: str,
    spatial_dims: int,
) -> torch.Tensor:
    """Logits whose probabilities are the mean of the views' probabilities."""
    probs = []
    for axes in views(mode, spatial_dims):
        logits = forward(x.flip(axes) if axes else x).float()
        if task == "segmentation" and axes:
            logits = logits.flip(axes)  # back into the input's frame
        probs.append(torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, 1))
    p = torch.stack(probs).mean(0).clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p)) if task == "multi-label" else torch.log(p)
