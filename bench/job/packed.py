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
import time
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from bench.errors import ConfigError
from bench.io import atomic_save
from bench.job.build import Job, build_job, build_trainer, harness_callbacks
from bench.job.execute import evaluate, fit_module, measured_outcome
from bench.job.lifecycle import (
    DONE,
    busy,
    checked,
    close_record,
    done_record,
    ending_of,
    locate,
    not_started,
    open_record,
    readable_checkpoint,
    run_context,
    setup_process,
    skipped,
    stop_if_interrupted,
)
from bench.job.packed_checkpoints import PackedResume, join, read_member_checkpoints
from bench.job.persist import describe_job, record_outcome
from bench.models.packed import packable
from bench.records import RunFiles, RunRecord, RunStore
from bench.sweep import JobOutcome
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
        self.run_id, self.done_elsewhere = locate(store, cfg_dict, bool(cfg.get("force")))
        self.run_dir = store.run_dir(self.run_id)
        self.record: RunRecord | None = None
        self.job: Job | None = None


@dataclass
class PackResult:
    """What a pack did: ``outcomes`` by member number (skipped, not started, or trained
    packed), and the members left to train one at a time (``singles``: member number, config,
    its datamodule when built) by the caller, with one log line saying why."""

    outcomes: dict[int, JobOutcome] = field(default_factory=dict)
    singles: list[tuple[int, DictConfig, object]] = field(default_factory=list)


def train_packed(cfg: DictConfig) -> PackResult:
    """Train seeds ``cfg.seed .. cfg.seed+K-1`` of ``cfg`` as one packed network; write one
    record per seed (each member's outcome is reported to the sweep)."""
    setup_process(cfg)
    k = pack_size(cfg)
    result = PackResult()
    if cfg.seed is None:
        error = ConfigError("execution.pack_seeds needs seed=N (the first seed of the pack)")
        result.outcomes[0] = not_started(OmegaConf.to_container(cfg, resolve=True), error)
        return result
    seeds = [int(cfg.seed) + i for i in range(k)]
    cfgs = [member_config(cfg, s) for s in seeds]
    reason = config_obstacle(cfg)
    if reason:
        log.info("execution.pack_seeds=%d: seeds %s train one at a time: %s", k, seeds, reason)
        result.singles = [(i, c, None) for i, c in enumerate(cfgs)]
        return result
    store = RunStore(cfg.paths.runs_dir)
    force = bool(cfg.get("force"))
    members: list[_Member] = []
    for i, c in enumerate(cfgs):
        prepared = checked(c, member=i)
        if isinstance(prepared, JobOutcome):
            result.outcomes[i] = prepared
            return result
        members.append(_Member(c, *prepared, store))
    todo = []
    for i, m in enumerate(members):
        done = done_record(store, m.run_id, m.done_elsewhere, force)
        if done is None:
            todo.append((i, m))
        else:
            result.outcomes[i] = skipped(m.run_id, done, member=i)
    if len(todo) < 2:  # a lone remaining seed trains unpacked
        result.singles = [(i, m.cfg, m.datamodule) for i, m in todo]
        return result
    with contextlib.ExitStack() as claims:
        claimed = []
        for i, m in todo:
            if not claims.enter_context(store.claim(m.run_id)):
                result.outcomes[i] = busy(m.run_id, member=i)
            elif (done := done_record(store, m.run_id, m.done_elsewhere, force)) is not None:
                result.outcomes[i] = skipped(m.run_id, done, member=i)  # finished meanwhile
            else:
                claimed.append((i, m))
        trained = _train_claimed(cfg, claimed, store) if len(claimed) >= 2 else None
    if trained is None:  # the claims are released: each member claims again, as one run
        result.singles = [(i, m.cfg, m.datamodule) for i, m in claimed]
    else:
        result.outcomes.update(trained)
    return result


