"""Deprecated name of :mod:`bench.launch.colocate` (kept for one release).

"pack" now means packed seeds only (``execution.pack_seeds``); processes sharing a GPU are
"colocated" (``hydra/launcher=colocate``, ``bench-speed colocate``)."""

from __future__ import annotations

import warnings

from bench.launch.colocate import SoloJobMeasurement, jobs_per_gpu, measure_first_job, mps_active

warnings.warn(
    "bench.launch.pack is renamed bench.launch.colocate (pack_size -> jobs_per_gpu); the old "
    "name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
pack_size = jobs_per_gpu

__all__ = ["SoloJobMeasurement", "measure_first_job", "mps_active", "pack_size"]
