"""``bench-speed roofline``: what each model achieves on this CPU against the CPU's own peak.

In one process: the GEMM peak per dtype (fp32, bf16) and thread count (a large matrix product,
the best of a few), then for each model and setting one training step (forward, backward, Adam)
and one inference batch, timed on random tensors of the model's input size. A cell's achieved
GFLOP/s is the model's FLOPs per sample (torch's FLOP counter: forward for inference, forward +
backward for training) times samples per second; its fraction of peak divides that by the peak
of its dtype at its thread count. Settings are interleaved (every setting of every model in each
repetition) so that a drift of the machine touches them alike; each cell is the median of its
repetitions. Written to ``cpu_roofline.csv`` / ``.md`` (and the peaks to ``cpu_peak.csv``).

Settings: ``fp32`` (NCHW), ``fp32_cl`` (channels-last), ``bf16`` (bf16 autocast), ``bf16_cl``,
and each ``+compile`` (``torch.compile``, default mode; its compilation is not timed).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.errors import ConfigError, one_line
from bench.hardware import cpu_bf16_native, cpu_capability
from bench.models import build_model
from bench.paths import conf_dir
from bench.spec import DataSpec
from bench.speed.runners import model_options
from bench.speed.tables import machine_facts, setting_dtype, write_replacing

# roofline name -> (conf/model option, spec, training batch)
SPEC_2D = DataSpec("roofline", "binary-class", 2, 1, 2, (28, 28))
SPEC_3D = DataSpec("roofline3d", "binary-class", 3, 1, 2, (28, 28, 28))
SPEC_SEG = DataSpec("roofline_seg", "segmentation", 2, 1, 2, (128, 128))
MODELS = {
    "bccnn": ("bccnn", SPEC_2D, 128),
    "resnet18_28": ("paper_resnet18", SPEC_2D, 128),
    "resnet50": ("resnet50", SPEC_2D, 128),
    "xception": ("xception", SPEC_2D, 128),
    "mobilenetv2": ("mobilenet", SPEC_2D, 128),
    "cnn3d": ("cnn3d", SPEC_3D, 32),
    # the heaviest rows of the studies: the paper's ResNet-50 (28) and ResNet-18+3D (28³)
    "resnet50_28": ("paper_resnet50", SPEC_2D, 128),
    "resnet18_3d": ("resnet18_3d", SPEC_3D, 32),
    "unet": ("unet", SPEC_SEG, 8),
}
# setting -> (autocast dtype or None, channels-last, compile)
SETTINGS = {
    "fp32": (None, False, False),
    "fp32_cl": (None, True, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16_cl": (torch.bfloat16, True, False),
    "fp32+compile": (None, False, True),
    "fp32_cl+compile": (None, True, True),
    "bf16+compile": (torch.bfloat16, False, True),
    "bf16_cl+compile": (torch.bfloat16, True, True),
}


def _best_seconds(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sized_rate(make, sizes, flops_of, reps: int, min_call_s: float = 0.2) -> float:
    """GFLOP/s of the call ``make(size)`` returns, best of ``reps``, at the first size
    (ascending) whose single call takes ``min_call_s`` or at the largest: a native dtype reaches
    the largest size, an emulated one (bf16 without AVX512-BF16, some 100x slower) stops before
    a single timing takes minutes."""
    for size in sizes:
        fn = make(size)
        t0 = time.perf_counter()
        fn()
        if time.perf_counter() - t0 >= min_call_s:
            break
    return flops_of(size) / _best_seconds(fn, reps) / 1e9


def gemm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """The CPU's peak GFLOP/s in ``dtype`` at the current threads: the better of a large
    matrix product (MKL; up to ``n`` x ``n``) and a large 3x3 convolution in channels-last
    (oneDNN, which reaches more than MKL's sgemm on this kind of CPU; up to batch 32), each the
    best of ``reps``."""

    def mm(size: int):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        return lambda: torch.mm(a, b)

    gemm = sized_rate(mm, [n >> k for k in (3, 2, 1, 0)], lambda size: 2 * size**3, reps)
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).to(memory_format=torch.channels_last)

    def convolve(batch: int):
        x = torch.randn(batch, 256, 28, 28).contiguous(memory_format=torch.channels_last)

        def call():
            with (
                torch.no_grad(),
                torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32),
            ):
                conv(x)

        return call

    direct = sized_rate(
        convolve, [1, 4, 16, 32], lambda batch: 2 * batch * 256 * 256 * 9 * 28 * 28, reps
    )
    return max(gemm, direct)


def _layout(x: torch.Tensor, cl: bool) -> torch.Tensor:
    if not cl:
        return x
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    return x.contiguous(memory_format=fmt)


@dataclass
class Cell:
    """One model at one setting: its network, optimiser and batches, ready to be timed."""

    name: str
    setting: str
    net: nn.Module
    run: nn.Module
    opt: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    x_eval: torch.Tensor
    dtype: torch.dtype | None

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=self.dtype)

    def train_step(self) -> None:
        with self._autocast():
            out = self.run(self.x)
            loss = nn.functional.cross_entropy(out.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer(self) -> None:
        with torch.no_grad(), self._autocast():
            self.run(self.x_eval)


def build_cell(name: str, setting: str, eval_batch: int = 256) -> Cell:
    model_name, spec, batch = MODELS[name]
    dtype, cl, compiled = SETTINGS[setting]
    torch.manual_seed(0)
    net = build_model(spec=spec, **model_options(model_name, conf_dir()))
    fmt = torch.channels_last_3d if spec.spatial_dims == 3 else torch.channels_last
    if cl:
        net = net.to(memory_format=fmt)
    run = torch.compile(net) if compiled else net
    x = _layout(torch.randn(batch, spec.in_channels, *spec.input_size), cl)
    if spec.kind == "segmentation":
        y = torch.randint(0, spec.num_classes, (batch, *spec.input_size))
    else:
        y = torch.randint(0, spec.num_classes, (batch,))
    n_eval = eval_batch if spec.spatial_dims == 2 and spec.kind != "segmentation" else batch
    x_eval = _layout(torch.randn(n_eval, spec.in_channels, *spec.input_size), cl)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    return Cell(name, setting, net, run, opt, x, y, x_eval, dtype)


def flops_per_sample(name: str) -> tuple[float, float]:
    """(inference, training) FLOPs per sample from torch's FLOP counter (batch of 2)."""
    model_name, spec, _ = MODELS[name]
    net = build_model(spec=spec, **model_options(model_name, conf_dir()))
    x = torch.randn(2, spec.in_channels, *spec.input_size)
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            net.eval()(x)
    net.train()
    y = torch.zeros(
        (2, *spec.input_size) if spec.kind == "segmentation" else (2,), dtype=torch.long
    )
    with FlopCounterMode(display=False) as both:
        nn.functional.cross_entropy(net(x), y).backward()
    return fwd.get_total_flops() / 2, both.get_total_flops() / 2


def _timed(step, min_s: float, warmup: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls, over at least ``min_s`` seconds."""
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s and n >= 2:
            return elapsed / n


def measure_cells(models: list[str], settings: list[str], reps: int, min_s: float) -> list[dict]:
    """Median step and inference times of every (model, setting), interleaved over ``reps``."""
    cells = {}
    for name in models:
        for setting in settings:
            try:
                cell = build_cell(name, setting)
                _timed(cell.train_step, 0.0, 2)  # compiles, warms the allocator
                _timed(cell.infer, 0.0, 1)
                cells[(name, setting)] = cell
            except Exception as e:  # a setting the model cannot run: an error cell, not a crash
                cells[(name, setting)] = one_line(e)
    times: dict[tuple, list[tuple[float, float]]] = {k: [] for k in cells}
    for rep in range(reps):
        for key, cell in cells.items():
            if isinstance(cell, str):
                continue
            times[key].append((_timed(cell.train_step, min_s, 1), _timed(cell.infer, min_s, 1)))
        print(f"roofline: repetition {rep + 1} of {reps} done", flush=True)
    rows = []
    for (name, setting), cell in cells.items():
        row = {"model": name, "setting": setting, "threads": torch.get_num_threads()}
        if isinstance(cell, str):
            rows.append({**row, "error": cell})
            continue
        step = statistics.median(t for t, _ in times[(name, setting)])
        infer = statistics.median(i for _, i in times[(name, setting)])
        rows.append(
            {
                **row,
                "batch": len(cell.x),
                "train_step_ms": round(step * 1000, 3),
                "train_samples_per_sec": round(len(cell.x) / step, 2),
                "infer_samples_per_sec": round(len(cell.x_eval) / infer, 2),
                "error": None,
            }
        )
    return rows


def roofline_table(rows: list[dict], peaks: dict, flops: dict) -> pd.DataFrame:
    """Achieved GFLOP/s, the fraction of the dtype's peak and the speed-up over fp32 (NCHW,
    same threads) of every cell."""
    df = pd.DataFrame(rows)
    out = []
    for r in df.to_dict("records"):
        if isinstance(r.get("error"), str):  # NaN (read back from a CSV) is no error
            out.append(r)
            continue
        r["error"] = None
        dtype = setting_dtype(r["setting"])
        peak = peaks[(dtype, r["threads"])]
        infer_f, train_f = flops[r["model"]]
        r["gflop_per_sample_train"] = round(train_f / 1e9, 4)
        r["train_gflops"] = round(r["train_samples_per_sec"] * train_f / 1e9, 2)
        r["infer_gflops"] = round(r["infer_samples_per_sec"] * infer_f / 1e9, 2)
        r["peak_gflops"] = round(peak, 1)
        r["train_frac_peak"] = round(r["train_gflops"] / peak, 3)
        r["infer_frac_peak"] = round(r["infer_gflops"] / peak, 3)
        out.append(r)
    table = pd.DataFrame(out)
    base = table[table["setting"] == "fp32"].set_index(["model", "threads"])
    for col, src in (("train_speedup", "train_samples_per_sec"),
                     ("infer_speedup", "infer_samples_per_sec")):  # fmt: skip
        table[col] = [
            round(v / base.loc[(m, t), src], 3) if (m, t) in base.index and v == v else None
            for m, t, v in zip(table["model"], table["threads"], table.get(src), strict=True)
        ]
    return table


def _other_peaks_note(table: pd.DataFrame, peaks: pd.DataFrame) -> list[str]:
    """Rows measured in another process than ``cpu_peak.csv``'s peaks were set against that
    process's own peak (``peak_gflops``); say which, so no fraction of peak is read against the
    wrong one."""
    known = {(r.dtype, int(r.threads)): round(r.gflops, 1) for r in peaks.itertuples()}
    other: dict[tuple, set[str]] = {}
    for r in table.dropna(subset=["peak_gflops"]).itertuples():
        dtype = setting_dtype(r.setting)
        if known.get((dtype, int(r.threads))) != round(r.peak_gflops, 1):
            other.setdefault((int(r.threads), dtype, round(r.peak_gflops, 1)), set()).add(r.model)
    return (
        [
            "",
            *[
                f"{', '.join(sorted(models))} at {threads} threads ({dtype}) were measured in a "
                f"process of their own and set against its peak, {peak:.1f} GFLOP/s "
                "(`peak_gflops`)."
                for (threads, dtype, peak), models in sorted(other.items())
            ],
        ]
        if other
        else []
    )


def _cpu_line(peaks: pd.DataFrame) -> list[str]:
    """The CPU the peaks were measured on: its name, the vector ISA torch dispatched to and
    whether it computes bf16 natively (peak tables written before these columns lack them)."""
    if "cpu_capability" not in peaks or peaks["cpu_capability"].isna().all():
        return []
    r = peaks.dropna(subset=["cpu_capability"]).iloc[-1]
    native = "yes" if bool(r["bf16_native"]) else "no"
    return ["", f"CPU: {r['machine']}; torch's CPU capability: {r['cpu_capability']}; "
                f"native bf16: {native}."]  # fmt: skip


def markdown(table: pd.DataFrame, peaks: pd.DataFrame) -> str:
    lines = [
        "# The CPU at its roofline",
        "",
        "Generated by `bench-speed roofline` from `cpu_roofline.csv` and `cpu_peak.csv` (one",
        "process; settings interleaved; medians). Peak: the best large GEMM per dtype and",
        "thread count. Achieved: FLOPs per sample (torch's FLOP counter) x samples/s.",
        *_cpu_line(peaks),
        "",
        "| dtype | threads | GEMM peak GFLOP/s |",
        "|---|---|---|",
        *[f"| {r.dtype} | {r.threads} | {r.gflops:.1f} |" for r in peaks.itertuples()],
        *_other_peaks_note(table, peaks),
        "",
        "| model | setting | threads | batch | train samples/s | train × fp32 | train GFLOP/s "
        "| of peak | infer samples/s | infer × fp32 | infer of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        if isinstance(r.get("error"), str):
            lines.append(f"| {r['model']} | {r['setting']} | {r['threads']} | error: "
                         f"{r['error']} |  |  |  |  |  |  |  |")  # fmt: skip
            continue
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['threads']} | {r['batch']:.0f} | "
            f"{r['train_samples_per_sec']:.0f} | {r['train_speedup']:.2f} | "
            f"{r['train_gflops']:.1f} | {r['train_frac_peak']:.0%} | "
            f"{r['infer_samples_per_sec']:.0f} | {r['infer_speedup']:.2f} | "
            f"{r['infer_frac_peak']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def roofline(args) -> int:
    """``bench-speed roofline``: peaks, then every model x setting x thread count."""
    unknown = [m for m in args.roofline_models if m not in MODELS]
    unknown += [s for s in args.settings if s not in SETTINGS]
    if unknown:
        raise ConfigError(
            f"roofline: unknown {' '.join(unknown)}; models: {', '.join(MODELS)}; "
            f"settings: {', '.join(SETTINGS)}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    facts = machine_facts("cpu")
    flops = {m: flops_per_sample(m) for m in args.roofline_models}
    peaks, rows = {}, []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            peaks[(name, threads)] = gemm_peak(dtype)
        rows += measure_cells(args.roofline_models, args.settings, args.reps, args.min_seconds)
    capability = cpu_capability()
    peak_rows = pd.DataFrame(
        [{"dtype": d, "threads": t, "gflops": round(g, 2)} for (d, t), g in peaks.items()]
    ).assign(
        machine=facts["machine"],
        bf16_native=cpu_bf16_native(),
        torch=facts["torch"],
        cpu_capability=capability,
    )
    table = roofline_table(rows, peaks, flops).assign(
        machine=facts["machine"], torch=facts["torch"], cpu_capability=capability
    )
    peak_rows = write_replacing(out / "cpu_peak.csv", peak_rows, ["dtype", "threads"])
    table = write_replacing(out / "cpu_roofline.csv", table, ["model", "setting", "threads"])
    (out / "cpu_roofline.md").write_text(markdown(table, peak_rows))
    print(json.dumps({f"{d}@{t}": round(g, 1) for (d, t), g in peaks.items()}))
    print(markdown(table, peak_rows))
    return 0
