"""``hydra/launcher=colocate``: K jobs of a sweep at once on one GPU, K chosen by a probe.

Separate processes (joblib/loky, as Hydra's joblib launcher); the run store's claims keep two
processes from training the same run. The logic lives in :mod:`bench.launch.colocate`.
``hydra/launcher=gpu_pack`` (:class:`PackLauncher`) is its deprecated name, kept one release.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import open_dict

log = logging.getLogger("bench.launch")


def _measure_first_job_alone(hydra_context, config, overrides, singleton_state):
    """In a fresh process: compose the first job's config and probe it on the GPU."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    from bench.launch.colocate import measure_first_job

    setup_globals()
    Singleton.set_state(singleton_state)
    cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    HydraConfig.instance().set_config(cfg)
    return measure_first_job(cfg)


class ColocateLauncher(JoblibLauncher):
    """Joblib launcher whose ``n_jobs`` may be ``auto`` (chosen by probing the first job)."""

    def __init__(
        self,
        n_jobs: Any = "auto",
        max_jobs: int = 8,
        memory_fraction: float = 0.85,
        target_util: float = 90.0,
        **joblib: Any,
    ) -> None:
        super().__init__(n_jobs=n_jobs, **joblib)
        self.max_jobs, self.memory_fraction, self.target_util = (
            max_jobs,
            memory_fraction,
            target_util,
        )

    def _choose(self, job_overrides: Sequence[Sequence[str]]) -> int:
        from hydra.core.singleton import Singleton
        from joblib import Parallel, delayed

        from bench.launch.colocate import jobs_per_gpu, mps_active

        n_jobs = self.joblib.get("n_jobs", "auto")
        if n_jobs != "auto":
            return int(n_jobs)
        import torch

        if not torch.cuda.is_available() or not job_overrides:
            log.info("colocate: no GPU; running one job at a time (set hydra.launcher.n_jobs)")
            return 1
        (solo,) = Parallel(n_jobs=1, backend="loky")(
            [
                delayed(_measure_first_job_alone)(
                    self.hydra_context, self.config, job_overrides[0], Singleton.get_state()
                )
            ]
        )
        k, why = jobs_per_gpu(solo, self.max_jobs, self.memory_fraction, self.target_util)
        log.info(
            "colocate: %d jobs at once (%s)%s", k, why, "; CUDA MPS active" if mps_active() else ""
        )
        return k

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        k = min(self._choose(job_overrides), max(1, len(job_overrides)))
        self.joblib["n_jobs"] = k
        # jobs read the chosen K from their config (torch threads = cores / K, the ETA)
        with open_dict(self.config):
            self.config.hydra.launcher.n_jobs = k
        os.environ["MEDBENCH_JOBS_AT_ONCE"] = str(k)  # read by the jobs (loky inherits it)
        return super().launch(job_overrides, initial_job_idx)


class PackLauncher(ColocateLauncher):
    """``hydra/launcher=gpu_pack``: the deprecated name of ``hydra/launcher=colocate``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        log.warning(
            "hydra/launcher=gpu_pack is renamed hydra/launcher=colocate (same options); "
            "the old name goes in the next release"
        )
        super().__init__(*args, **kwargs)
