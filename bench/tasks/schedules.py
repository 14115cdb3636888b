"""Learning-rate schedules expressed in fractions of the run, so shortened runs keep their shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def optimizer_and_schedule(
    optimizer_factory: Callable[..., Optimizer],
    scheduler_factory: Callable[..., LRScheduler] | None,
    params,
    max_epochs: int,
):
    """What ``configure_optimizers`` returns: the optimiser over ``params`` and, when there is a
    schedule, its per-epoch scheduler built for the run's length (``max_epochs`` <= 0: 1)."""
    optimizer = optimizer_factory(params)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer, max_epochs=max_epochs if max_epochs > 0 else 1)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
