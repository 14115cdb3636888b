"""Lightning callbacks the harness always uses, and the clock of its periodic saves."""

from __future__ import annotations

import time

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


# torch's seed of an epoch: dropout and augmentation draws depend on (seed, epoch) only
EPOCH_SEED_STRIDE = 1_000_003


def epoch_seed(seed: int, epoch: int) -> int:
    """The torch seed of ``epoch`` of a run seeded ``seed`` (a packed member's too)."""
    return seed * EPOCH_SEED_STRIDE + epoch


class EpochSeed(L.Callback):
    """Reseed torch at each epoch start from (seed, epoch).

    Dropout and augmentation then depend only on the epoch, so a run resumed from an epoch-end
    checkpoint reproduces the uninterrupted run's numbers on CPU.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch))


class SaveClock:
    """Due every ``every_minutes`` (0: always), counted from the start of the fit or the last
    save: the resume checkpoints of single and packed runs keep one schedule."""

    def __init__(self, every_minutes: float = 5.0) -> None:
        self.every_s = max(0.0, float(every_minutes) * 60)
        self._last = time.monotonic()

    def restart(self) -> None:
        self._last = time.monotonic()

    def due(self, trainer: L.Trainer) -> bool:
        """Whether a fit's validation end should save now (never in a fast_dev_run)."""
        return not trainer.fast_dev_run and time.monotonic() - self._last >= self.every_s
