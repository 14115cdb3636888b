"""Throughput of the training part of each epoch (data feeding + compute, validation excluded)."""

from __future__ import annotations

import time

import lightning as L


class ThroughputTimer(L.Callback):
    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += int(batch[0].shape[0])

    def _stop(self) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self._stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop()

    @property
    def samples_per_sec(self) -> float | None:
        return round(self.samples / self.seconds, 2) if self.seconds > 0 else None