def _resume_points(members: list[_Member], force: bool) -> list[dict] | None | bool:
    """The members' resume checkpoints (all at one epoch), None to start afresh, or False when
    they must run one at a time (a member's is missing, unreadable or at another epoch: each
    then resumes alone, and the unpacked path sets a corrupt checkpoint aside)."""
    lasts = [RunFiles(m.run_dir).resume for m in members]
    seeds = [int(m.cfg.seed) for m in members]
    if force or not any(p.exists() for p in lasts):
        for m in members:  # starting afresh: stale checkpoints go
            for f in RunFiles(m.run_dir).checkpoints.glob("*.ckpt"):
                f.unlink()
        return None
    if not all(p.exists() and readable_checkpoint(p) for p in lasts):
        log.info("seeds %s train one at a time: not every member has a readable resume "
                 "checkpoint", seeds)  # fmt: skip
        return False
    checkpoints = read_member_checkpoints([m.run_dir for m in members])
    if len({(c.get("epoch"), c.get("global_step")) for c in checkpoints}) != 1:
        log.info("seeds %s train one at a time: their resume checkpoints are at different "
                 "epochs", seeds)  # fmt: skip
        return False
    return checkpoints


def _train_claimed(
    cfg: DictConfig, claimed: list[tuple[int, _Member]], store: RunStore
) -> dict[int, JobOutcome] | None:
    """Train the claimed members packed; None when they must run one at a time instead."""
    start = time.perf_counter()
    members = [m for _, m in claimed]
    seeds = [int(m.cfg.seed) for m in members]
    resume_from = _resume_points(members, bool(cfg.get("force")))
    if resume_from is False:
        return None
    for m in members:
        m.job = build_job(m.cfg, m.run_dir, run_context(m.run_id)[0], m.datamodule)
    reason = model_obstacle(members[0].job)
    if reason:
        log.info("seeds %s train one at a time: %s", seeds, reason)
        for m in members:
            finish_trackers(m.job.loggers)
        return None
    packed = {"k": len(members), "seeds": seeds, "implementation": IMPLEMENTATION}
    for m in members:
        resumed = str(RunFiles(m.run_dir).resume) if resume_from else None
        m.record = open_record(m.cfg, m.cfg_dict, m.run_id, store, resumed, packed)
        log.info("run %s -> %s (packed, seed %d of %s)%s", m.run_id, m.run_dir, m.cfg.seed,
                 seeds, " (resuming)" if resume_from else "")  # fmt: skip
    ending = DONE
    try:
        _fit_and_evaluate(cfg, members, resume_from)
    except (
        Exception,
        KeyboardInterrupt,
        SystemExit,
    ) as e:  # every member's record says how it ended
        ending = ending_of(e)
    wall = time.perf_counter() - start
    outcomes = {}
    for i, m in claimed:
        try:
            outcomes[i] = close_record(m.record, store, cfg, ending, wall, member=i)
        finally:
            finish_trackers(m.job.loggers)
    stop_if_interrupted(ending)
    return outcomes


def _fit_and_evaluate(cfg: DictConfig, members: list[_Member], resume_from: list | None) -> None:
    """One fit of the pack, then each member evaluated and persisted by the unpacked path."""
    seeds = [int(m.cfg.seed) for m in members]
    task = PackedTask([m.job.task for m in members], [m.datamodule for m in members], seeds)
    trainer, timer = _packed_trainer(cfg, task, members)
    resume_path = None
    if resume_from is not None:
        resume_path = members[0].run_dir / "checkpoints" / "packed-resume.ckpt"
        joined = join(resume_from, task)
        atomic_save(resume_path, lambda f: torch.save(joined, f))
    try:
        segment = fit_module(trainer, task, str(resume_path) if resume_path else None)
    finally:
        if resume_path is not None:
            resume_path.unlink(missing_ok=True)
    train_time = timer.prior_fit_seconds + segment
    for k, m in enumerate(members):
        _evaluate_member(m, task, k, trainer, timer, train_time)


def _packed_trainer(cfg: DictConfig, task: PackedTask, members: list[_Member]):
    """The pack's Trainer: the harness's callbacks of any fit (the first seed's epoch reseed,
    progress, pruning) plus the pack's timer and per-member resume checkpoints."""
    timer = PackedThroughputTimer()
    every = (cfg.get("checkpoint") or {}).get("every_minutes", 5.0)
    resume = PackedResume([m.run_dir for m in members], every)
    callbacks, bar = harness_callbacks(cfg, task.monitor)
    trainer = build_trainer(cfg, [timer, resume, *callbacks], bar, members[0].datamodule)
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
