"""Build a job from its composed config: datamodule -> DataSpec -> model -> task -> trainer."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bench.callbacks import EpochSeed
from bench.checkpointing import BestAndResume
from bench.console import EpochLines, is_terminal
from bench.data.base import InMemoryDataModule
from bench.errors import ConfigError
from bench.job.instantiate import instantiate_group
from bench.models import BuildInfo, build_info
from bench.records import flatten, redact
from bench.search import OptunaPruning
from bench.spec import DataSpec
from bench.tasks import build_task
from bench.tasks.base import BaseTask
from bench.timing import ThroughputTimer
from bench.tracking import build_loggers, is_wandb

log = logging.getLogger("bench.train")


@dataclass
class RunContext:
    """Who the run is, for trackers: its id, display name, sweep group and tags."""

    run_id: str
    name: str
    group: str


@dataclass
class Job:
    """Everything one run trains and evaluates with (live objects: never in the record)."""

    cfg: DictConfig
    datamodule: InMemoryDataModule
    spec: DataSpec
    model: nn.Module
    info: BuildInfo
    task: BaseTask
    trainer: L.Trainer
    checkpoint: BestAndResume
    timer: ThroughputTimer
    loggers: list
    run_dir: Path


def resolve_class_weights(value, datamodule: InMemoryDataModule) -> list[float] | None:
    """``none`` -> None; ``auto`` -> inverse class frequency of the training split
    (``n / (k * n_c)``; for multi-label the ``pos_weight`` negatives/positives per label);
    a list -> checked against the number of classes."""
    if value is None or value == "none":
        return None
    spec = datamodule.spec
    if spec.kind != "classification":
        raise ConfigError("task.class_weights applies to classification data; set it to none")
    if value == "auto":
        counts = datamodule.class_counts().astype(np.float64)
        if spec.task == "multi-label":
            n = len(datamodule.train_labels())
            weights = (n - counts) / np.maximum(counts, 1)
        else:
            weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        return [round(float(w), 6) for w in weights]
    if isinstance(value, str):
        raise ConfigError(f"task.class_weights={value!r}: use auto, none or a list of numbers")
    weights = [float(w) for w in value]
    if len(weights) != spec.num_classes:
        raise ConfigError(
            f"task.class_weights has {len(weights)} values but {spec.name} has "
            f"{spec.num_classes} classes"
        )
    return weights


def seed_run(cfg: DictConfig) -> None:
    """Seed Python, NumPy and torch (and data workers) from ``seed``; null leaves them be."""
    if cfg.seed is not None:
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)


def harness_callbacks(cfg: DictConfig, monitor: str) -> tuple[list, bool]:
    """The callbacks every fit has, whatever it trains: the per-epoch reseed, the user's
    callbacks, a progress bar or one line per epoch, and an Optuna trial's pruning. Returns
    them and whether a progress bar is shown."""
    callbacks: list = []
    if cfg.seed is not None:
        callbacks.append(EpochSeed(int(cfg.seed)))
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    user_bar = any(isinstance(c, ProgressBar) for c in callbacks)
    bar = cfg.trainer.get("enable_progress_bar", True) and (user_bar or is_terminal())
    if bar and not user_bar and cfg.get("progress_refresh_steps"):
        # each refresh reads the logged loss back from the device, i.e. waits for the GPU
        callbacks.append(TQDMProgressBar(refresh_rate=int(cfg.progress_refresh_steps)))
    if not bar:
        callbacks.append(EpochLines())
    search = cfg.get("hparams_search") or {}
    if search.get("trial_number") is not None:  # a trial of an Optuna study: report, maybe prune
        callbacks.append(
            OptunaPruning(
                search.storage,
                search.study_name,
                int(search.trial_number),
                monitor,
                search.get("pruner", "median"),
            )
        )
    return callbacks, bool(bar)


def build_trainer(
    cfg: DictConfig, callbacks: list, bar: bool, datamodule: InMemoryDataModule, loggers=None
) -> L.Trainer:
    """The run's Trainer from ``cfg.trainer``; checkpoints are the harness's own."""
    # Lightning warns when an epoch has fewer batches than the logging interval
    n_batches = max(1, math.ceil(datamodule.n_train / max(1, datamodule.batch_size)))
    log_every = max(1, min(int(cfg.trainer.get("log_every_n_steps") or 50), n_batches))
    return instantiate_group(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=cfg.paths.output_dir,
        enable_checkpointing=False,
        enable_progress_bar=bar,
        log_every_n_steps=log_every,
    )


def build_job(
    cfg: DictConfig,
    run_dir: Path,
    context: RunContext,
    datamodule: InMemoryDataModule | None = None,
) -> Job:
    """Compose the run's parts (``datamodule``: the one the pre-run checks built); nothing is
    trained yet."""
    seed_run(cfg)
    if datamodule is None:
        datamodule = instantiate_group(cfg.data, "data")
    spec = datamodule.spec
    # partial first: Hydra would turn the DataSpec dataclass into a DictConfig
    model = instantiate(cfg.model, _partial_=True, _convert_="all")(spec=spec)
    task_cfg = instantiate(cfg.task, _convert_="all")
    task_cfg["class_weights"] = resolve_class_weights(task_cfg.get("class_weights"), datamodule)
    if spec.kind == "segmentation":  # whole-image inference needs the training patch size
        task_cfg["patch_size"] = datamodule.patch_size
    task = build_task(model, spec, tta=(cfg.get("eval") or {}).get("tta", "none"), **task_cfg)
    ckpt_cfg = cfg.get("checkpoint") or {}
    checkpoint = BestAndResume(
        dirpath=run_dir / "checkpoints",
        monitor=task.monitor,
        mode=task.monitor_mode,
        every_minutes=ckpt_cfg.get("every_minutes", 5.0),
        keep_on=ckpt_cfg.get("keep_best_on", "auto"),
    )
    timer = ThroughputTimer()
    callbacks, bar = harness_callbacks(cfg, task.monitor)
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    loggers = build_loggers(
        OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else {},
        name=context.name,
        run_name=context.name,
        group=context.group,
        id=context.run_id,
        version=context.run_id,
        tags=[spec.name, cfg.model.name, f"size{spec.input_size[0]}"],
        config=config,
    )
    for logger in loggers:
        if not is_wandb(logger):  # W&B got the config at init, nested
            logger.log_hyperparams(flatten(config))
    trainer = build_trainer(cfg, [checkpoint, timer, *callbacks], bar, datamodule, loggers)
    return Job(
        cfg=cfg,
        datamodule=datamodule,
        spec=spec,
        model=model,
        info=build_info(model),
        task=task,
        trainer=trainer,
        checkpoint=checkpoint,
        timer=timer,
        loggers=loggers,
        run_dir=run_dir,
    )
