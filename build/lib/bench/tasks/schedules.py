"""Learning-rate schedules expressed in fractions of the run, so shortened runs keep their shape."""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR


def multistep_at_fractions(
    optimizer: Optimizer,
    max_epochs: int,
    fractions: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LRScheduler:
    """MedMNIST's recipe: multiply the LR by ``gamma`` at 50% and 75% of the epochs."""
    milestones = sorted({max(1, int(round(f * max_epochs))) for f in fractions})
    return MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
