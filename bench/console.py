"""What a run prints: third-party noise filtered by name, a line per epoch without a terminal,
and a compact table of its results at the end."""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings

import lightning as L

log = logging.getLogger("bench.train")

# Lightning's start-up and restore chatter, by logger and message start: what the run itself
# reports better (the device in the record, the epoch lines, the result table)
_LIGHTNING_NOISE = (
    "GPU available",
    "TPU available",
    "HPU available",
    "IPU available",
    "💡 Tip",
    "Restoring states from",
    "Loaded model weights from",
    "LOCAL_RANK:",
    "`Trainer.fit` stopped",
    "You are using a CUDA device",
)
_LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)
# third-party warnings that say nothing a user can act on, by message (and module)
_WARNINGS = (
    (r".*isinstance\(treespec, LeafSpec\)", None),  # lightning's _pytree vs torch 2.10+
    (r".*does not have many workers which may be a bottleneck", None),  # batches are in memory
    (r".*The '(val|test|train)_dataloader' does not have many workers", None),
    (r".*Checkpoint directory .* exists and is not empty", None),
    # bench-export --format torchscript: torch 2.10+ deprecates TorchScript; the format is
    # offered for runtimes that still read it, and the choice is the user's
    (r"`torch\.jit\.\w+` is deprecated", None),
    # every run on a login node with SLURM installed: medbench's SLURM launcher starts ranks
    # itself (hydra/launcher=slurm; docs/cluster.md), so the hint does not apply
    (r".*The `srun` command is available on your system but is not used", None),
)


class _PrefixFilter(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def install_noise_filters() -> None:
    """Filter the named third-party messages (never all warnings, never errors)."""
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PrefixFilter) for f in logger.filters):
            logger.addFilter(_PrefixFilter(_LIGHTNING_NOISE))
    for message, module in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module or "")


def is_terminal() -> bool:
    return sys.stderr.isatty()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


class EpochLines(L.Callback):
    """One log line per epoch (for logs without a terminal: SLURM, CI, ``nohup``)."""

    KEYS = ("train_loss", "val_loss", "val_auc", "val_acc", "val_dice", "lr")

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not getattr(pl_module, "history", None):
            return
        row = pl_module.history[-1]
        parts = [f"{k} {_fmt(row[k])}" for k in self.KEYS if k in row]
        log.info(
            "epoch %d/%d  %s  (%.1f s)",
            row["epoch"] + 1,
            trainer.max_epochs,
            "  ".join(parts),
            time.perf_counter() - self._start,
        )


def metrics_table(splits: dict[str, dict[str, float]], keys: list[str] | None = None) -> str:
    """A compact text table: one row per split, one column per metric."""
    splits = {k: v for k, v in splits.items() if v}
    if not splits:
        return ""
    if keys is None:
        first = next(iter(splits.values()))
        keys = [k for k in first if not re.search(r"_(std|pooled)$", k) and "_" not in k][:9]
    width = max(7, *(len(k) + 1 for k in keys))
    head = " " * 10 + "".join(k.rjust(width) for k in keys)
    rows = [head]
    for name, vals in splits.items():
        cells = "".join(
            (f"{vals[k]:.4f}" if isinstance(vals.get(k), float) else "-").rjust(width) for k in keys
        )
        rows.append(name.ljust(10) + cells)
    return "\n".join(rows)


def print_run_summary(record, wall_s: float) -> None:
    """The end of a run: what it measured and where the record is."""
    if record.status != "done":
        return
    cost = record.cost
    lines = [
        f"run {record.run_id} done in {wall_s:.1f} s"
        f" (best epoch {record.best_epoch + 1 if record.best_epoch is not None else '-'}"
        f" of {record.epochs_run}; {cost.params_total / 1e6 if cost.params_total else 0:.2f} M"
        " params)",
        metrics_table(
            {"val": record.val, "test": record.test, "test@last": record.test_last}
            if record.best_epoch is not None and record.best_epoch + 1 != record.epochs_run
            else {"val": record.val, "test": record.test}
        ),
        f"record: {record.path}",
    ]
    print("\n".join(line for line in lines if line), flush=True)
