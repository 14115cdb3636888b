"""The modes of ``bench-speed``: the harness against a raw PyTorch loop and the official MedMNIST
pipeline (``grid``), K runs packed on one device (``pack``), the hours of a full protocol
(``project``), the plain-PyTorch protocol loop (``protocol``) and re-summarising saved
repetitions (``aggregate``). The methods are runner classes in :mod:`bench.speed.runners`; the
options are in :mod:`bench.commands.speed`.

Data: PneumoniaMNIST from ``$MEDBENCH_DATA_DIR/medmnist`` (or ``--data-dir``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from medmnist import INFO

from bench.errors import ConfigError
from bench.paths import conf_dir, medmnist_dir
from bench.records import cpu_name
from bench.speed.projection import Rates, packed_seed_speedups, split_sizes, totals
from bench.speed.projection import project as project_hours
from bench.speed.protocol_loop import plain_protocol_run
from bench.speed.runners import MODELS, PRECISIONS, RUNNERS, Setting, measure, model_options
from bench.toolkit import resolve_device

BASE_BATCH, BASE_LR = 128, 1e-3  # the MedMNIST v2 recipe
FACTS = ("epochs", "train_images", "device", "cpu_threads", "machine", "torch")


def default_data_dir() -> str:
    return str(medmnist_dir())


def machine_facts(device: str) -> dict:

    name = torch.cuda.get_device_name(0) if device == "cuda" else cpu_name()
    return {
        "device": device,
        "machine": name,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def summarise(reps, warmup: int = 0):
    """Median per (model, method, precision) after dropping warm-up repetitions; ratios."""

    df = reps[reps["rep"] >= warmup] if "rep" in reps else reps
    if "error" in df:
        df = df[df["error"].isna()]
    df = df.copy()
    if "batch_size" not in df:  # tables measured before batch scaling: all at the base batch
        df["batch_size"] = BASE_BATCH
    df["batch_size"] = df["batch_size"].fillna(BASE_BATCH).astype(int)
    keys = ["model", "method", "precision", "batch_size"]
    num = [c for c in df.columns if c not in (*keys, "rep", "error", "traceback", "ran_on")]
    num = [c for c in num if pd.api.types.is_numeric_dtype(df[c])]
    out = df.groupby(keys)[num].median().reset_index()
    for c in ("epoch_time_s", "fit_time_s"):
        if c in out:
            mins = df.groupby(keys)[c].min().reset_index(drop=True)
            maxs = df.groupby(keys)[c].max().reset_index(drop=True)
            out[f"{c}_min"], out[f"{c}_max"] = mins.values, maxs.values
    out["reps"] = df.groupby(keys).size().values
    by = out.set_index(keys)["epoch_time_s"]
    auc = out.set_index(keys)["val_auc"] if "val_auc" in out else None
    ratios = []
    for (model, method, prec, batch), t in by.items():
        raw = by.get((model, "raw", prec, batch))
        ref = by.get((model, "reference", "32", BASE_BATCH))
        base = None if auc is None else auc.get((model, method, "32", BASE_BATCH))
        own = None if auc is None else auc.get((model, method, prec, batch))
        ratios.append(
            {
                "harness_over_raw": round(t / raw, 3) if method == "harness" and raw else None,
                "reference_over_harness": round(ref / t, 3)
                if method == "harness" and ref
                else None,
                # a fast setting keeps accuracy when this stays near 0 (same seed, same epochs)
                "val_auc_vs_fp32": round(own - base, 4)
                if base is not None and own is not None and (prec, batch) != ("32", BASE_BATCH)
                else None,
            }
        )
    return pd.concat([out, pd.DataFrame(ratios)], axis=1)


def markdown(summary) -> str:
    cols = [
        "model",
        "method",
        "precision",
        "batch_size",
        "epoch_time_s",
        "train_samples_per_sec",
        "gpu_util_pct",
        "val_auc",
        "val_auc_vs_fp32",
        "harness_over_raw",
        "reference_over_harness",
    ]
    cols = [c for c in cols if c in summary]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(
                "" if v is None or v != v else f"{v:.4g}" if isinstance(v, float) else str(v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scaled_lr(lr: float, scale: int, rule: str) -> float:
    """The learning rate for a batch ``scale`` times the base: ``sqrt`` (the square-root rule
    for Adam-type optimisers) or ``linear`` (Goyal et al.'s rule for SGD)."""
    factor = scale if rule == "linear" else math.sqrt(scale)
    return round(lr * factor, 8)


def grid(args) -> int:

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warmup = args.warmup_reps if args.warmup_reps is not None else (1 if device == "cuda" else 0)
    methods = [m for m in args.methods if m in RUNNERS]
    rows = []
    log = out / "speed_reps.jsonl"
    for rep in range(warmup + args.reps):
        order = methods[rep % len(methods) :] + methods[: rep % len(methods)]  # rotate
        for model in args.models:
            for method in order:
                # the official pipeline is measured as it ships: fp32, batch 128
                precisions = args.precisions if method != "reference" else ["32"]
                scales = args.batch_scales if method != "reference" else [1]
                for prec, scale in itertools.product(precisions, scales):
                    s = Setting(
                        model,
                        prec,
                        args.flag,
                        args.data_dir,
                        args.train_limit,
                        args.seed,
                        device,
                        args.epochs,
                        batch_size=BASE_BATCH * scale,
                        lr=scaled_lr(BASE_LR, scale, args.lr_scaling),
                    )
                    row = {**measure(RUNNERS[method](), s), "rep": rep}
                    row.update(batch_size=s.batch_size, lr=s.lr)
                    rows.append(row)
                    with log.open("a") as f:
                        f.write(
                            json.dumps({k: v for k, v in row.items() if k != "traceback"}) + "\n"
                        )
                    status = row.get("error") or f"epoch {row.get('epoch_time_s')} s"
                    print(
                        f"rep {rep} {model} {method} {prec} batch {s.batch_size}: {status}",
                        flush=True,
                    )
    if args.torch_profile:  # one more harness run of the first model, one epoch profiled
        prof = Path(args.torch_profile)
        s = Setting(
            args.models[0],
            args.precisions[0],
            args.flag,
            args.data_dir,
            args.train_limit,
            args.seed,
            device,
            max(2, args.epochs),
            extra=(
                "+callbacks.profile._target_=bench.speed.profile.EpochProfiler",
                f"+callbacks.profile.out={prof}",
            ),
        )
        row = measure(RUNNERS["harness"](), s)
        print(
            f"profiled one harness epoch of {args.models[0]} into {prof}: "
            f"{row.get('error') or 'ok'}",
            flush=True,
        )
    reps = pd.DataFrame(rows)
    facts = {**machine_facts(device), "epochs": args.epochs, "train_images": args.train_limit}
    for k, v in facts.items():
        reps[k] = v
    if args.append and (out / "speed_reps.csv").exists():
        old = pd.read_csv(out / "speed_reps.csv", dtype={"precision": str})
        reps = pd.concat([old[~old.model.isin(args.models)], reps], ignore_index=True)
    reps.drop(columns=["traceback"], errors="ignore").to_csv(out / "speed_reps.csv", index=False)
    summary = summarise(reps, warmup)
    for k in FACTS:
        if k in reps:
            summary[k] = reps[k].iloc[0]
    summary.to_csv(out / "speed.csv", index=False)
    (out / "speed.md").write_text(markdown(summary))
    (out / "machine.txt").write_text(json.dumps(facts, indent=2) + "\n")
    print(markdown(summary))
    return 0


def pack(args) -> int:
    """The same sweep with K = 1, 2, 4, 8 jobs at once on one device: aggregate images/s."""

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, _ = MODELS[args.models[0]]
    rows = []
    for k in args.pack:
        with tempfile.TemporaryDirectory() as tmp:
            seeds = ",".join(str(i) for i in range(args.pack_jobs))
            cmd = [
                sys.executable,
                "-m",
                "bench.hydra_main",
                "-m",
                "hydra/launcher=gpu_pack",
                f"hydra.launcher.n_jobs={k}",
                f"data={args.flag}",
                f"data.root={args.data_dir}",
                "data.download=false",
                f"model={model}",
                f"trainer.max_epochs={args.epochs}",
                "logger=none",
                f"trainer.precision={PRECISIONS[args.precisions[0]][0]}",
                f"task.channels_last={str(PRECISIONS[args.precisions[0]][1]).lower()}",
                "checkpoint.keep=none",
                f"seed={seeds}",
                f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
            ]
            env = {
                **os.environ,
                "MEDBENCH_RUNS_DIR": f"{tmp}/runs",
                "MEDBENCH_LOG_DIR": f"{tmp}/out",
                "WANDB_MODE": "disabled",
            }
            from bench.speed.runners import gpu_monitor

            t0 = time.perf_counter()
            with gpu_monitor(device) as gpu:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            from bench.records import RunStore

            recs = [r for r in RunStore(f"{tmp}/runs").iter_records()[0] if r.done]
            images = sum(r.split_sizes.get("train", 0) * (r.epochs_run or 0) for r in recs)
            rows.append(
                {
                    "k": k,
                    "jobs": args.pack_jobs,
                    "done": len(recs),
                    "wall_s": round(wall, 2),
                    "train_images": round(images),
                    "aggregate_images_per_sec": round(images / wall, 1),
                    "mean_val_auc": round(
                        sum(r.val.get("auc", 0) for r in recs) / max(1, len(recs)), 4
                    ),
                    "gpu_util_pct": gpu.get("gpu_util_pct"),
                    "model": args.models[0],
                    "precision": args.precisions[0],
                    "epochs": args.epochs,
                    **{
                        k2: v
                        for k2, v in machine_facts(device).items()
                        if k2 in ("machine", "torch")
                    },
                    "error": None
                    if proc.returncode == 0
                    else proc.stderr.strip().splitlines()[-1:],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    base = df.loc[df.k == df.k.min(), "aggregate_images_per_sec"].iloc[0]
    df["speedup_over_k1"] = (df["aggregate_images_per_sec"] / base).round(3)
    df.to_csv(out / "pack.csv", index=False)
    print(df.to_string(index=False))
    return 0


def synthetic_medmnist(root: Path, flag: str, seed: int = 0) -> Path:
    """An npz with the official split sizes and shapes of ``flag``, random pixels and labels
    (timing needs the real sizes, not the real images)."""

    info = INFO[flag]
    rng = np.random.default_rng(seed)
    shape = (28, 28, 3) if info["n_channels"] == 3 else (28, 28)
    k = len(info["label"])
    arrays = {}
    for split, n in info["n_samples"].items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, k, (n, 1))
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / f"{flag}.npz", **arrays)
    return root


def project(args) -> int:
    """Measure rates on a synthetic dataset of real size, then project the 2D protocol."""

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flag = args.project_flag
    sizes = split_sizes(flag)
    measured, rates = [], {}
    best = args.precisions[-1]
    if args.rates_from:  # rows measured before (a JSON line each), e.g. on a GPU machine
        rows = [json.loads(x) for x in Path(args.rates_from).read_text().splitlines() if x.strip()]
    else:
        data = synthetic_medmnist(Path(tempfile.mkdtemp(prefix="proj-")), flag)
        rows = []
        for model in args.models:
            for method, prec in (("harness", best), ("raw", best), ("reference", "32")):
                if method not in args.methods:
                    continue
                s = Setting(model, prec, flag, str(data), None, 0, device, args.epochs)
                row = {**measure(RUNNERS[method](), s), "dataset": flag}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
    for row in rows:
        measured.append(row)
        if "error" in row:
            continue
        method = row["method"]
        evaluates = "all" if method == "reference" else "val"
        n_eval = sizes["val"] + (sizes["train"] + sizes["test"] if evaluates == "all" else 0)
        rates[(method, row["model"])] = Rates.from_row(row, sizes["train"], n_eval, evaluates)
    packing = {}
    if args.packing_from and Path(args.packing_from).exists():
        pk = pd.read_csv(args.packing_from)
        packing = {"harness": float(pk["speedup_over_k1"].max())}
    packed_seeds = {}
    if args.packed_seeds_from and Path(args.packed_seeds_from).exists():
        measured_on = (
            "cuda" if any(r.get("ran_on", "").startswith("NVIDIA") for r in rows) else device
        )
        packed_seeds = packed_seed_speedups(pd.read_csv(args.packed_seeds_from), measured_on, 3)
    table = project_hours(rates, packing=packing, packed_seeds=packed_seeds)
    machine = next((r["ran_on"] for r in rows if r.get("ran_on")), None)
    facts = {"machine": machine} if machine else machine_facts(device)
    table["machine"] = facts["machine"]
    pd.DataFrame(measured).drop(columns=["traceback"], errors="ignore").to_csv(
        out / "projection_rates.csv", index=False
    )
    table.to_csv(out / "projection.csv", index=False)
    tot = totals(table)
    tot["machine"] = facts["machine"]
    tot.to_csv(out / "projection_totals.csv", index=False)
    print(tot.to_string(index=False))
    return 0


def plain_protocol(args) -> int:

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = model_options(args.model, conf_dir())
    rows = []
    for seed in args.seeds:
        row = plain_protocol_run(
            args.plain_protocol, args.data_dir, options, seed, args.protocol_epochs, device
        )
        row["model"] = args.model
        rows.append(row)
        print(json.dumps(row), flush=True)
        with (out / "plain_protocol.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
    pd.DataFrame(rows).to_csv(
        out / f"plain_protocol_{args.plain_protocol}_{args.model}.csv", index=False
    )
    return 0


def aggregate(args) -> int:

    src = Path(args.aggregate_from)
    if not src.is_file():
        raise ConfigError(f"bench-speed aggregate {src}: no such file")
    if src.suffix == ".csv":
        reps = pd.read_csv(src, dtype={"precision": str})
    else:
        lines = [json.loads(x) for x in src.read_text().splitlines() if x.strip().startswith("{")]
        reps = pd.DataFrame(lines)
    if reps.empty or "epoch_time_s" not in reps:
        raise ConfigError(f"bench-speed aggregate {src}: no measured rows in it")
    summary = summarise(reps, args.warmup_reps or 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "speed.csv", index=False)
    (out / "speed.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


def write_replacing(path: Path, table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Write ``table`` to ``path``, keeping the rows already there whose ``keys`` it does not
    measure again (other rows and models measured before); returns what was written."""
    if path.exists():
        old = pd.read_csv(path)
        again = old.set_index(keys).index.isin(table.set_index(keys).index)
        table = pd.concat([old[~again], table], ignore_index=True)
    table.to_csv(path, index=False)
    return table


def study_eta(args) -> int:
    """Time each row on this machine, print its hours per seed and write ``eta.csv``."""
    from bench.speed.eta import as_row, measure_row, parse_row

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for text in args.eta_rows:
        try:
            data, model, extra = parse_row(text)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        cost = measure_row(data, model, args.experiment, extra, args.train_batches)
        row = as_row(cost, args.budget_h)
        rows.append(row)
        verdict = "runs here" if row["runs_here"] else f"over {args.budget_h} h: listed"
        print(
            f"ETA {cost.dataset} x {model}: {cost.epoch_s:.0f} s/epoch, "
            f"{cost.eta_h_per_seed:.2f} h per seed ({cost.epochs} epochs, {cost.device}, "
            f"{cost.threads} threads) -> {verdict}",
            flush=True,
        )
    path = out / "eta.csv"
    write_replacing(path, pd.DataFrame(rows), ["dataset", "model"])
    print(f"wrote {path}")
    return 0


def packed_seeds(args) -> int:
    """K seeds packed (torch.func vmap and/or grouped convolutions) vs K separate runs, side by
    side per K and model."""
    from bench.speed.packed_bench import IMPLEMENTATION_NAMES, run_cell
    from bench.speed.packed_bench import MODELS as PACKABLE

    unknown = [m for m in args.packed_models if m not in PACKABLE]
    if unknown:
        raise ConfigError(f"--packed-models {' '.join(unknown)}: choose from {', '.join(PACKABLE)}")
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
