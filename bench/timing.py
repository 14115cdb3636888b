"""Training throughput and wall time per epoch (training + validation + checkpointing).

On a GPU the training part of each epoch is timed with CUDA events read once at the end of the
fit, so timing adds no host synchronisation to the epoch.
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch


class ThroughputTimer(L.Callback):
    """Samples/s of the training part of each epoch, and each epoch's whole wall time.

    An epoch's wall time runs from one ``on_train_epoch_start`` to the next (or to the end of
    training), so it holds validation, metric computation and checkpoint writes too: what a
    user waits for per epoch.
    """

    def __init__(self) -> None:
        self.epoch_seconds: dict[int, float] = {}  # epoch index -> wall seconds
        self._intervals: list[tuple] = []  # (start, end) perf_counter floats or CUDA events
        self._open = None
        self._epoch_samples = 0
        self._epoch_start: float | None = None
        self._epoch = 0
        self.test_samples = 0
        self.test_seconds = 0.0
        self._test_start: float | None = None
        # fit seconds of earlier segments of a resumed run (carried by last.ckpt)
        self.prior_fit_seconds = 0.0
        self._fit_start: float | None = None

    @staticmethod
    def _mark(pl_module):
        if pl_module.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    # -- state carried by the resume checkpoint: a resumed run reports its whole cost ----------
    def state_dict(self) -> dict:
        now = time.perf_counter()
        epochs = dict(self.epoch_seconds)
        if self._epoch_start is not None:  # saved at the end of validation: the epoch so far
            epochs[self._epoch] = now - self._epoch_start
        elapsed = now - self._fit_start if self._fit_start is not None else 0.0
        return {"epoch_seconds": epochs, "fit_seconds": self.prior_fit_seconds + elapsed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch_seconds = {int(k): float(v) for k, v in state_dict["epoch_seconds"].items()}
        self.prior_fit_seconds = float(state_dict["fit_seconds"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        self._close_epoch(now)
        self._epoch_start = now
        self._epoch = trainer.current_epoch
        self._open = self._mark(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch_samples += int(batch[0].shape[0])

    def _stop(self, pl_module) -> None:
        if self._open is not None:
            self._intervals.append((self._open, self._mark(pl_module), self._epoch_samples))
            self._open = None
            self._epoch_samples = 0

    def _close_epoch(self, now: float) -> None:
        if self._epoch_start is not None:
            self.epoch_seconds[self._epoch] = now - self._epoch_start
            self._epoch_start = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._stop(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_epoch(time.perf_counter())

    def _interval_seconds(self) -> list[tuple[float, int]]:
        out = []
        for start, end, n in self._intervals:
            if isinstance(start, float):
                out.append((end - start, n))
            else:
                end.synchronize()
                out.append((start.elapsed_time(end) / 1000, n))
        return out

    # inference throughput: the test loop alone (not the restore of weights before it)
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module)
        self._test_start = time.perf_counter()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.test_samples += int(batch[0].shape[0])

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self._test_start is not None:
            _sync(pl_module)
            self.test_seconds += time.perf_counter() - self._test_start
            self._test_start = None

    @property
    def infer_samples_per_sec(self) -> float | None:
        if self.test_seconds <= 0 or not self.test_samples:
            return None
        return round(self.test_samples / self.test_seconds, 2)

    @property
    def samples_per_sec(self) -> float | None:
        """Training samples/s over the epochs after the first (which pays warm-up)."""
        intervals = self._interval_seconds()
        steady = intervals[1:] or intervals
        seconds = sum(s for s, _ in steady)
        return round(sum(n for _, n in steady) / seconds, 2) if seconds > 0 else None

    @property
    def steady_epoch_s(self) -> float | None:
        """Median epoch wall time after the first (which also pays warm-up); the only one if 1."""
        times = list(self.epoch_seconds.values())
        later = times[1:] or times
        return round(statistics.median(later), 4) if later else None


def _sync(pl_module) -> None:
    """Wait for queued GPU work so a timestamp covers it."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
