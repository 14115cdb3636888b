"""Packed seeds against K separate runs: training steps per second of one process.

A cell trains ``k`` members of one model for a few steps, either packed
(:class:`bench.models.packed.PackedNetwork`: one forward/backward for all) or one after the other
(K separate networks, what K unpacked runs do on one device), on random tensors of the real
input size, and reports samples/s over all members and the peak resident memory above the
process's footprint after imports. Each cell runs
in a fresh process so that its peak memory is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

from bench.models import build_model
from bench.models.packed import PackedNetwork
from bench.spec import DataSpec

MODELS = {
    "bccnn": ("bccnn", 2, {}),
    "resnet18_28": (
        "resnet18",
        2,
        {"small_input_stem": True, "init": "torch", "pretrained": False, "drop_rate": 0.0},
    ),
    "cnn3d": ("cnn3d", 3, {}),
}


def _members(model: str, k: int, size: int) -> list[nn.Module]:
    name, dims, options = MODELS[model]
    spec = DataSpec("bench", "multi-class", dims, 1, 3, (size,) * dims, ("a", "b", "c"))
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_model(name, spec, **options).train())
    return out


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: ``5`` into ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure_cell(model: str, k: int, mode: str, batch: int, steps: int, size: int) -> dict:
    """Samples/s (all members) of ``steps`` timed training steps after one warm-up step, and
    the peak memory above the process's footprint after imports (Linux)."""
    dims = MODELS[model][1]
    base = _rss_mb() if _reset_peak_rss() else 0.0
    members = _members(model, k, size)
    xs = torch.randn(k, batch, 1, *(size,) * dims)
    ys = torch.randint(0, 3, (k, batch))
    if mode == "packed":
        net = PackedNetwork(members).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step() -> None:
            out = net(xs)
            loss = sum(nn.functional.cross_entropy(out[i], ys[i]) for i in range(k))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    else:
        opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in members]

        def step() -> None:
            for i, m in enumerate(members):
                loss = nn.functional.cross_entropy(m(xs[i]), ys[i])
                opts[i].zero_grad(set_to_none=True)
                loss.backward()
                opts[i].step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {
        "model": model,
        "k": k,
        "mode": mode,
        "batch": batch,
        "input_size": size,
        "steps": steps,
        "samples_per_sec": round(k * batch * steps / seconds, 1),
        "peak_mem_mb": round(_peak_rss_mb() - base, 1),
        "threads": torch.get_num_threads(),
    }


def run_cell(model: str, k: int, mode: str, batch: int, steps: int, size: int) -> dict:
    """:func:`measure_cell` in a fresh interpreter (its own peak memory)."""
    code = (
        "import json,sys; from bench.speed.packed_bench import measure_cell; "
        f"print(json.dumps(measure_cell({model!r}, {k}, {mode!r}, {batch}, {steps}, {size})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": model, "k": k, "mode": mode, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])
