"""Experiment loggers: W&B (online/offline chosen automatically), CSV, or none.

W&B goes online only when credentials exist (``WANDB_API_KEY`` or a ``~/.netrc`` entry made by
``wandb login``); otherwise it runs offline with a one-line hint about ``wandb sync``.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", str(Path.home() / ".netrc")))
        return rc.authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """``auto`` -> ``online`` with credentials, else ``offline``; ``WANDB_MODE`` wins if set."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if mode in (None, "auto"):
        if wandb_credentials_present():
            return "online"
        log.info("W&B: no API key found, logging offline; upload later with `wandb sync <dir>`")
        return "offline"
    return mode


def build_logger(logger_cfg: dict, *, run_name: str, group: str, tags: list[str],
                 config: dict, save_dir: Path, run_id: str) -> Any:
    """A Lightning logger from ``conf/logger/<kind>.yaml`` values (False for none)."""
    kind = logger_cfg.get("kind", "none")
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(save_dir), name="csv", version=run_id)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        mode = resolve_wandb_mode(logger_cfg.get("mode"))
        save_dir.mkdir(parents=True, exist_ok=True)
        return WandbLogger(
            project=logger_cfg.get("project", "medbench"),
            entity=logger_cfg.get("entity"),
            name=run_name,
            group=group,
            job_type=logger_cfg.get("job_type", "train"),
            tags=tags,
            save_dir=str(save_dir),
            mode=mode,
            config=config,
            log_model=False,
        )
    raise ValueError(f"unknown logger kind {kind!r}")


def finish_wandb(logger: Any) -> None:
    """Close the W&B run so the next multirun job starts a new one."""
    if logger is False or logger is None:
        return
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as e:  # never let logging teardown hide the run's own outcome
        log.warning("wandb.finish() failed: %s", e)


def log_run_summary(logger: Any, record: dict, history: list[dict]) -> None:
    """Final test metrics and cost facts as W&B summary values."""
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    run = logger.experiment
    run.define_metric("val/auc", summary="max")
    run.define_metric("val/dice", summary="max")
    for k, v in (record.get("test") or {}).items():
        run.summary[f"test/{k}"] = v
    for k, v in (record.get("cost") or {}).items():
        run.summary[f"cost/{k}"] = v
