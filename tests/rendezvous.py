"""A Lightning callback for launcher tests, imported by the jobs a test starts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class Rendezvous(L.Callback):
    """Each job announces itself in ``folder`` when its fit starts and waits (up to ``timeout``
    s) until ``n`` jobs have; it writes how many it saw. Jobs that run one after the other never
    meet, however fast or slow the machine is."""

    def __init__(self, folder: str, n: int = 2, timeout: float = 120.0) -> None:
        self.folder, self.n, self.timeout = Path(folder), n, timeout

    def on_fit_start(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{os.getpid()}.up").touch()
        deadline = time.monotonic() + self.timeout
        while len(list(self.folder.glob("*.up"))) < self.n and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = len(list(self.folder.glob("*.up")))
        (self.folder / f"{os.getpid()}.saw").write_text(str(seen))


class SlowEpochs(L.Callback):
    """Each training epoch takes at least ``seconds`` (a tiny run made long enough for a
    scheduler to preempt, time out or cancel it mid-training)."""

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)
