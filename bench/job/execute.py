"""Run a built job: fit, test the last epoch's weights, then validate and test the best ones."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field

import torch

from bench.errors import Terminated
from bench.job.build import Job

log = logging.getLogger("bench.train")


@dataclass
class Outcome:
    """What a job measured: metrics, per-sample outputs, curves and costs."""

    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    test_last: dict[str, float] = field(default_factory=dict)
    predictions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    epochs_run: int = 0
    train_time_s: float = 0.0
    device: str = "cpu"
    cost: dict = field(default_factory=dict)


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory of this process on ``device`` (GPU: allocated by torch; CPU: max RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fit(job: Job, resume: str | None) -> float:
    """Train (resuming from ``resume`` if given); returns the fit's wall seconds."""
    return fit_module(job.trainer, job.task, resume, job.datamodule)


def fit_module(trainer, module, resume: str | None, datamodule=None) -> float:
    """``trainer.fit`` of ``module``; returns the fit's wall seconds.

    Ctrl-C surfaces as KeyboardInterrupt whether Lightning re-raised it or shut down gracefully.
    """
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    except SystemExit as e:
        # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown; submitit's exit
        # after requeueing the job (preemption, time limit) is sys.exit(-1): it stays one
        if trainer.interrupted and e.code != -1:
            raise _interruption(trainer) from None
        raise
    if trainer.interrupted:
        raise _interruption(trainer)
    return time.perf_counter() - start


def _interruption(trainer) -> KeyboardInterrupt:
    """SIGTERM (a scheduler's limit, ``kill``) and Ctrl-C are told apart in the record."""
    if getattr(trainer, "received_sigterm", False):
        return Terminated("terminated by SIGTERM (a scheduler's time limit or kill)")
    return KeyboardInterrupt()


def evaluate(job: Job, last_epoch: int | None = None) -> tuple[dict, dict, dict, dict]:
    """(val, test, test_last, predictions): the last epoch's weights are tested first (what the
    official MedMNIST scripts report), then the best-validation weights are validated and
    tested (what the protocol describes, and what the record ranks by). ``last_epoch``: the
    epoch of the weights in ``job.task`` when another trainer fitted them (packed seeds)."""
    trainer, task, dm = job.trainer, job.task, job.datamodule
    task.keep_predictions = True
    if last_epoch is None:
        last_epoch = trainer.current_epoch - 1
    best_is_last = job.checkpoint.best_epoch is None or job.checkpoint.best_epoch == last_epoch
    test_last: dict = {}
    if not best_is_last:
        trainer.test(task, datamodule=dm, verbose=False)
        test_last = dict(task.last_metrics.get("test", {}))
    if not job.checkpoint.load_best_into(task.model):
        log.warning("no validation score was recorded; evaluating the last weights")
    trainer.validate(task, datamodule=dm, verbose=False)
    trainer.test(task, datamodule=dm, verbose=False)
    val = dict(task.last_metrics.get("val", {}))
    test = dict(task.last_metrics.get("test", {}))
    return val, test, test_last or dict(test), dict(task.predictions)


def is_learned(model: torch.nn.Module) -> bool:
    """False for a non-learned baseline (``learned = False``, no parameters): nothing to fit."""
    return getattr(model, "learned", True) or any(True for _ in model.parameters())


def evaluate_as_is(job: Job) -> tuple[dict, dict, dict, dict]:
    """(val, test, test, predictions) of a model that is not trained (a baseline)."""
    trainer, task, dm = job.trainer, job.task, job.datamodule
    task.keep_predictions = True
    trainer.validate(task, datamodule=dm, verbose=False)
    trainer.test(task, datamodule=dm, verbose=False)
    val = dict(task.last_metrics.get("val", {}))
    test = dict(task.last_metrics.get("test", {}))
    return val, test, dict(test), dict(task.predictions)


def execute(job: Job, resume: str | None) -> Outcome:
    """Fit and evaluate ``job``; collect what the record and the run folder need."""
    if not is_learned(job.model):
        log.info(
            "%s is not learned: evaluated on val and test without training", job.cfg.model.name
        )
        segment = 0.0
        val, test, test_last, predictions = evaluate_as_is(job)
        return _outcome(job, segment, val, test, test_last, predictions)
    segment = fit(job, resume)
    # a resumed run adds the fit time of its earlier segments (restored from last.ckpt by fit)
    train_time = job.timer.prior_fit_seconds + segment
    val, test, test_last, predictions = evaluate(job)
    return _outcome(job, train_time, val, test, test_last, predictions)


def _outcome(job: Job, train_time: float, val, test, test_last, predictions) -> Outcome:
    return measured_outcome(
        job, train_time, (val, test, test_last, predictions), job.timer, job.trainer,
        job.task.history, job.checkpoint.best_epoch,
    )  # fmt: skip


def measured_outcome(
    job: Job,
    train_time: float,
    evaluated: tuple[dict, dict, dict, dict],
    timer,
    trainer,
    history: list[dict],
    best_epoch: int | None,
) -> Outcome:
    """The outcome of ``job`` whose training ``trainer`` ran, timed by ``timer`` (the job's own,
    or a pack's); inference throughput is always the job's own test pass."""
    val, test, test_last, predictions = evaluated
    history = [
        {**h, "epoch_time_s": round(timer.epoch_seconds[h["epoch"]], 4)}
        if h["epoch"] in timer.epoch_seconds
        else h
        for h in history
    ]
    device = trainer.strategy.root_device
    return Outcome(
        val=val,
        test=test,
        test_last=test_last,
        predictions=predictions,
        history=history,
        best_epoch=best_epoch,
        epochs_run=trainer.current_epoch,
        train_time_s=train_time,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        cost={
            "train_time_s": round(train_time, 3),
            "train_samples_per_sec": timer.samples_per_sec,
            "epoch_time_s": timer.steady_epoch_s,
            "infer_samples_per_sec": job.timer.infer_samples_per_sec,
            "peak_mem_mb": round(peak_mem_mb(device), 1),
            # earlier segments of a resumed run; train() adds this process's wall time
            "wall_time_s": round(timer.prior_fit_seconds, 3),
        },
    )
