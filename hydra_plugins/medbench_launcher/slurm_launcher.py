"""``hydra/launcher=slurm`` and ``slurm_cpu``: Hydra's submitit SLURM launcher, quiet where SLURM
accounting is off, and never waiting forever on a task that left the queue.

submitit follows its jobs with ``sacct``; on a cluster without accounting storage (small lab
clusters, a one-node test cluster) every poll then logs "Bypassing sacct error". The jobs are
still followed (by their result files), so it is said once, in our words, and the repeats are
dropped by message (nothing else submitit says is touched). A task cancelled with ``scancel``
(or killed) writes no result file: without ``sacct`` submitit would wait for it forever, so a
task that has left ``squeue`` without a result for ``lost_after_s`` seconds is given up on (its
record says how far it got; rerunning the sweep resumes it).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)

log = logging.getLogger("bench.launch")
SACCT_NOISE = "Bypassing sacct error"


class _SacctFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT_NOISE in record.getMessage():
            self.dropped += 1
            return False
        return True


def _queued() -> set[str] | None:
    """Ids of the tasks SLURM still holds (array tasks expanded), or None if squeue fails."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def wait_for(jobs: list, lost_after_s: float = 60.0, poll_s: float = 2.0) -> list[JobReturn]:
    """Each job's JobReturn once it has a result; a job gone from the queue without one for
    ``lost_after_s`` seconds is returned as a completed job with no value (and logged)."""
    gone_since: dict[str, float] = {}
    pending = list(jobs)
    while pending:
        queued = _queued()
        for job in list(pending):
            if job.paths.result_pickle.exists() or job.done():
                pending.remove(job)
                continue
            if queued is None or job.job_id in queued:
                gone_since.pop(job.job_id, None)
                continue
            first = gone_since.setdefault(job.job_id, time.monotonic())
            if time.monotonic() - first >= lost_after_s:
                log.warning(
                    "task %s left the queue without a result (cancelled or killed); its run's "
                    "record says how far it got, and rerunning the sweep resumes it",
                    job.job_id,
                )
                pending.remove(job)
        if pending:
            time.sleep(poll_s)
    returns = []
    for job in jobs:
        if job.paths.result_pickle.exists():
            returns.append(job.results()[0])
        else:
            ret = JobReturn()
            ret.status, ret._return_value = JobStatus.COMPLETED, None
            returns.append(ret)
    return returns


class SlurmLauncher(SubmititSlurmLauncher):
    """The submitit SLURM launcher; sacct's errors without accounting said once; no wait for
    a task that is gone."""

    def __init__(self, lost_after_s: float = 60.0, **params: Any) -> None:
        super().__init__(**params)
        self.lost_after_s = lost_after_s

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        quiet = _SacctFilter()
        submitit_log = logging.getLogger("submitit")
        submitit_log.addFilter(quiet)
        for handler in logging.getLogger().handlers:  # records propagated to Hydra's handlers
            handler.addFilter(quiet)
        try:
            return self._launch_and_wait(job_overrides, initial_job_idx)
        finally:
            submitit_log.removeFilter(quiet)
            for handler in logging.getLogger().handlers:
                handler.removeFilter(quiet)
            if quiet.dropped:
                log.info(
                    "SLURM accounting is off on this cluster (sacct failed on %d poll(s)): "
                    "the tasks were followed by their result files",
                    quiet.dropped,
                )

    def _launch_and_wait(self, job_overrides, initial_job_idx) -> list[JobReturn]:
        """The parent's submission, with :func:`wait_for` instead of its unbounded wait."""
        import submitit

        real = submitit.AutoExecutor.map_array
        submitted: list = []

        def map_array(executor, fn, *iterables):
            submitted.extend(real(executor, fn, *iterables))
            return []  # the parent then collects no result: this launcher waits

        submitit.AutoExecutor.map_array = map_array
        try:
            super().launch(job_overrides, initial_job_idx)
        finally:
            submitit.AutoExecutor.map_array = real
        return wait_for(submitted, self.lost_after_s)
