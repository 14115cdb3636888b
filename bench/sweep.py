"""Sweep bookkeeping: "job k of N" lines, a summary at the end, and the failed count.

Each job writes a small status file into the sweep folder; a Hydra callback, which runs in the
launching process whatever the launcher (basic, joblib, submitit), counts them at the end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.io import atomic_write_text

log = logging.getLogger("bench.sweep")

STATE_DIR = ".medbench"


@dataclass
class SweepSummary:
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0

    def line(self) -> str:
        return (
            f"sweep finished: {self.total} jobs, {self.done} done, {self.failed} failed, "
            f"{self.skipped} skipped, {self.interrupted} interrupted"
        )


LAST_SUMMARY: SweepSummary | None = None


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


def current_job() -> tuple[int, int, Path] | None:
    """``(job number, total, state dir)`` inside a multirun job, else None."""
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
    return int(hc.job.num), total, state


def report_job(status: str, run_id: str) -> None:
    """Record this job's outcome and print ``job k of N: status (...)``."""
    job = current_job()
    if job is None:
        return
    num, total, state = job
    jobs = state / "jobs"
    atomic_write_text(jobs / f"{num}.json", json.dumps({"status": status, "run_id": run_id}))
    counts = _count(jobs)
    log.info(
        "job %d of %s: %s %s (so far %d done, %d failed, %d skipped)",
        num + 1,
        total or "?",
        status,
        run_id,
        counts.get("done", 0),
        counts.get("failed", 0),
        counts.get("skipped", 0),
    )


def _count(jobs: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in jobs.glob("*.json"):
        try:
            s = json.loads(f.read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
        counts[s] = counts.get(s, 0) + 1
    return counts


class SweepSummaryCallback(Callback):
    """Hydra callback: write the grid size at the start, print and keep the summary at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST_SUMMARY
        LAST_SUMMARY = None
        state = _state_dir(config.hydra.sweep.dir)
        params = config.hydra.sweeper.get("params") or {}
        overrides = list(config.hydra.overrides.task) + [f"{k}={v}" for k, v in params.items()]
        try:
            total = grid_size(overrides)
        except Exception:  # non-grid sweepers (optuna) decide N themselves
            total = 0
        atomic_write_text(state / "total", str(total))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global LAST_SUMMARY
        state = _state_dir(config.hydra.sweep.dir)
        counts = _count(state / "jobs")
        try:
            total = int((state / "total").read_text()) or sum(counts.values())
        except (OSError, ValueError):
            total = sum(counts.values())
        summary = SweepSummary(
            total=total,
            done=counts.get("done", 0),
            failed=counts.get("failed", 0),
            skipped=counts.get("skipped", 0),
            interrupted=counts.get("interrupted", 0),
        )
        # jobs that never reported (killed launcher, crashed worker) count as failed
        missing = total - sum(counts.values())
        summary.failed += max(0, missing)
        LAST_SUMMARY = summary
        log.info(summary.line())
        atomic_write_text(state / "summary.json", json.dumps(summary.__dict__))
