"""How many runs to colocate on one GPU (``hydra/launcher=colocate``), from a measurement of
the sweep's first job run alone.

A 28² MedMNIST run leaves a large GPU mostly idle (launch overhead, small kernels), so several
runs in separate processes share it well. ``choose_k`` measures the first job (its model, batch
size and input shape, random data, a few training steps) for its peak GPU memory and the GPU
utilisation it reaches alone, and packs ``K = min(memory fit, utilisation headroom, max_jobs,
CPU cores)`` jobs. CUDA MPS, when its daemon runs, is used by the processes without any change.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.tasks import build_task

log = logging.getLogger("bench.launch")

CONTEXT_MB = 600  # CUDA context and allocator slack per process, beyond the solo peak


@dataclass
class SoloJobMeasurement:
    """What one job uses alone on the device."""

    peak_mem_mb: float
    util_pct: float
    step_ms: float
    free_mem_mb: float
    total_mem_mb: float


def mps_active() -> bool:
    """Whether a CUDA MPS control daemon is reachable (its pipe directory exists)."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return Path(pipe).is_dir() and any(Path(pipe).iterdir())


def measure_first_job(cfg, steps: int = 30) -> SoloJobMeasurement:
    """Train the job's model on random data of its shape for ``steps`` steps on the GPU."""
    import torch
    from hydra.utils import instantiate

    device = torch.device("cuda")
    datamodule = instantiate(cfg.data)
    spec = datamodule.spec
    model = instantiate(cfg.model, _partial_=True, _convert_="all")(spec=spec)
    task_cfg = instantiate(cfg.task, _convert_="all")
    task_cfg["class_weights"] = None
    task = build_task(model, spec, **task_cfg).to(device)
    opt = task.optimizer_factory([p for p in task.parameters() if p.requires_grad])
    bs = int(cfg.data.batch_size)
    x = torch.randn(bs, spec.in_channels, *spec.input_size, device=device)
    if spec.kind == "segmentation":
        y = torch.randint(0, spec.num_classes, (bs, *spec.input_size), device=device)
    elif spec.task == "multi-label":
        y = torch.randint(0, 2, (bs, spec.num_classes), device=device).float()
    else:
        y = torch.randint(0, spec.num_classes, (bs,), device=device)
    task.train()
    samples: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                samples.append(float(torch.cuda.utilization(device)))
            except Exception:  # no NVML: utilisation unknown, memory still decides
                return
            stop.wait(0.05)

    def step() -> None:
        loss = task.loss(task(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up: cuDNN autotune, allocator
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    stop.set()
    watcher.join()
    free, total = torch.cuda.mem_get_info(device)
    return SoloJobMeasurement(
        peak_mem_mb=torch.cuda.max_memory_allocated(device) / 2**20,
        util_pct=sum(samples) / len(samples) if samples else float("nan"),
        step_ms=1000 * elapsed / steps,
        free_mem_mb=free / 2**20,
        total_mem_mb=total / 2**20,
    )


def jobs_per_gpu(
    solo: SoloJobMeasurement,
    max_jobs: int = 8,
    memory_fraction: float = 0.85,
    target_util: float = 90.0,
    cpus: int | None = None,
) -> tuple[int, str]:
    """``(K, why)``: as many jobs as fit in memory and leave the GPU below ``target_util``."""
    per_job = solo.peak_mem_mb + CONTEXT_MB
    k_mem = max(1, math.floor(memory_fraction * solo.free_mem_mb / per_job))
    util = solo.util_pct if solo.util_pct == solo.util_pct and solo.util_pct > 0 else None
    k_util = max(1, math.ceil(target_util / util)) if util else max_jobs
    k_cpu = max(1, cpus or os.cpu_count() or 1)
    k = max(1, min(k_mem, k_util, max_jobs, k_cpu))
    why = (
        f"one job alone: {solo.peak_mem_mb:.0f} MB peak, {util or float('nan'):.0f}% GPU busy, "
        f"{solo.step_ms:.1f} ms/step; fits {k_mem} by memory, {k_util} by utilisation, "
        f"max_jobs {max_jobs}, {k_cpu} CPU cores"
    )
    return k, why
