"""A torch.profiler summary of one harness epoch (training + validation), as a callback."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class EpochProfiler(L.Callback):
    """Profile epoch ``epoch`` (default the second: the first pays warm-up) and write the
    operator table (CPU and CUDA time, sorted by device time on a GPU) to ``out``."""

    def __init__(self, out: str, epoch: int = 1, rows: int = 40) -> None:
        self.out, self.epoch, self.rows = Path(out), epoch, rows
        self._prof = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if pl_module.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(activities=activities)
        self._prof.__enter__()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._prof is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._prof.__exit__(None, None, None)
        key = "device_time_total" if pl_module.device.type == "cuda" else "cpu_time_total"
        table = self._prof.key_averages().table(sort_by=key, row_limit=self.rows)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(
            f"torch.profiler, epoch {self.epoch} of {trainer.max_epochs} (training + validation), "
            f"sorted by {key}\n\n{table}\n"
        )
        self._prof = None
