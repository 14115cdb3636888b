"""``train(cfg)``: one run, or the seeds of a pack (``execution.pack_seeds``), end to end.

The one place that decides how a job's seeds train: the pack (:mod:`bench.job.packed`) trains
what it can as one network and hands back the members that must train one at a time, which go
to :func:`bench.job.run.train_one` from here; neither module calls the other.
"""

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
    if k == 1:
        return train_one(cfg)
    result = train_packed(cfg)
    outcomes = dict(result.outcomes)
    for member, member_cfg, datamodule in result.singles:
        outcomes[member] = train_one(member_cfg, datamodule, member=member)
    return outcomes[min(outcomes)]
