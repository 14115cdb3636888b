"""Lightning callbacks the harness always uses."""

from __future__ import annotations

import lightning as L
import torch


class EpochSeed(L.Callback):
    """Reseed torch at each epoch start from (seed, epoch).

    Dropout and augmentation then depend only on the epoch, so a run resumed from an epoch-end
    checkpoint reproduces the uninterrupted run's numbers on CPU.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(self.seed * 1_000_003 + trainer.current_epoch)
