"""Sweep bookkeeping: "job k of N" lines with each job's key metric and the time left, a summary
and the sweep's leaderboard at the end, and the outcome handed to the CLI.

Each job writes a small status file into the sweep folder; a Hydra callback, which runs in the
launching process whatever the launcher (basic, joblib, submitit, colocate), counts them at the
end. The CLI learns how a run or a sweep ended from the file named by ``MEDBENCH_OUTCOME_FILE``
(set by the CLI for its own process and its children), never from module globals.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.board.terminal import sweep_board_text
from bench.io import atomic_write_text

log = logging.getLogger("bench.sweep")

STATE_DIR = ".medbench"
OUTCOME_ENV = "MEDBENCH_OUTCOME_FILE"


@dataclass
class JobOutcome:
    """How one job ended: its status, run, key metric and wall time."""

    status: str
    run_id: str
    metric: str | None = None
    value: float | None = None
    wall_s: float = 0.0
    error: str | None = None
    record_path: str | None = None
    # a failed single run: 2 for a user mistake (BenchError), 1 for anything else
    exit_code: int | None = None


@dataclass
class SweepSummary:
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0
    run_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"sweep finished: {self.total} jobs, {self.done} done, {self.failed} failed, "
            f"{self.skipped} skipped, {self.interrupted} interrupted"
        )


def write_outcome(payload: dict) -> None:
    """Hand a run's or a sweep's outcome to the CLI that started this process (if any)."""
    path = os.environ.get(OUTCOME_ENV)
    if path:
        atomic_write_text(path, json.dumps(payload))


def read_outcome(path: str | Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def grid_size(overrides: list[str]) -> int:
    """Number of jobs a basic-sweeper grid over ``overrides`` expands to."""
    parser = OverridesParser.create()
    n = 1
    for ov in parser.parse_overrides(overrides):
        if ov.is_sweep_override():
            n *= len(list(ov.sweep_string_iterator()))
    return n


def _state_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / STATE_DIR


def jobs_at_once(launcher_cfg) -> int:
    """How many jobs of the sweep run at the same time (1 for the basic launcher)."""
    import os

    for value in (
        os.environ.get("MEDBENCH_JOBS_AT_ONCE"),
        launcher_cfg.get("n_jobs"),
        launcher_cfg.get("array_parallelism"),
    ):
        try:
            if value is not None and int(value) > 0:
                return int(value)
        except (TypeError, ValueError):
            continue
    return 1


def current_job() -> tuple[int, int, Path, int] | None:
    """``(job number, total, state dir, jobs in parallel)`` inside a multirun job, else None."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    state = _state_dir(hc.sweep.dir)
    try:
        total = int((state / "total").read_text())
    except (OSError, ValueError):
        total = 0
    return int(hc.job.num), total, state, jobs_at_once(hc.launcher)


def in_sweep() -> bool:
    """True inside a multirun job (its console lines go to the sweep's log)."""
    return current_job() is not None


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def eta_seconds(jobs: list[JobOutcome], total: int, parallel: int = 1) -> float | None:
    """Time left: the mean wall time of the jobs that trained (done or failed) times the jobs
    still to run, shared among ``parallel`` workers. None before any job has trained."""
    trained = [j.wall_s for j in jobs if j.status in ("done", "failed") and j.wall_s > 0]
    if not trained or not total:
        return None
    left = max(0, total - len(jobs))
    return sum(trained) / len(trained) * left / max(1, parallel)


def report_job(outcome: JobOutcome, member: int | None = None) -> None:
    """Record this job's outcome; print ``job k of N: status run metric (progress, time left)``,
    or hand a single run's outcome to the CLI. ``member``: the run's place in a pack of seeds
    (one Hydra job, K runs); a failed member's outcome is the one the CLI keeps."""
    job = current_job()
    if job is None:
        path = os.environ.get(OUTCOME_ENV)
        earlier = read_outcome(path) if path and member else None
        if not (earlier and earlier.get("status") == "failed"):
            write_outcome({"kind": "run", **asdict(outcome)})
        return
    num, total, state, parallel = job
    jobs_dir = state / "jobs"
    name = f"{num}" if not member else f"{num}.{member}"
    atomic_write_text(jobs_dir / f"{name}.json", json.dumps(asdict(outcome)))
    jobs = _read_jobs(jobs_dir)
    counts = _count(jobs)
    metric = (
        f" {outcome.metric} {outcome.value:.4f}"
        if outcome.metric and outcome.value is not None
        else ""
    )
    eta = eta_seconds(jobs, total, parallel)
    left = f", {max(0, total - len(jobs))} left, ETA {format_duration(eta)}" if eta else ""
    log.info(
        "job %d of %s: %s %s%s (%d done, %d failed, %d skipped%s)",
        num + 1,
        total or "?",
        outcome.status,
        outcome.run_id,
        metric,
        counts.get("done", 0),
        counts.get("failed", 0),
        counts.get("skipped", 0),
        left,
    )


def _read_jobs(jobs_dir: Path) -> list[JobOutcome]:
    out = []
    for f in sorted(jobs_dir.glob("*.json")):
        try:
            out.append(JobOutcome(**json.loads(f.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


def _count(jobs: list[JobOutcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.status] = counts.get(j.status, 0) + 1
    return counts


class SweepSummaryCallback(Callback):
    """Hydra callback: write the grid size at the start; at the end print the summary and the
    sweep's leaderboard and hand the summary to the CLI."""

    def __init__(self, print_leaderboard: bool = True) -> None:
        self.print_leaderboard = print_leaderboard

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        state = _state_dir(config.hydra.sweep.dir)
        # a reused hydra.sweep.dir: the last sweep's job files must not count in this one
        shutil.rmtree(state / "jobs", ignore_errors=True)
        params = config.hydra.sweeper.get("params") or {}
        overrides = list(config.hydra.overrides.task) + [f"{k}={v}" for k, v in params.items()]
        try:
            total = grid_size(overrides)
        except Exception:  # non-grid sweepers (optuna) decide N themselves
            total = 0
        n_trials = config.hydra.sweeper.get("n_trials")
        # a pack of seeds is one job and K runs
        total *= int((config.get("execution") or {}).get("pack_seeds") or 1)
        atomic_write_text(state / "total", str(n_trials or total))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        state = _state_dir(config.hydra.sweep.dir)
        jobs = _read_jobs(state / "jobs")
        counts = _count(jobs)
        try:
            total = int((state / "total").read_text())
        except (OSError, ValueError):
            total = len(jobs)
        summary = SweepSummary(
            total=total,
            done=counts.get("done", 0),
            failed=counts.get("failed", 0),
            skipped=counts.get("skipped", 0),
            interrupted=counts.get("interrupted", 0),
            run_ids=[j.run_id for j in jobs],
        )
        # jobs that never reported (killed launcher, crashed worker) count as failed
        summary.failed += max(0, total - len(jobs))
        atomic_write_text(state / "summary.json", json.dumps(asdict(summary)))
        write_outcome({"kind": "sweep", **asdict(summary)})
        if self.print_leaderboard:
            self._print_board(config, [j.run_id for j in jobs if j.status in ("done", "skipped")])

    @staticmethod
    def _print_board(config: DictConfig, run_ids: list[str]) -> None:
        if not run_ids:
            return
        try:
            text = sweep_board_text(config.paths.runs_dir, run_ids)
        except Exception as e:  # the summary above already says how the sweep went
            log.warning("could not print the sweep's leaderboard: %s", e)
            return
        if text:
            print(f"\nleaderboard of this sweep ({len(run_ids)} runs):\n{text}", flush=True)
