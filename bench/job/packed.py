"""``execution.pack_seeds=K``: seeds s..s+K-1 of one configuration trained as one packed network.

Packing is an execution detail, like threads: each member writes the ordinary run record of its
seed (the run id an unpacked run of that seed has), with its own best-validation selection,
test scores, predictions, history and checkpoints; ``env.packed`` says it was trained packed.
Only the training loop is packed; every member is then evaluated by the unpacked path. Members
already done are skipped; a configuration that cannot be packed runs its seeds one at a time,
with one log line saying why.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from bench.checkpointing import RESUME_FILE
from bench.console import EpochLines, install_noise_filters, is_terminal, print_run_summary
from bench.errors import BenchError, ConfigError, Terminated, one_line
from bench.io import atomic_save
from bench.job.build import Job, build_job
from bench.job.execute import evaluate, fit_module, measured_outcome
from bench.job.instantiate import instantiate_group
from bench.job.packed_checkpoints import PackedResume, join, read_member_checkpoints
from bench.job.run import (
    describe_job,
    finish_checkpoints,
    new_record,
    not_started,
    preflight,
    readable_checkpoint,
    record_outcome,
    root_cause,
    run_context,
    set_threads,
    train_one,
)
from bench.models.packed import packable
from bench.records import RunRecord, RunStore, compute_run_id, now_iso
from bench.sweep import JobOutcome, report_job
from bench.tasks.packed import PackedTask
from bench.timing import ThroughputTimer
from bench.tracking import finish_trackers

log = logging.getLogger("bench.train")

# optimisers whose update of a parameter element reads only that element's gradient and state:
# over stacked members they act as K separate optimisers
ELEMENTWISE_OPTIMIZERS = {
    f"torch.optim.{n}"
    for n in ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta")
}
IMPLEMENTATION = "torch.func.vmap"


def pack_size(cfg: DictConfig) -> int:
    """``execution.pack_seeds`` (1 when unset)."""
    k = (cfg.get("execution") or {}).get("pack_seeds")
    if k is None:
        return 1
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"execution.pack_seeds must be a whole number >= 1, got {k!r}")
    return k


def member_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The configuration of one member: the same, with its seed, run unpacked."""
    member = cfg.copy()
    with open_dict(member):
        member.seed = seed
        member.execution.pack_seeds = 1
    return member


def config_obstacle(cfg: DictConfig) -> str | None:
    """Why this configuration's training cannot be packed (one line), or None."""
    trainer, task = cfg.trainer, cfg.task
    if (cfg.get("probe") or {}).get("kind"):
        return "probes on frozen features do not train a network"
    if (cfg.get("hparams_search") or {}).get("trial_number") is not None:
        return "an Optuna trial reports one run to its study"
    devices = trainer.get("devices", "auto")
    if (isinstance(devices, int) and devices > 1) or (
        isinstance(devices, list) and len(devices) > 1
    ):
        return "several devices (DDP) split one run already"
    if int(trainer.get("num_nodes") or 1) > 1:
        return "several nodes split one run already"
    if trainer.get("gradient_clip_val"):
        return "gradient clipping by norm would mix the members' gradients"
    if task.get("compile"):
        return "task.compile does not trace the vmapped network"
    if task.get("channels_last"):
        return "task.channels_last is not applied to stacked members"
    if float(task.get("backbone_lr_mult") or 1.0) != 1.0:
        return "task.backbone_lr_mult needs per-layer parameter groups"
    target = (task.get("optimizer") or {}).get("_target_")
    if target not in ELEMENTWISE_OPTIMIZERS:
        return f"optimizer {target} is not elementwise (members would share its statistics)"
    return None


def model_obstacle(job: Job) -> str | None:
    """Why the built job cannot be packed, or None."""
    if job.spec.kind != "classification":
        return f"{job.spec.kind} tasks are trained one at a time (only classification packs)"
    if any(not p.requires_grad for p in job.model.parameters()):
        return "a frozen backbone (parameters without gradients) is not packable"
    return packable(job.model)


class PackedThroughputTimer(ThroughputTimer):
    """Samples/s per member (the pack trains K times that); state under the unpacked key."""

    @property
    def state_key(self) -> str:
        return "ThroughputTimer"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._epoch_samples += int(batch[0].shape[1])


class _Member:
    """One seed of the pack: its config, datamodule, run id and, once claimed, record and job."""

    def __init__(self, cfg: DictConfig, cfg_dict: dict, datamodule, store: RunStore) -> None:
        self.cfg, self.cfg_dict, self.datamodule = cfg, cfg_dict, datamodule
        self.run_id = compute_run_id(cfg_dict)
        self.run_dir = store.run_dir(self.run_id)
        self.record: RunRecord | None = None
        self.job: Job | None = None


def _one_by_one(cfgs: list[DictConfig], member_nums: list[int]) -> JobOutcome:
    outcomes = [train_one(c, member=m) for c, m in zip(cfgs, member_nums, strict=True)]
    return outcomes[0]


