"""One run end to end: pre-run checks, claim, build, fit, evaluate the best-validation weights,
persist, write the record. :func:`train_one` never raises for a failed run; it returns the outcome.

The record's life (claim, skip, open, classify a failure, close) is :mod:`bench.job.lifecycle`,
shared with the packed path; this module holds what is particular to fitting one network.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig

from bench.job.build import build_job, seed_run
from bench.job.execute import execute
from bench.job.lifecycle import (
    DONE,
    busy,
    checked,
    close_record,
    done_record,
    ending_of,
    locate,
    open_record,
    prepare_run_dir,
    run_context,
    setup_process,
    skipped,
    stop_if_interrupted,
)
from bench.job.persist import describe_job, persist_outputs, record_outcome
from bench.job.probe import run_probe
from bench.records import RunRecord, RunStore
from bench.spec import DataSpec
from bench.sweep import JobOutcome
from bench.tracking import finish_trackers

log = logging.getLogger("bench.train")


def _rank() -> int:
    """Global rank when launched as a DDP/SLURM worker process, else 0."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def run_job(
    cfg: DictConfig, record: RunRecord, run_dir: Path, resume: str | None, datamodule=None
) -> None:
    """Build, fit, evaluate and persist; fill ``record`` with what was measured."""

    if (cfg.get("probe") or {}).get("kind"):  # frozen features: no Lightning training
        seed_run(cfg)
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


def train_one(cfg: DictConfig, datamodule=None, member: int | None = None) -> JobOutcome:
    """Run one configured job end to end (never raises for a failed run); returns its outcome.

    ``datamodule``: one already built for ``cfg``; ``member``: its place in a pack of seeds
    (for the sweep's bookkeeping)."""
    start = time.perf_counter()
    setup_process(cfg)
    prepared = checked(cfg, datamodule, member)
    if isinstance(prepared, JobOutcome):
        return prepared
    cfg_dict, datamodule = prepared
    store = RunStore(cfg.paths.runs_dir)
    force = bool(cfg.get("force"))
    if _rank() != 0:  # DDP worker: rank 0 owns the record and the lock
        run_id = locate(store, cfg_dict, force)[0]
        run_dir = store.run_dir(run_id)
        worker = RunRecord(run_id=run_id, config=cfg_dict)
        run_job(cfg, worker, run_dir, prepare_run_dir(run_dir, force=False), datamodule)
        return JobOutcome("worker", run_id)

    run_id, done_elsewhere = locate(store, cfg_dict, force)
    run_dir = store.run_dir(run_id)
    with store.claim(run_id) as claimed:
        if not claimed:
            return busy(run_id, member)
        done = done_record(store, run_id, done_elsewhere, force)
        if done is not None:
            return skipped(run_id, done, member)
        resume = prepare_run_dir(run_dir, force)
        record = open_record(cfg, cfg_dict, run_id, store, resume)
        log.info("run %s -> %s%s", run_id, run_dir, f" (resuming {resume})" if resume else "")
        ending = DONE
        try:
            run_job(cfg, record, run_dir, resume, datamodule)
            record.status = "done"
        except (Exception, KeyboardInterrupt, SystemExit) as e:  # isolate the sweep from any crash
            ending = ending_of(e)
        outcome = close_record(record, store, cfg, ending, time.perf_counter() - start, member)
    stop_if_interrupted(ending)
    return outcome
