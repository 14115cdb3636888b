"""``hydra/launcher=slurm`` and ``slurm_cpu``: Hydra's submitit SLURM launcher, quiet where SLURM
accounting is off.

submitit follows its jobs with ``sacct``; on a cluster without accounting storage (small lab
clusters, a one-node test cluster) every poll then warns "Bypassing sacct error". The jobs are
still followed (by their result files), so the warning is said once, in our words, and the rest
are dropped by message.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)

log = logging.getLogger("bench.launch")
SACCT_NOISE = r".*Bypassing sacct error"


class SlurmLauncher(SubmititSlurmLauncher):
    """The submitit SLURM launcher; sacct's errors without accounting said once."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            returns = super().launch(job_overrides, initial_job_idx)
        sacct = [w for w in caught if "Bypassing sacct error" in str(w.message)]
        if sacct:
            log.info(
                "SLURM accounting is off on this cluster (sacct answered %d poll(s) with an "
                "error): the jobs were followed by their result files",
                len(sacct),
            )
        for w in caught:  # everything else is shown as it would have been
            if w not in sacct:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return returns