def _done(store: RunStore, m: _Member) -> RunRecord | None:
    previous = store.read(m.run_id)
    if previous is not None:
        return previous if previous.done else None
    return store.find_same(m.cfg_dict)[0]


def train_packed(cfg: DictConfig) -> JobOutcome:
    """Train seeds ``cfg.seed .. cfg.seed+K-1`` of ``cfg`` as one packed network; write one
    record per seed. Returns the first member's outcome (each member's is reported)."""
    install_noise_filters()
    set_threads(cfg)
    k = pack_size(cfg)
    if cfg.seed is None:
        error = ConfigError("execution.pack_seeds needs seed=N (the first seed of the pack)")
        return not_started(OmegaConf.to_container(cfg, resolve=True), error)
    seeds = [int(cfg.seed) + i for i in range(k)]
    cfgs = [member_config(cfg, s) for s in seeds]
    reason = config_obstacle(cfg)
    if reason:
        log.info("execution.pack_seeds=%d: seeds %s train one at a time: %s", k, seeds, reason)
        return _one_by_one(cfgs, list(range(k)))

    store = RunStore(cfg.paths.runs_dir)
    members: list[_Member] = []
    for i, c in enumerate(cfgs):
        cfg_dict = OmegaConf.to_container(c, resolve=True)
        try:
            datamodule = preflight(c, cfg_dict)
        except Exception as e:
            cause = root_cause(e)
            if not isinstance(cause, BenchError):
                raise
            return not_started(cfg_dict, cause, member=i)
        members.append(_Member(c, cfg_dict, datamodule, store))
    first: JobOutcome | None = None
    todo = []
    for i, m in enumerate(members):
        done = None if cfg.get("force") else _done(store, m)
        if done is None:
            todo.append((i, m))
            continue
        log.info("skip %s: already done as %s (+force=true to rerun)", m.run_id, done.run_id)
        outcome = JobOutcome("skipped", m.run_id, record_path=str(done.path) if done.path else None)
        report_job(outcome, member=i)
        first = first or outcome
    if len(todo) < 2:
        outcomes = [train_one(m.cfg, m.datamodule, member=i) for i, m in todo]
        return first or outcomes[0]
    with contextlib.ExitStack() as claims:
        claimed = []
        for i, m in todo:
            if claims.enter_context(store.claim(m.run_id)):
                claimed.append((i, m))
            else:
                log.info("skip %s: another process is running it", m.run_id)
                report_job(JobOutcome("skipped", m.run_id), member=i)
        outcomes = _train_claimed(cfg, claimed, store) if len(claimed) >= 2 else None
    if outcomes is None:  # the claims are released: each member claims again, as one run
        outcomes = [train_one(m.cfg, m.datamodule, member=i) for i, m in claimed]
    return first or (outcomes[0] if outcomes else JobOutcome("skipped", members[0].run_id))


