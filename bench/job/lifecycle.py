"""The life of a run's record, one flow for a single run and for each member of a pack of seeds.

    checked()      pre-run checks; a user mistake ends here, unclaimed and unrecorded
    locate()       the run id to use (an older id of the same configuration is resumed)
    claim          ``RunStore.claim``; ``busy()`` when another process holds the run
    done_record()  "already done?" after the claim; ``skipped()`` reports it
    open_record()  the ``running`` record (attempt, resume point, packing) written
    ending_of()    an exception classified as (status, one-line error, exit code, traceback)
    close_record() the record finalised, checkpoints pruned, the outcome printed and reported
    stop_if_interrupted()  Ctrl-C / SIGTERM: the handler reset and exit 130 after the records

:mod:`bench.job.run` (one run) and :mod:`bench.job.packed` (K seeds as one network) differ only in
how they fit; everything a record goes through is here, once.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bench.console import install_noise_filters, print_run_summary
from bench.data.fingerprint import forget as forget_digests
from bench.errors import BenchError, Terminated, one_line
from bench.job.build import RunContext
from bench.job.cpu_fast import resolve_auto_settings
from bench.job.instantiate import instantiate_group
from bench.job.preflight import check_runs_dir, check_trainable
from bench.records import (
    Env,
    RunFiles,
    RunRecord,
    RunStore,
    compute_config_id,
    compute_run_id,
    dataset_label,
    now_iso,
)
from bench.sweep import JobOutcome, in_sweep, jobs_at_once, report_job

log = logging.getLogger("bench.train")

RESUME_HINT = "rerun the same command to resume"


@dataclass
class Ending:
    """How a run's attempt ended: ``done``, ``failed``, ``interrupted`` or ``pruned``."""

    status: str
    error: str | None = None
    traceback: str | None = None
    # the process's exit code: a failed run's is the BenchError's (2: a user mistake), else 1;
    # an interrupted one exits 130 (Ctrl-C, SIGTERM), or -1 when the scheduler requeues it
    exit_code: int = 1

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"


DONE = Ending("done")


