"""Checks made before a run is claimed: a config that cannot train, an unusable run store.

Each failure is a :class:`~bench.errors.BenchError` whose one line names the key and the fix, so
no untrained model is ever recorded as done and no traceback reaches the user.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from bench.errors import ConfigError, OutputPathError
from bench.job.instantiate import check_group_options


def _zero(value) -> bool:
    return value is not None and not isinstance(value, bool) and float(value) == 0


def check_trainable(cfg: DictConfig) -> None:
    """Reject configs under which nothing would be trained or optimised."""
    if (cfg.get("probe") or {}).get("kind"):  # frozen-feature probes train no network
        return
    trainer = cfg.get("trainer") or {}
    if trainer:
        check_group_options(trainer, "trainer")
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if max_epochs is not None and int(max_epochs) == 0:
        raise ConfigError(
            "trainer.max_epochs=0 trains nothing and would rank an untrained model; "
            "set trainer.max_epochs to 1 or more"
        )
    if (
        max_epochs is not None
        and int(max_epochs) == -1
        and not ((max_steps is not None and int(max_steps) > 0) or trainer.get("max_time"))
    ):
        raise ConfigError(
            "trainer.max_epochs=-1 trains until stopped (and the LR schedule, in fractions of "
            "the epochs, decays after epoch 1); set trainer.max_epochs, or a limit with "
            "trainer.max_steps or trainer.max_time"
        )
    if max_epochs is not None and int(max_epochs) < -1:
        raise ConfigError(f"trainer.max_epochs={max_epochs}: use a positive number of epochs")
    if max_steps is not None and int(max_steps) == 0:
        raise ConfigError("trainer.max_steps=0 trains nothing; remove it or set it to -1 or >= 1")
    if _zero(trainer.get("limit_train_batches")):
        raise ConfigError(
            "trainer.limit_train_batches=0 trains nothing; remove it or set it above 0"
        )
    if _zero(trainer.get("limit_val_batches")):
        raise ConfigError(
            "trainer.limit_val_batches=0 leaves no validation score to select the best epoch "
            "by; remove it or set it above 0"
        )
    optimizer = (cfg.get("task") or {}).get("optimizer") or {}
    for key in ("lr", "weight_decay", "momentum"):
        value = optimizer.get(key)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"task.optimizer.{key}={value!r} is not a number") from None
        if key == "lr" and not number > 0:
            raise ConfigError(f"task.optimizer.lr={value} must be > 0 (e.g. 1e-3)")
        if key != "lr" and number < 0:
            raise ConfigError(f"task.optimizer.{key}={value} must be >= 0")


def check_runs_dir(runs_dir: str | Path) -> Path:
    """The run store as a writable folder (created if absent), or a one-line error."""
    root = Path(runs_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise OutputPathError(
            f"paths.runs_dir={root} is a file, not a folder; choose another paths.runs_dir"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(
            f"cannot create paths.runs_dir={root} ({e.strerror or type(e).__name__}); "
            "choose a writable folder"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"paths.runs_dir={root} is not writable; fix its permissions or choose another folder"
        )
    return root
