"""``bench-speed datapath``: what a CPU training step spends outside the network, and whether
torch's inter-op thread pool matters.

- **prep**: a uint8 batch becomes the network's input (scaled to [0, 1], normalised, in the
  model's memory layout). Timed three ways, interleaved with the model's own training step at
  the setting ``trainer=cpu_fast`` picks (one process, medians over repetitions):
  ``fp32`` as the harness does it (``float() / 255``, normalise, then the layout copy in the
  task's ``forward``), ``fp32_fused`` (one converting copy into the layout, then the affine in
  place) and ``bf16_fused`` (the same straight into bf16, which autocast would cast to anyway).
- **interop**: the training step with the inter-op pool at 1 thread and at every core, each in
  a fresh process (the pool's size can be set once per process), alternated over repetitions.

Written to ``cpu_datapath.csv`` / ``.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from bench.errors import ConfigError
from bench.job.cpu_fast import model_key, preset_choice
from bench.job.instantiate import compose_train
from bench.paths import conf_dir
from bench.speed.roofline import MODELS, SETTINGS, _timed, build_cell
from bench.speed.runners import model_options
from bench.speed.tables import machine_facts, ratio_spread, write_replacing

MEAN, STD = 0.5, 0.5  # the MedMNIST normalisation the harness applies


def fast_setting(model: str) -> str:
    """The roofline setting ``trainer=cpu_fast`` picks for ``model`` on this CPU (the preset's
    own table and choice)."""
    from omegaconf import OmegaConf

    table = compose_train(["trainer=cpu_fast"]).execution.cpu_fast
    key = model_key(OmegaConf.create(model_options(MODELS[model][0], conf_dir())))
    precision, channels_last, _ = preset_choice(table, key)
    return ("bf16" if precision.startswith("bf16") else "fp32") + ("_cl" if channels_last else "")


def _prep_paths(cl_format, fast_dtype: torch.dtype | None) -> dict:
    """name -> function(uint8 batch) -> network input."""
    scale, shift = 1.0 / (255.0 * STD), -MEAN / STD

    def harness(x):  # bench.data.base.preprocess, then BaseTask.forward's layout copy
        x = (x.float() / 255.0 - MEAN) / STD
        return x.contiguous(memory_format=cl_format) if cl_format is not None else x

    def fused(dtype):
        fmt = cl_format if cl_format is not None else torch.contiguous_format
        return lambda x: x.to(dtype, memory_format=fmt).mul_(scale).add_(shift)

    paths = {"fp32": harness, "fp32_fused": fused(torch.float32)}
    if fast_dtype is not None:
        paths["bf16_fused"] = fused(fast_dtype)
    return paths


def measure_prep(model: str, reps: int, min_s: float) -> list[dict]:
    """Each prep path's ms per batch next to the model's training step at its fast setting."""
    setting = fast_setting(model)
    dtype, cl, _ = SETTINGS[setting]
    cell = build_cell(model, setting)
    spec = MODELS[model][1]
    x8 = torch.randint(0, 256, (len(cell.x), spec.in_channels, *spec.input_size), dtype=torch.uint8)
    fmt = (
        (torch.channels_last_3d if spec.spatial_dims == 3 else torch.channels_last) if cl else None
    )
    paths = _prep_paths(fmt, dtype)
    ref = paths["fp32"](x8)
    for name, fn in paths.items():  # the same input, to bf16's rounding
        if not torch.allclose(fn(x8).float(), ref, atol=1e-2):
            raise AssertionError(f"prep path {name} disagrees with the harness's")
    _timed(cell.train_step, 0.0, 2)
    times: dict[str, list[float]] = {"step": [], **{k: [] for k in paths}}
    for _ in range(reps):
        times["step"].append(_timed(cell.train_step, min_s, 1))
        for name, fn in paths.items():
            times[name].append(_timed(lambda fn=fn: fn(x8), min_s / 4, 3))
    step = statistics.median(times["step"])
    rows = []
    for name in paths:
        prep = statistics.median(times[name])
        rows.append(
            {
                "model": model,
                "kind": "prep",
                "variant": name,
                "setting": setting,
                "threads": torch.get_num_threads(),
                "batch": len(cell.x),
                "ms": round(prep * 1000, 4),
                "train_step_ms": round(step * 1000, 3),
                "share_of_step": round(prep / step, 5),
            }
        )
    return rows


_CHILD = """
import json, sys, torch
interop, threads, model, setting, min_s = sys.argv[1:6]
torch.set_num_interop_threads(int(interop)); torch.set_num_threads(int(threads))
from bench.speed.roofline import build_cell, _timed
cell = build_cell(model, setting)
_timed(cell.train_step, 0.0, 2)
print(json.dumps(_timed(cell.train_step, float(min_s), 1)))
"""


def measure_interop(model: str, threads: int, reps: int, min_s: float) -> list[dict]:
    """The model's training step (fast setting) with the inter-op pool at 1 and at every core,
    each a fresh process, alternated ``reps`` times."""
    setting = fast_setting(model)
    pools = sorted({1, os.cpu_count() or 1})
    times: dict[int, list[float]] = {p: [] for p in pools}
    for rep in range(reps):
        for pool in pools if rep % 2 == 0 else pools[::-1]:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(pool), str(threads), model, setting, str(min_s)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise RuntimeError(out.stderr.strip().splitlines()[-1])
            times[pool].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for pool in pools:
        # each repetition ran the pools back to back: their ratio cancels drift between reps
        paired = [t / b for t, b in zip(times[pool], times[1], strict=True)]
        median, low, high = ratio_spread(paired, 4)
        rows.append(
            {
                "model": model,
                "kind": "interop",
                "variant": f"interop_{pool}",
                "setting": setting,
                "threads": threads,
                "batch": MODELS[model][2],
                "ms": None,
                "train_step_ms": round(statistics.median(times[pool]) * 1000, 3),
                "share_of_step": None,
                "step_vs_interop_1": median,
                "step_vs_interop_1_min": low,
                "step_vs_interop_1_max": high,
            }
        )
    return rows


def markdown(table: pd.DataFrame) -> str:
    """The data path and inter-op tables as Markdown (every figure from the CSV)."""
    prep = table[table["kind"] == "prep"]
    inter = table[table["kind"] == "interop"]
    lines = [
        "# Outside the network: the data path and the inter-op pool",
        "",
        "Generated by `bench-speed datapath` from `cpu_datapath.csv`. Prep: a uint8 batch to the",
        "network's input, timed in the same process as the model's training step at the",
        "setting `trainer=cpu_fast` picks (medians). `fp32` is the harness's path.",
        "",
        "| model | setting | threads | batch | prep | ms per batch | share of the step |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r.model} | {r.setting} | {r.threads} | {r.batch} | {r.variant} | {r.ms:.3f} | "
            f"{r.share_of_step:.2%} |"
            for r in prep.itertuples()
        ],
    ]
    if not inter.empty:
        lines += [
            "",
            "Inter-op pool: the same training step in fresh processes with",
            "`torch.set_num_interop_threads` at 1 and at every core, the two back to back in",
            "each repetition (order alternated); the ratio is the median of the per-repetition",
            "ratios, with their range.",
            "",
            "| model | setting | threads | inter-op pool | step ms | step / pool of 1 "
            "(range over repetitions) |",
            "|---|---|---|---|---|---|",
            *[
                f"| {r.model} | {r.setting} | {r.threads} | {r.variant.split('_')[1]} | "
                f"{r.train_step_ms:.1f} | {r.step_vs_interop_1:.3f} "
                f"({r.step_vs_interop_1_min:.3f}–{r.step_vs_interop_1_max:.3f}) |"
                for r in inter.itertuples()
            ],
        ]
    return "\n".join(lines) + "\n"


def datapath(args) -> int:
    """``bench-speed datapath``: prep paths per model and thread count; the inter-op pool."""
    unknown = [m for m in args.roofline_models + args.interop_models if m not in MODELS]
    if unknown:
        raise ConfigError(f"datapath: unknown {' '.join(unknown)}; models: {', '.join(MODELS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for model in args.roofline_models:
            rows += measure_prep(model, args.reps, args.min_seconds)
            print(f"datapath: {model} at {threads} threads done", flush=True)
        for model in args.interop_models:
            rows += measure_interop(model, threads, args.reps, args.min_seconds)
    facts = machine_facts("cpu")
    table = pd.DataFrame(rows).assign(machine=facts["machine"], torch=facts["torch"])
    table = write_replacing(
        out / "cpu_datapath.csv", table, ["model", "kind", "variant", "threads"]
    )
    (out / "cpu_datapath.md").write_text(markdown(table))
    print(markdown(table))
    return 0