def root_cause(e: BaseException) -> BaseException:
    """The user-facing error behind wrappers (Hydra's InstantiationException and the like)."""
    seen = e
    while seen is not None:
        if isinstance(seen, (BenchError, torch.cuda.OutOfMemoryError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return e


def ending_of(e: BaseException) -> Ending:
    """Classify what stopped a run: SIGTERM, Ctrl-C and a scheduler's requeue leave it
    resumable, an Optuna prune is no failure, out-of-memory says what to lower, a user mistake
    keeps its exit code (2)."""
    if isinstance(e, SystemExit):  # submitit exits this way after requeueing the job
        return Ending(
            "interrupted",
            "stopped by the scheduler for a requeue (preempted or at its time limit); the "
            "requeued job resumes it from last.ckpt",
            exit_code=-1,
        )
    if isinstance(e, Terminated):
        return Ending("interrupted", f"{e}; {RESUME_HINT}", exit_code=130)
    if isinstance(e, KeyboardInterrupt):
        message = f"interrupted by the user (Ctrl-C); {RESUME_HINT}"
        return Ending("interrupted", message, exit_code=130)
    cause = root_cause(e)
    if type(cause).__name__ == "TrialPruned":  # an Optuna study stopped this trial
        return Ending("pruned", str(cause))
    if isinstance(cause, torch.cuda.OutOfMemoryError):
        return Ending("failed", f"out of memory: {one_line(cause)}; lower data.batch_size")
    if isinstance(cause, BenchError):
        return Ending("failed", one_line(cause), exit_code=cause.exit_code)
    return Ending("failed", one_line(cause), "".join(traceback.format_exception(e, limit=20)))


# -- before the claim -------------------------------------------------------------------------
def setup_process(cfg: DictConfig) -> None:
    """Console filters and torch threads: ``threads`` if set, else a SLURM task's cores, else
    the cores shared among the parallel local jobs of a sweep."""
    install_noise_filters()
    threads = cfg.get("threads")
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if threads is None and slurm_cpus.isdigit():  # a SLURM task: the cores it was given
        threads = int(slurm_cpus)
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


def preflight(cfg: DictConfig, cfg_dict: dict, datamodule=None):
    """Checks before a run is claimed, and the data's fingerprint put into ``cfg_dict`` (so the
    run id follows the bytes read). Returns the datamodule (``datamodule`` if given: one built
    for this config already); raises BenchError."""
    check_trainable(cfg)
    check_runs_dir(cfg.paths.runs_dir)
    if datamodule is None:
        datamodule = instantiate_group(cfg.data, "data")
    if cfg.get("force"):  # +force=true re-reads the data, whatever a cache says
        forget_digests()
        datamodule.forget_caches()
    fingerprint = datamodule.fingerprint()
    if fingerprint:
        cfg_dict["data"]["fingerprint"] = fingerprint
    return datamodule


def not_started(cfg_dict: dict, error: BenchError, member: int | None = None) -> JobOutcome:
    """A user mistake found before the run was claimed: nothing ran, no record is written."""
    run_id = compute_run_id(cfg_dict)
    outcome = JobOutcome("failed", run_id, error=one_line(error), exit_code=error.exit_code)
    if in_sweep():
        log.error("run %s not started: %s", run_id, outcome.error)
    report_job(outcome, member=member)
    return outcome


def checked(cfg: DictConfig, datamodule=None, member: int | None = None):
    """``(cfg_dict, datamodule)`` of a config that passed the pre-run checks, or the
    not-started outcome of one that did not (reported already). Other errors propagate."""
    try:
        resolve_auto_settings(cfg)  # before the config is frozen into the run id
    except BenchError as e:
        return not_started(OmegaConf.to_container(cfg, resolve=True), e, member)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    try:
        return cfg_dict, preflight(cfg, cfg_dict, datamodule)
    except Exception as e:
        cause = root_cause(e)
        if not isinstance(cause, BenchError):
            raise
        return not_started(cfg_dict, cause, member)


def locate(store: RunStore, cfg_dict: dict, force: bool) -> tuple[str, RunRecord | None]:
    """(the run id to work under, a record of this configuration and seed already done under
    another id). An unfinished run stored under an older id of the same configuration is
    continued under that id; one scan of the store per run."""
    run_id = compute_run_id(cfg_dict)
    if force or store.read(run_id) is not None:
        return run_id, None
    done_elsewhere, resumable = store.find_same(cfg_dict)
    if resumable is not None and done_elsewhere is None:
        log.info(
            "resuming %s: the same configuration, stored under an older run id", resumable.run_id
        )
        return resumable.run_id, None
    return run_id, done_elsewhere


def done_record(
    store: RunStore, run_id: str, done_elsewhere: RunRecord | None, force: bool
) -> RunRecord | None:
    """The record that makes this run already done (read again after the claim), or None."""
    if force:
        return None
    previous = store.read(run_id)
    if previous is not None:
        return previous if previous.done else None
    return done_elsewhere


def skipped(run_id: str, done: RunRecord, member: int | None = None) -> JobOutcome:
    log.info("skip %s: already done as %s (+force=true to rerun)", run_id, done.run_id)
    outcome = outcome_of(done, "skipped", 0.0)
    report_job(outcome, member=member)
    return outcome


def busy(run_id: str, member: int | None = None) -> JobOutcome:
    log.info("skip %s: another process is running it", run_id)
    outcome = JobOutcome("skipped", run_id)
    report_job(outcome, member=member)
    return outcome


# -- the run folder ---------------------------------------------------------------------------
def readable_checkpoint(path: Path) -> bool:
    """A torch checkpoint is a zip archive: truncation breaks its directory or a CRC."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def prepare_run_dir(run_dir: Path, force: bool) -> str | None:
    """Return a checkpoint to resume from, clearing stale files when starting afresh; a corrupt
    resume checkpoint is set aside (never deleted) and the run restarts."""
    files = RunFiles(run_dir)
    ckpt_dir, last = files.checkpoints, files.resume
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


def finish_checkpoints(run_dir: Path, keep: str) -> None:
    """After a successful run keep ``best`` (best.ckpt), ``all`` or ``none``."""
    files = RunFiles(run_dir)
    if keep == "all" or not files.checkpoints.exists():
        return
    for f in files.checkpoints.glob("*.ckpt"):
        if keep == "none" or f != files.best:
            f.unlink()


# -- the record -------------------------------------------------------------------------------
def run_context(run_id: str) -> tuple[RunContext, list[str]]:
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


def open_record(
    cfg: DictConfig,
    cfg_dict: dict,
    run_id: str,
    store: RunStore,
    resume: str | None,
    packed: dict | None = None,
) -> RunRecord:
    """The ``running`` record of a claimed run, written: its attempt counts earlier ones."""
    context, overrides = run_context(run_id)
    previous = store.read(run_id)
    record = RunRecord(
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
        sweep_group=context.group,
        overrides=overrides,
        env=Env.current(),
        resumed_from=resume,
    )
    record.env.packed = packed
    if previous:
        record.attempt = previous.attempt + 1
    store.write(record)
    return record


def close_record(
    record: RunRecord,
    store: RunStore,
    cfg: DictConfig,
    ending: Ending,
    wall: float,
    member: int | None = None,
) -> JobOutcome:
    """Finalise ``record`` (``ending`` applies unless it finished already), keep what
    ``checkpoint.keep`` says, print and report the outcome."""
    if record.status == "running":
        record.status, record.error, record.traceback = (
            ending.status,
            ending.error,
            ending.traceback,
        )
    record.finished_at = now_iso()
    earlier = record.cost.wall_time_s or 0.0  # fit time of a resumed run's earlier segments
    record.cost.wall_time_s = round(earlier + wall, 3)
    store.write(record)
    if record.status == "done":
        keep = (cfg.get("checkpoint") or {}).get("keep", "best")
        finish_checkpoints(store.run_dir(record.run_id), keep)
        print_run_summary(record, wall)
    elif record.status == "pruned":
        log.info("run %s pruned: %s", record.run_id, record.error)
    elif in_sweep() or record.status != "failed":  # a single run's CLI prints it once
        log.error("run %s %s: %s", record.run_id, record.status, record.error)
    outcome = outcome_of(record, record.status, wall)
    if record.status == "failed":
        outcome.exit_code = ending.exit_code
    report_job(outcome, member=member)
    return outcome


def outcome_of(record: RunRecord, status: str, wall: float) -> JobOutcome:
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


def stop_if_interrupted(ending: Ending) -> None:
    """After the records are written: Ctrl-C / SIGTERM ends the process with 130, and the
    default Ctrl-C handler is back (Lightning's graceful one would swallow a second one); a
    scheduler's requeue exits as submitit asked (-1)."""
    if ending.interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise SystemExit(ending.exit_code)
