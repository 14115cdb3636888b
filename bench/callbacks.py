"""Lightning callbacks the harness always uses."""

from __future__ import annotations

import lightning as L
import torch


def fit_validation_score(trainer: L.Trainer, monitor: str) -> float | None:
    """The monitored value of a training epoch's validation; None during the sanity check,
    outside ``fit`` (validate/test) or when the metric was not logged."""
    if trainer.sanity_checking or trainer.state.fn != "fit":
        return None
    value = trainer.callback_metrics.get(monitor)
    # the task computed its metrics on the host in one read: float() adds no device sync
    return None if value is None else float(value)


class EpochSeed(L.Callback):
    """Reseed torch at each epoch start from (seed, epoch).

    Dropout and augmentation then depend only on the epoch, so a run resumed from an epoch-end
    checkpoint reproduces the uninterrupted run's numbers on CPU.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(self.seed * 1_000_003 + trainer.current_epoch)
