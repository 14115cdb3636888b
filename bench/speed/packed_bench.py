"""Packed seeds against K separate runs: training steps per second of one process.

A cell trains ``k`` members of one model for a few steps, either packed (one forward/backward
for all: ``vmap``, :class:`bench.models.packed.PackedNetwork`, or ``grouped``,
:class:`bench.models.packed_grouped.GroupedPackedNetwork`) or one after the other (``separate``:
K networks, what K unpacked runs do on one device), on random tensors of the real input size,
and reports samples/s over all members and the peak memory (CPU: resident memory above the
process's footprint after imports; GPU: torch's peak allocation). Each cell runs in a fresh
process so that its peak memory is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from bench.errors import ConfigError
from bench.models import build_model
from bench.models.packed import PackedNetwork
from bench.models.packed_grouped import GroupedPackedNetwork
from bench.spec import DataSpec
from bench.speed.tables import machine_facts, write_replacing
from bench.toolkit import resolve_device

PACKERS = {"vmap": PackedNetwork, "grouped": GroupedPackedNetwork}
IMPLEMENTATION_NAMES = {"vmap": "torch.func vmap", "grouped": "grouped conv"}

MODELS = {
    "bccnn": ("bccnn", 2, {}),
    "resnet18_28": (
        "resnet18",
        2,
        {"small_input_stem": True, "init": "torch", "pretrained": False, "drop_rate": 0.0},
    ),
    "resnet50_28": (
        "resnet50",
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


def measure_cell(
    model: str, k: int, mode: str, batch: int, steps: int, size: int, device: str = "cpu"
) -> dict:
    """Samples/s (all members) of ``steps`` timed training steps after one warm-up step, and
    the peak memory (``mode``: separate, vmap or grouped)."""
    dims = MODELS[model][1]
    dev = torch.device(device)
    base = _rss_mb() if _reset_peak_rss() else 0.0
    members = [m.to(dev) for m in _members(model, k, size)]
    xs = torch.randn(k, batch, 1, *(size,) * dims, device=dev)
    ys = torch.randint(0, 3, (k, batch), device=dev)
    if mode in PACKERS:
        net = PACKERS[mode](members).to(dev).train()
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
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    peak = (
        torch.cuda.max_memory_allocated(dev) / 2**20
        if dev.type == "cuda"
        else _peak_rss_mb() - base
    )
    return {
        "model": model,
        "k": k,
        "mode": mode,
        "batch": batch,
        "input_size": size,
        "steps": steps,
        "samples_per_sec": round(k * batch * steps / seconds, 1),
        "peak_mem_mb": round(peak, 1),
        "threads": torch.get_num_threads(),
    }


def run_cell(
    model: str, k: int, mode: str, batch: int, steps: int, size: int, device: str = "cpu"
) -> dict:
    """:func:`measure_cell` in a fresh interpreter (its own peak memory)."""
    args = f"{model!r}, {k}, {mode!r}, {batch}, {steps}, {size}, {device!r}"
    code = (
        "import json,sys; from bench.speed.packed_bench import measure_cell; "
        f"print(json.dumps(measure_cell({args})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": model, "k": k, "mode": mode, "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def packed_seeds(args) -> int:
    """K seeds packed (torch.func vmap and/or grouped convolutions) vs K separate runs, side by
    side per K and model."""
    unknown = [m for m in args.packed_models if m not in MODELS]
    if unknown:
        raise ConfigError(f"--packed-models {' '.join(unknown)}: choose from {', '.join(MODELS)}")
    unknown = [i for i in args.implementations if i not in IMPLEMENTATION_NAMES]
    if unknown:
        raise ConfigError(
            f"--implementations {' '.join(unknown)}: choose from {', '.join(IMPLEMENTATION_NAMES)}"
        )
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_facts(device)["machine"]
    rows = []
    for model in args.packed_models:
        for k in args.packed_k:
            modes = ["separate", *args.implementations]
            cells = {
                mode: run_cell(model, k, mode, args.batch, args.steps, args.size, device)
                for mode in modes
            }
            for mode, cell in cells.items():
                if "error" in cell:
                    raise ConfigError(f"{model} K={k} {mode}: {cell['error']}")
            sep = cells["separate"]
            for impl in args.implementations:
                pk = cells[impl]
                row = {
                    "model": model,
                    "k": k,
                    "batch": args.batch,
                    "input_size": args.size,
                    "samples_per_sec_packed": pk["samples_per_sec"],
                    "samples_per_sec_separate": sep["samples_per_sec"],
                    "speedup_vs_separate": round(pk["samples_per_sec"] / sep["samples_per_sec"], 3),
                    "peak_mem_mb_packed": pk["peak_mem_mb"],
                    "peak_mem_mb_separate": sep["peak_mem_mb"],
                    "implementation": IMPLEMENTATION_NAMES[impl],
                    "device": device,
                    "machine": machine,
                    "threads": pk["threads"],
                    "torch": torch.__version__,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        # after each model: a call cut short by its time limit keeps what it measured
        path = out / "packed.csv"
        table = write_replacing(path, pd.DataFrame(rows), ["model", "implementation"])
        (out / "packed.md").write_text(packed_markdown(table))
    print(f"wrote {path} and {out / 'packed.md'}")
    return 0


def packed_markdown(table: pd.DataFrame) -> str:
    """The packed-seeds table as Markdown (generated from packed.csv, never typed)."""
    lines = [
        "# K seeds packed in one network vs K separate runs",
        "",
        "Generated by `bench-speed packed` from `packed.csv` (training steps on random tensors of",
        "the real input size, Adam, one process; samples/s over all K members; peak memory: on a",
        "CPU the resident memory above the process's footprint after imports, on a GPU torch's",
        "peak allocation). Both implementations are exact (`tests/test_packed.py`); each row's",
        "speed-up is against K separate networks timed in the same call.",
        "",
        "| model | implementation | batch | K | packed samples/s | separate samples/s | speed-up "
        "| peak MB packed | peak MB separate | machine | threads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['model']} | {r['implementation']} | {r['batch']} | {r['k']} | "
            f"{r['samples_per_sec_packed']:.0f} | "
            f"{r['samples_per_sec_separate']:.0f} | {r['speedup_vs_separate']:.2f} | "
            f"{r['peak_mem_mb_packed']:.0f} | {r['peak_mem_mb_separate']:.0f} | "
            f"{r['machine']} ({r['device']}) | {r['threads']} |"
        )
    return "\n".join(lines) + "\n"
