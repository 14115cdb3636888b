"""Hydra entry point of ``bench-train``: compose the config, run it, return the objective.

    bench-train data=pneumoniamnist model=resnet50 seed=0
    bench-train -m data=breastmnist,pneumoniamnist model=resnet50,bccnn seed=0,1,2

The run itself is :func:`bench.job.entry.train`; the entry point returns the run's validation
score (the objective of a hyperparameter search). The console script's front door (fast
``--help``, one-line errors, exit codes) is :mod:`bench.cli`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from bench.job.entry import train
from bench.paths import conf_dir
from bench.records import load_record
from bench.sweep import JobOutcome

__all__ = ["main", "objective", "train"]


def objective(outcome: JobOutcome, cfg: DictConfig) -> float | None:
    """The run's validation score (never a test score): what a hyperparameter search optimises."""

    if not outcome.record_path:
        return None
    record = load_record(outcome.record_path)
    metric = (cfg.get("hparams_search") or {}).get("metric") or (
        "dice" if record.kind == "segmentation" else "auc"
    )
    return record.val.get(metric.removeprefix("val_").removeprefix("val/"))


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return objective(train(cfg), cfg)


if __name__ == "__main__":
    main()
