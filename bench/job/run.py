"""One run end to end: pre-run checks, claim, build, fit, evaluate the best-validation weights,
persist, write the record. :func:`train` never raises for a failed run; it returns the outcome.

It wires the parts of :mod:`bench.job` together and holds no model or metric logic. The Hydra
entry point (:mod:`bench.hydra_main`) and the speed benchmark call it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
import traceback
import zipfile
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bench.console import install_noise_filters, print_run_summary
from bench.costs import gmacs, param_counts
from bench.errors import BenchError, Terminated, one_line
from bench.job.build import Job, RunContext, build_job
from bench.job.execute import Outcome, execute
from bench.job.instantiate import instantiate_group
from bench.job.persist import persist, persist_outputs
from bench.job.preflight import check_runs_dir, check_trainable
from bench.job.probe import run_probe
from bench.records import (
    Cost,
    Env,
    RunRecord,
    RunStore,
    compute_config_id,
    compute_run_id,
    dataset_label,
    now_iso,
)
from bench.spec import DataSpec
from bench.sweep import JobOutcome, in_sweep, jobs_at_once, report_job
from bench.tracking import finish_trackers

log = logging.getLogger("bench.train")


def _rank() -> int:
    """Global rank when launched as a DDP/SLURM worker process, else 0."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def run_context(run_id: str):
    """(run name, W&B group, overrides) from Hydra when present."""

    try:
        hc = HydraConfig.get()
    except ValueError:
        return RunContext(run_id, run_id, "single"), []
    overrides = list(hc.overrides.task)
    name = (
        ",".join(o for o in overrides if not o.startswith(("hydra", "paths", "logger"))) or run_id
    )
    group = "sweep-" + Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else "single"
    return RunContext(run_id, name, group), overrides


