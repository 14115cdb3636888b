"""``train(cfg)``: one run, or the seeds of a pack (``execution.pack_seeds``), end to end."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError
from bench.job.lifecycle import not_started
from bench.job.packed import pack_size, train_packed
from bench.job.run import train_one
from bench.sweep import JobOutcome


def train(cfg: DictConfig) -> JobOutcome:
    """Run the configured job (never raises for a failed run); returns its outcome (a pack's:
    its first member's, each member's is reported to the sweep)."""
    try:
        k = pack_size(cfg)
    except ConfigError as e:
        return not_started(OmegaConf.to_container(cfg, resolve=True), e)
    if k > 1:
        return train_packed(cfg)
    return train_one(cfg)