def _train_claimed(
    cfg: DictConfig, claimed: list[tuple[int, _Member]], store: RunStore
) -> list[JobOutcome] | None:
    """Train the claimed members packed; None when they must run one at a time instead."""
    start = time.perf_counter()
    nums = [i for i, _ in claimed]
    members = [m for _, m in claimed]
    force = bool(cfg.get("force"))
    seeds = [int(m.cfg.seed) for m in members]
    lasts = [m.run_dir / "checkpoints" / RESUME_FILE for m in members]
    resume_from = None
    if not force and any(p.exists() for p in lasts):
        # each resumes alone (the unpacked path sets a corrupt checkpoint aside)
        if not all(p.exists() and readable_checkpoint(p) for p in lasts):
            log.info("seeds %s train one at a time: not every member has a readable resume "
                     "checkpoint", seeds)  # fmt: skip
            return None
        resume_from = read_member_checkpoints([m.run_dir for m in members])
        if len({(c.get("epoch"), c.get("global_step")) for c in resume_from}) != 1:
            log.info("seeds %s train one at a time: their resume checkpoints are at different "
                     "epochs", seeds)  # fmt: skip
            return None
    for m in members:
        ckpt_dir = m.run_dir / "checkpoints"
        if resume_from is None and ckpt_dir.exists():
            for f in ckpt_dir.glob("*.ckpt"):
                f.unlink()
        context, overrides = run_context(m.run_id)
        m.job = build_job(m.cfg, m.run_dir, context, m.datamodule)
    reason = model_obstacle(members[0].job)
    if reason:
        log.info("seeds %s train one at a time: %s", seeds, reason)
        for m in members:
            finish_trackers(m.job.loggers)
        return None

    for m in members:
        context, overrides = run_context(m.run_id)
        previous = store.read(m.run_id)
        m.record = new_record(m.cfg, m.cfg_dict, m.run_id, overrides, context.group)
        m.record.env.packed = {"k": len(members), "seeds": seeds, "implementation": IMPLEMENTATION}
        if resume_from is not None:
            m.record.resumed_from = str(m.run_dir / "checkpoints" / "last.ckpt")
        if previous:
            m.record.attempt = previous.attempt + 1
        store.write(m.record)
        log.info("run %s -> %s (packed, seed %d of %s)%s", m.run_id, m.run_dir, m.cfg.seed,
                 seeds, " (resuming)" if resume_from else "")  # fmt: skip

    task = PackedTask([m.job.task for m in members], [m.datamodule for m in members], seeds)
    trainer, timer = _packed_trainer(cfg, task, members)
    resume_path = None
    if resume_from is not None:
        resume_path = members[0].run_dir / "checkpoints" / "packed-resume.ckpt"
        joined = join(resume_from, task)
        atomic_save(resume_path, lambda f: torch.save(joined, f))
    status, error, tb = "done", None, None
    interrupted = False
    try:
        try:
            segment = fit_module(trainer, task, str(resume_path) if resume_path else None)
        finally:
            if resume_path is not None:
                resume_path.unlink(missing_ok=True)
        train_time = timer.prior_fit_seconds + segment
        for m, k in zip(members, range(len(members)), strict=True):
            _evaluate_member(m, task, k, trainer, timer, train_time)
    except Terminated as e:
        interrupted, status, error = True, "interrupted", f"{e}; rerun the same command to resume"
    except KeyboardInterrupt:
        interrupted, status = True, "interrupted"
        error = "interrupted by the user (Ctrl-C); rerun the same command to resume"
    except Exception as e:
        cause = root_cause(e)
        status, error = "failed", one_line(cause)
        if not isinstance(cause, BenchError):
            tb = traceback.format_exc(limit=20)
    outcomes = []
    wall = time.perf_counter() - start
    for i, m in zip(nums, members, strict=True):
        rec = m.record
        if rec.status == "running":  # not finished by _evaluate_member
            rec.status, rec.error, rec.traceback = status, error, tb
        rec.finished_at = now_iso()
        earlier = rec.cost.wall_time_s or 0.0
        rec.cost.wall_time_s = round(earlier + wall, 3)
        store.write(rec)
        if rec.status == "done":
            finish_checkpoints(m.run_dir, (cfg.get("checkpoint") or {}).get("keep", "best"))
            print_run_summary(rec, wall)
        else:
            log.error("run %s %s: %s", m.run_id, rec.status, rec.error)
        finish_trackers(m.job.loggers)
        metric = rec.test.get("auc")
        outcome = JobOutcome(rec.status, m.run_id, "test_auc", metric, round(wall, 3),
                             rec.error, str(rec.path) if rec.path else None)  # fmt: skip
        if rec.status == "failed":
            outcome.exit_code = 1
        report_job(outcome, member=i)
        outcomes.append(outcome)
    if interrupted:
        raise SystemExit(130)
    return outcomes


def _packed_trainer(cfg: DictConfig, task: PackedTask, members: list[_Member]):
    ckpt_cfg = cfg.get("checkpoint") or {}
    timer = PackedThroughputTimer()
    resume = PackedResume([m.run_dir for m in members], ckpt_cfg.get("every_minutes", 5.0))
    callbacks: list = [timer, resume]
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    bar = cfg.trainer.get("enable_progress_bar", True) and is_terminal()
    if bar and cfg.get("progress_refresh_steps"):
        callbacks.append(TQDMProgressBar(refresh_rate=int(cfg.progress_refresh_steps)))
    if not bar:
        callbacks.append(EpochLines())
    dm = members[0].datamodule
    n_batches = max(1, math.ceil(dm.n_train / max(1, dm.batch_size)))
    log_every = max(1, min(int(cfg.trainer.get("log_every_n_steps") or 50), n_batches))
    trainer = instantiate_group(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=False,
        default_root_dir=cfg.paths.output_dir,
        enable_checkpointing=False,
        enable_progress_bar=bool(bar),
        log_every_n_steps=log_every,
    )
    return trainer, timer


def _replay_history(job: Job, history: list[dict]) -> None:
    """The member's curve into its own trackers, epoch by epoch, as an unpacked fit logs it."""
    for row in history:
        metrics = {
            (f"val/{k[4:]}" if k.startswith("val_") else k.replace("train_", "train/")): v
            for k, v in row.items()
            if k not in ("epoch", "step", "epoch_time_s") and v is not None
        }
        metrics["epoch"] = row["epoch"]
        for logger in job.loggers:
            logger.log_metrics(metrics, step=row["step"])


def _evaluate_member(
    m: _Member, task: PackedTask, k: int, trainer, timer: PackedThroughputTimer, train_time: float
) -> None:
    """Member ``k``: its last and best weights evaluated by the unpacked path, then persisted."""
    job, rec = m.job, m.record
    task.member_network(k)  # the last epoch's weights into the member's own network
    best = task.best[k]
    job.checkpoint.best_state = best["state"]
    job.checkpoint.best_score, job.checkpoint.best_epoch = best["score"], best["epoch"]
    describe_job(rec, job)
    evaluated = evaluate(job, last_epoch=trainer.current_epoch - 1)
    outcome = measured_outcome(job, train_time, evaluated, timer, trainer, task.histories[k],
                               best["epoch"])  # fmt: skip
    job.task.history = outcome.history
    _replay_history(job, outcome.history)
    record_outcome(rec, job, outcome)
    rec.status = "done"