def root_cause(e: BaseException) -> BaseException:
    """The user-facing error behind wrappers (Hydra's InstantiationException and the like)."""
    seen = e
    while seen is not None:
        if isinstance(seen, (BenchError, torch.cuda.OutOfMemoryError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return e


def prepare_run_dir(run_dir: Path, force: bool) -> str | None:
    """Return a checkpoint to resume from, clearing stale files when starting afresh."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if not force and last.exists():
        if readable_checkpoint(last):
            return str(last)
        aside = last.with_name(f"last.ckpt.corrupt-{int(time.time())}")
        last.rename(aside)
        log.warning(
            "resume checkpoint %s is corrupt (truncated?); set aside as %s, the run restarts "
            "from epoch 0",
            last,
            aside.name,
        )
        return None
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    return None


def readable_checkpoint(path: Path) -> bool:
    """A torch checkpoint is a zip archive: truncation breaks its directory or a CRC."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def finish_checkpoints(run_dir: Path, keep: str) -> None:
    """After a successful run keep ``best`` (best.ckpt), ``all`` or ``none``."""
    ckpt_dir = run_dir / "checkpoints"
    if keep == "all" or not ckpt_dir.exists():
        return
    for f in ckpt_dir.glob("*.ckpt"):
        if keep == "none" or f.name != "best.ckpt":
            f.unlink()


def set_threads(cfg: DictConfig) -> None:
    """Torch threads: ``threads`` if set, else the cores shared among parallel local jobs."""
    threads = cfg.get("threads")
    if threads is None:
        try:
            hc = HydraConfig.get()
            n_jobs = jobs_at_once(hc.launcher) if hc.mode == RunMode.MULTIRUN else 1
        except ValueError:
            n_jobs = 1
        if n_jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // n_jobs)
    if threads:
        torch.set_num_threads(int(threads))


def new_record(cfg: DictConfig, cfg_dict: dict, run_id: str, overrides: list[str], group: str):
    return RunRecord(
        run_id=run_id,
        status="running",
        config=cfg_dict,
        config_id=compute_config_id(cfg_dict),
        created_at=now_iso(),
        dataset=dataset_label(cfg_dict),
        model=cfg.model.name,
        seed=cfg.seed,
        epochs=cfg.trainer.get("max_epochs"),
        precision=str(cfg.trainer.get("precision")),
        sweep_group=group,
        overrides=overrides,
        env=Env.current(),
    )


def run_job(
    cfg: DictConfig, record: RunRecord, run_dir: Path, resume: str | None, datamodule=None
) -> None:
    """Build, fit, evaluate and persist; fill ``record`` with what was measured."""

    if (cfg.get("probe") or {}).get("kind"):  # frozen features: no Lightning training
        if cfg.seed is not None:
            torch.manual_seed(int(cfg.seed))
        outputs = run_probe(cfg, record)
        persist_outputs(run_dir, DataSpec.from_dict(record.spec), outputs, record)
        return
    context, _ = run_context(record.run_id)
    job = build_job(cfg, run_dir, context, datamodule)
    try:
        describe_job(record, job)
        outcome = execute(job, resume)
        record_outcome(record, job, outcome)
    finally:
        finish_trackers(job.loggers)


def describe_job(record: RunRecord, job: Job) -> None:
    """What the record says of a built job before it trains: data, scheme, size, cost."""
    record.spec = job.spec.to_dict()
    record.dataset, record.task, record.kind = job.spec.name, job.spec.task, job.spec.kind
    record.scheme = job.info.scheme
    record.cv = job.datamodule.cv_info
    record.split_sizes = {k: len(x) for k, (x, _) in job.datamodule.prepared_splits().items()}
    record.cost = Cost(
        **param_counts(job.model),
        gmacs=gmacs(job.model, job.spec),
        input_size=list(job.spec.input_size),
    )
    record.notes = list(job.datamodule.notes)


def record_outcome(record: RunRecord, job: Job, outcome: Outcome) -> None:
    """Put what the job measured into the record and write the run folder's files."""
    record.val, record.test, record.test_last = outcome.val, outcome.test, outcome.test_last
    record.best_epoch, record.epochs_run = outcome.best_epoch, outcome.epochs_run
    for k, v in outcome.cost.items():
        setattr(record.cost, k, v)
    record.env.device = outcome.device
    record.cv = job.datamodule.cv_info
    persist(job, outcome, record)


def preflight(cfg: DictConfig, cfg_dict: dict, datamodule=None):
    """Checks before a run is claimed, and the data's fingerprint put into ``cfg_dict`` (so the
    run id follows the bytes read). Returns the datamodule (``datamodule`` if given: one built
    for this config already); raises BenchError."""

    check_trainable(cfg)
    check_runs_dir(cfg.paths.runs_dir)
    if datamodule is None:
        datamodule = instantiate_group(cfg.data, "data")
    fingerprint = datamodule.fingerprint()
    if fingerprint:
        cfg_dict["data"]["fingerprint"] = fingerprint
    return datamodule


def not_started(cfg_dict: dict, error: BenchError, member: int | None = None) -> JobOutcome:
    """A user mistake found before the run was claimed: nothing ran, no record is written."""
    run_id = compute_run_id(cfg_dict)
    outcome = JobOutcome(
        "failed", run_id, error=one_line(error), exit_code=getattr(error, "exit_code", 2)
    )
    if in_sweep():
        log.error("run %s not started: %s", run_id, outcome.error)
    report_job(outcome, member=member)
    return outcome


def train_one(cfg: DictConfig, datamodule=None, member: int | None = None) -> JobOutcome:
    """Run one configured job end to end (never raises for a failed run); returns its outcome.

    ``datamodule``: one already built for ``cfg``; ``member``: its place in a pack of seeds
    (for the sweep's bookkeeping)."""
    start = time.perf_counter()
    install_noise_filters()
    set_threads(cfg)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    try:
        datamodule = preflight(cfg, cfg_dict, datamodule)
    except Exception as e:
        cause = root_cause(e)
        if not isinstance(cause, BenchError):
            raise
        return not_started(cfg_dict, cause, member)
    run_id = compute_run_id(cfg_dict)
    store = RunStore(cfg.paths.runs_dir)
    run_dir = store.run_dir(run_id)
    if _rank() != 0:  # DDP worker: rank 0 owns the record and the lock
        worker = RunRecord(run_id=run_id, config=cfg_dict)
        run_job(cfg, worker, run_dir, prepare_run_dir(run_dir, force=False), datamodule)
        return JobOutcome("worker", run_id)

    previous = store.read(run_id)
    done_elsewhere = None  # the same configuration and seed, finished under another run id
    if previous is None and not cfg.get("force"):
        done_elsewhere, resumable = store.find_same(cfg_dict)  # one scan of the store per run
        if resumable is not None and done_elsewhere is None:  # continue it where it stopped
            log.info(
                "resuming %s: the same configuration, stored under an older run id",
                resumable.run_id,
            )
            run_id = resumable.run_id
            run_dir = store.run_dir(run_id)
    with store.claim(run_id) as claimed:
        if not claimed:
            log.info("skip %s: another process is running it", run_id)
            outcome = JobOutcome("skipped", run_id)
            report_job(outcome, member=member)
            return outcome
        previous = store.read(run_id)
        same = None if previous or cfg.get("force") else done_elsewhere
        if same is not None or (previous and previous.done and not cfg.get("force")):
            done = same or previous
            log.info("skip %s: already done as %s (+force=true to rerun)", run_id, done.run_id)
            outcome = _outcome(done, "skipped", 0.0)
            report_job(outcome, member=member)
            return outcome

        resume = prepare_run_dir(run_dir, force=bool(cfg.get("force")))
        context, overrides = run_context(run_id)
        record = new_record(cfg, cfg_dict, run_id, overrides, context.group)
        record.resumed_from = resume
        if previous:
            record.attempt = previous.attempt + 1
        store.write(record)
        log.info("run %s -> %s%s", run_id, run_dir, f" (resuming {resume})" if resume else "")
        interrupted = False
        exit_code = 1
        try:
            run_job(cfg, record, run_dir, resume, datamodule)
            record.status = "done"
        except Terminated as e:
            interrupted = True
            record.status = "interrupted"
            record.error = f"{e}; rerun the same command to resume"
        except KeyboardInterrupt:
            interrupted = True
            record.status = "interrupted"
            record.error = "interrupted by the user (Ctrl-C); rerun the same command to resume"
        except Exception as e:  # isolate the sweep from any crash inside one job
            cause = root_cause(e)
            if type(cause).__name__ == "TrialPruned":  # an Optuna study stopped this trial
                record.status, record.error = "pruned", str(cause)
            elif isinstance(cause, torch.cuda.OutOfMemoryError):
                record.status = "failed"
                record.error = f"out of memory: {one_line(cause)}; lower data.batch_size"
            else:
                record.status, record.error = "failed", one_line(cause)
            if isinstance(cause, BenchError):
                exit_code = cause.exit_code
            elif record.status == "failed":
                record.traceback = traceback.format_exc(limit=20)
        finally:
            record.finished_at = now_iso()
            earlier = record.cost.wall_time_s or 0.0  # fit time of a resumed run's earlier segments
            record.cost.wall_time_s = round(earlier + time.perf_counter() - start, 3)
            store.write(record)
            if record.status == "done":
                keep = (cfg.get("checkpoint") or {}).get("keep", "best")
                finish_checkpoints(run_dir, keep)
        wall = time.perf_counter() - start
        if record.status == "done":
            print_run_summary(record, wall)
        elif record.status == "pruned":
            log.info("run %s pruned: %s", run_id, record.error)
        elif in_sweep() or record.status != "failed":  # a single run's CLI prints it once
            log.error("run %s %s: %s", run_id, record.status, record.error)
        outcome = _outcome(record, record.status, wall)
        if record.status == "failed":
            outcome.exit_code = exit_code
        report_job(outcome, member=member)
    if interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise SystemExit(130)
    return outcome


def _outcome(record: RunRecord, status: str, wall: float) -> JobOutcome:
    metric = "dice" if record.kind == "segmentation" else "auc"
    return JobOutcome(
        status=status,
        run_id=record.run_id,
        metric=f"test_{metric}",
        value=record.test.get(metric),
        wall_s=round(wall, 3),
        error=record.error,
        record_path=str(record.path) if record.path else None,
    )
