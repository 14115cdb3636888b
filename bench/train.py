"""Hydra entry point: compose -> datamodule -> DataSpec -> model -> task -> fit -> test on the
best-val checkpoint -> run record. It wires parts together; it holds no model or metric logic.

    bench-train data=pneumoniamnist model=resnet50 seed=0
    bench-train -m data=breastmnist,pneumoniamnist model=resnet50,bccnn seed=0,1,2
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import time
import traceback
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from bench import sweep
from bench.callbacks import EpochSeed
from bench.costs import gmacs, param_counts
from bench.errors import BenchError, one_line
from bench.io import atomic_save
from bench.records import (
    SCHEMA_VERSION,
    RunStore,
    compute_run_id,
    dataset_label,
    environment_facts,
    now_iso,
    redact,
)
from bench.tasks import build_task
from bench.timing import ThroughputTimer
from bench.tracking import build_logger, finish_wandb, log_run_summary

log = logging.getLogger("bench.train")

# conf/ sits beside the package in the repository (the package is installed editable)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# outcome of the last single (non-multirun) run in this process, read by cli()
LAST_RUN: dict | None = None


def _rank() -> int:
    """Global rank when launched as a DDP/SLURM worker process, else 0."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _hydra_context(run_id: str) -> tuple[str, str, list[str]]:
    """(run name, W&B group, overrides) from Hydra when present."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return run_id, "single", []
    overrides = list(hc.overrides.task)
    name = (
        ",".join(o for o in overrides if not o.startswith(("hydra", "paths", "logger"))) or run_id
    )
    if hc.mode == RunMode.MULTIRUN:
        group = "sweep-" + Path(hc.sweep.dir).name
    else:
        group = "single"
    return name, group, overrides


def _scheme(cfg: DictConfig) -> str:
    """Training scheme label for the leaderboard: scratch / imagenet / weights, plus frozen."""
    model = cfg.model
    base = (
        "weights" if model.get("weights") else "imagenet" if model.get("pretrained") else "scratch"
    )
    if model.get("freeze") == "backbone":
        base += "-frozen"
    if model.get("small_input_stem"):
        base += "-smallstem"
    return base


def new_record(cfg: DictConfig, cfg_dict: dict, run_id: str) -> dict:
    name, group, overrides = _hydra_context(run_id)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "error": None,
        "created_at": now_iso(),
        "finished_at": None,
        "dataset": dataset_label(cfg_dict),
        "data_size": cfg_dict["data"].get("size"),
        "model": cfg.model.name,
        "scheme": _scheme(cfg),
        "seed": cfg.seed,
        "epochs": cfg.trainer.get("max_epochs"),
        "precision": str(cfg.trainer.get("precision")),
        "sweep_group": group,
        "overrides": overrides,
        "config": cfg_dict,
        "env": environment_facts(),
    }


def _save_predictions(path: Path, outputs: dict[str, torch.Tensor]) -> None:
    if "score" not in outputs:
        return
    cols: dict[str, np.ndarray] = {"index": outputs["index"].numpy()}
    target = outputs["target"].numpy()
    if target.ndim == 1:
        cols["target"] = target
    else:
        for j in range(target.shape[1]):
            cols[f"target_{j}"] = target[:, j]
    score = outputs["score"].numpy()
    for j in range(score.shape[1]):
        cols[f"score_{j}"] = score[:, j]
    df = pd.DataFrame(cols).sort_values("index")
    atomic_save(path, lambda f: f.write(df.to_csv(index=False, float_format="%.6g").encode()))


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fit_and_test(cfg: DictConfig, record: dict, run_dir: Path, resume: str | None) -> None:
    """Train, select the best-val checkpoint, evaluate it on val and test; fill ``record``."""
    if cfg.seed is not None:
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    spec = datamodule.spec
    record["spec"] = spec.to_dict()
    record["dataset"] = spec.name
    record["task"] = spec.task
    # partial first: Hydra would turn the DataSpec dataclass into a DictConfig
    model = instantiate(cfg.model, _partial_=True, _convert_="all")(spec=spec)
    record["cost"] = {
        **param_counts(model),
        "gmacs": gmacs(model, spec),
        "input_size": list(spec.input_size),
    }
    task = build_task(model, spec, **instantiate(cfg.task, _convert_="all"))

    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=task.monitor,
        mode=task.monitor_mode,
        save_last="link",
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    timer = ThroughputTimer()
    callbacks = [checkpoint, timer]
    if cfg.seed is not None:
        callbacks.append(EpochSeed(int(cfg.seed)))
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if (
        cfg.trainer.get("enable_progress_bar", True)
        and cfg.get("progress_refresh_steps")
        and not any(isinstance(c, ProgressBar) for c in callbacks)
    ):
        # each refresh reads the logged loss back from the device, i.e. waits for the GPU
        callbacks.append(TQDMProgressBar(refresh_rate=int(cfg.progress_refresh_steps)))
    name, group, _ = _hydra_context(record["run_id"])
    logger = build_logger(
        OmegaConf.to_container(cfg.logger, resolve=True),
        run_name=name,
        group=group,
        run_id=record["run_id"],
        tags=[spec.name, cfg.model.name, f"size{spec.input_size[0]}"],
        config=redact(record["config"]),
        save_dir=Path(cfg.paths.output_dir),
    )
    # handed back through the record so train() can finish W&B even when fitting raises
    record["_logger"] = logger
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=cfg.paths.output_dir
    )
    start = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume)
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    train_time = time.perf_counter() - start
    best = checkpoint.best_model_path or checkpoint.last_model_path or None
    trainer.validate(task, datamodule=datamodule, ckpt_path=best, verbose=False)
    trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)

    record["val"] = task.last_metrics.get("val")
    record["test"] = task.last_metrics.get("test")
    history = [
        {**h, "epoch_time_s": round(timer.epoch_seconds[h["epoch"]], 4)}
        if h["epoch"] in timer.epoch_seconds
        else h
        for h in task.history
    ]
    monitor_col = task.monitor.replace("/", "_")
    scored = [h for h in history if monitor_col in h]
    if scored:
        pick = max if task.monitor_mode == "max" else min
        record["best_epoch"] = pick(scored, key=lambda h: h[monitor_col])["epoch"]
    record["epochs_run"] = trainer.current_epoch
    record["cost"].update(
        {
            "train_time_s": round(train_time, 3),
            "train_samples_per_sec": timer.samples_per_sec,
            "epoch_time_s": timer.steady_epoch_s,
            "infer_samples_per_sec": timer.infer_samples_per_sec,
            "peak_mem_mb": round(_peak_mem_mb(trainer.strategy.root_device), 1),
        }
    )
    record["env"]["device"] = (
        torch.cuda.get_device_name(trainer.strategy.root_device)
        if trainer.strategy.root_device.type == "cuda"
        else "cpu"
    )
    if trainer.global_rank == 0:
        for stage in ("val", "test"):
            if stage in task.predictions:
                _save_predictions(run_dir / f"predictions_{stage}.csv", task.predictions[stage])
        if history:
            df = pd.DataFrame(history)
            atomic_save(run_dir / "history.csv", lambda f: f.write(df.to_csv(index=False).encode()))
        if logger:
            log_run_summary(logger, record, task, datamodule)


def root_cause(e: BaseException) -> BaseException:
    """The user-facing error behind wrappers (Hydra's InstantiationException and the like)."""
    seen = e
    while seen is not None:
        if isinstance(seen, (BenchError, torch.cuda.OutOfMemoryError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return e


def _prepare_run_dir(run_dir: Path, force: bool) -> str | None:
    """Return a checkpoint to resume from, clearing stale files when starting afresh."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if not force and last.exists():
        return str(last)
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    return None


def _finish_checkpoints(run_dir: Path, keep: str) -> None:
    ckpt_dir = run_dir / "checkpoints"
    if keep == "all" or not ckpt_dir.exists():
        return
    for f in ckpt_dir.glob("*.ckpt"):
        if keep == "none" or f.name != "best.ckpt":
            f.unlink()


def _set_threads(cfg: DictConfig) -> None:
    """Torch threads: ``threads`` if set, else the cores shared among parallel local jobs."""
    threads = cfg.get("threads")
    if threads is None:
        try:
            n_jobs = HydraConfig.get().launcher.get("n_jobs")
        except ValueError:
            n_jobs = None
        if n_jobs and n_jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // int(n_jobs))
    if threads:
        torch.set_num_threads(int(threads))


def train(cfg: DictConfig) -> dict:
    """Run one configured job end to end and return its record (never raises for a failed run)."""
    _set_threads(cfg)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    run_id = compute_run_id(cfg_dict)
    store = RunStore(cfg.paths.runs_dir)
    if _rank() != 0:  # DDP worker: rank 0 owns the record and the lock
        fit_and_test(
            cfg,
            {"run_id": run_id, "config": cfg_dict, "env": {}},
            store.run_dir(run_id),
            _prepare_run_dir(store.run_dir(run_id), force=False),
        )
        return {"run_id": run_id, "status": "worker"}

    with store.claim(run_id) as claimed:
        if not claimed:
            log.info("skip %s: another process is running it", run_id)
            sweep.report_job("skipped", run_id)
            return {"run_id": run_id, "status": "skipped"}
        previous = store.read(run_id)
        if previous and previous.get("status") == "done" and not cfg.get("force"):
            log.info("skip %s: already done (+force=true to rerun)", run_id)
            sweep.report_job("skipped", run_id)
            return {**previous, "status": "skipped", "skipped": True}

        run_dir = store.run_dir(run_id)
        resume = _prepare_run_dir(run_dir, force=bool(cfg.get("force")))
        record = new_record(cfg, cfg_dict, run_id)
        record["resumed_from"] = resume
        if previous:
            record["attempt"] = int(previous.get("attempt", 1)) + 1
        store.write(record)
        log.info("run %s -> %s%s", run_id, run_dir, f" (resuming {resume})" if resume else "")
        interrupted = False
        try:
            fit_and_test(cfg, record, run_dir, resume)
            record["status"] = "done"
        except KeyboardInterrupt:
            interrupted = True
            record["status"] = "interrupted"
            record["error"] = "interrupted by the user (KeyboardInterrupt); rerun to resume"
        except Exception as e:  # isolate the sweep from any crash inside one job
            cause = root_cause(e)
            record["status"] = "failed"
            if isinstance(cause, torch.cuda.OutOfMemoryError):
                record["error"] = f"out of memory: {one_line(cause)}; lower data.batch_size"
            else:
                record["error"] = one_line(cause)
            if not isinstance(cause, BenchError):
                record["traceback"] = traceback.format_exc(limit=20)
        finally:
            logger = record.pop("_logger", None)
            record["finished_at"] = now_iso()
            store.write(record)
            finish_wandb(logger)
            if record["status"] == "done":
                _finish_checkpoints(run_dir, cfg.get("keep_checkpoints", "best"))
        level = logging.INFO if record["status"] == "done" else logging.ERROR
        log.log(
            level,
            "run %s %s%s",
            run_id,
            record["status"],
            f": {record['error']}" if record.get("error") else "",
        )
        sweep.report_job(record["status"], run_id)
    if interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise SystemExit(130)
    return record


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    global LAST_RUN
    LAST_RUN = train(cfg)


def cli() -> None:
    """Console script ``bench-train``: one-line errors, exit code = failed runs (capped)."""
    from bench.cli import run_cli

    run_cli(main, lambda: LAST_RUN, lambda: sweep.LAST_SUMMARY)


if __name__ == "__main__":
    cli()
