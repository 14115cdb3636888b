"""``hydra/launcher=slurm`` and ``slurm_cpu``: Hydra's submitit SLURM launcher, quiet where SLURM
accounting is off.

submitit follows its jobs with ``sacct``; on a cluster without accounting storage (small lab
clusters, a one-node test cluster) every poll then logs "Bypassing sacct error". The jobs are
still followed (by their result files), so it is said once, in our words, and the repeats are
dropped by message (nothing else submitit says is touched).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra.core.utils import JobReturn
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


class SlurmLauncher(SubmititSlurmLauncher):
    """The submitit SLURM launcher; sacct's errors without accounting said once."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        quiet = _SacctFilter()
        submitit_log = logging.getLogger("submitit")
        submitit_log.addFilter(quiet)
        for handler in logging.getLogger().handlers:  # records propagated to Hydra's handlers
            handler.addFilter(quiet)
        try:
            return super().launch(job_overrides, initial_job_idx)
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
