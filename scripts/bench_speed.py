#!/usr/bin/env python
"""Speed of the harness against a raw PyTorch loop and the MedMNIST reference style.

Measured side by side in one process, on PneumoniaMNIST 28² (the real file), per model:

1. ``harness``   - bench's whole Lightning path (``bench.train.train``): epochs of training
                   plus validation, timed from the record (``cost.epoch_time_s``,
                   ``cost.train_time_s``);
2. ``raw``       - a minimal loop over the same preloaded uint8 tensors (same model, precision,
                   batch size, optimiser), one epoch + one validation pass: the lower bound;
3. ``reference`` - medmnist's Dataset + ToTensor + Normalize(.5,.5) through a DataLoader (per-item
                   PIL), one training epoch, then scoring train, val and test as the official
                   experiment script does every epoch (fp32, its default).

Writes ``results/speed/speed.csv`` (one row per model x method x precision x repetition summary)
and ``results/speed/overhead.csv`` (start-up split and per-job overhead in a 10-job multirun).

    python scripts/bench_speed.py                       # the full table (slow on a CPU)
    python scripts/bench_speed.py --reps 3 --train-limit 1024 --models resnet18_ss bccnn
    python scripts/bench_speed.py --device cuda --out results/speed/gpu   # on a GPU machine

On a GPU the harness keeps the whole dataset on the device (``data.device_resident=auto``) and the
raw loop does the same; the reference moves each DataLoader batch with ``.to(device)`` as the
official script does. GPU utilisation is sampled through NVML while each method runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

T_SCRIPT = time.time()  # the probe's parent passes its launch time to split off interpreter start
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {  # name -> (registry name, builder kwargs)
    "resnet18_ss": ("resnet18", {"small_input_stem": True}),
    "resnet50": ("resnet50", {}),
    "mobilenetv2": ("mobilenet", {}),
    "bccnn": ("bccnn", {}),
}
EVAL_BATCH = 256  # harness and raw loop alike; the reference keeps its 128
FACTS = ("epochs", "train_images", "device", "cpu_threads", "machine", "torch")
PRECISIONS = {"32": ("32-true", False), "32_cl": ("32-true", True), "bf16_cl": ("bf16-mixed", True)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


@contextmanager
def gpu_monitor(device: str, period_s: float = 0.05):
    """Sample NVML GPU utilisation while the block runs; yields a dict filled on exit."""
    out: dict = {}
    if device != "cuda":
        yield out
        return
    import torch

    samples: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                samples.append(torch.cuda.utilization())
            except Exception:  # no NVML: leave the column empty rather than fail the benchmark
                return
            stop.wait(period_s)

    torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["gpu_util_pct"] = round(sum(samples) / len(samples), 1) if samples else None
        out["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def harness(
    model: str,
    precision: str,
    data_dir: Path,
    train_limit: int | None,
    seed: int,
    device: str,
    epochs: int = 1,
) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from bench.train import train

    name, kw = MODELS[model]
    prec, cl = PRECISIONS[precision]
    overrides = [
        "data=pneumoniamnist",
        f"data.root={data_dir}",
        "data.download=false",
        f"model={name}",
        "logger=none",
        f"trainer.max_epochs={epochs}",
        f"trainer.precision={prec}",
        f"task.channels_last={str(cl).lower()}",
        "trainer.enable_progress_bar=false",
        "data.batch_size=128",
        f"data.eval_batch_size={EVAL_BATCH}",
        f"seed={seed}",
        "keep_checkpoints=none",
        "+force=true",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"trainer.benchmark={str(device == 'cuda').lower()}",
        *[f"model.{k}={str(v).lower()}" for k, v in kw.items()],
    ]
    if train_limit:
        overrides.append(f"data.limit={train_limit}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    tmp = Path(tempfile.mkdtemp(prefix="speed-"))
    with open_dict(cfg):
        cfg.paths.runs_dir = str(tmp / "runs")
        cfg.paths.output_dir = str(tmp / "out")
        del cfg.hydra
    t0 = time.perf_counter()
    rec = train(cfg)
    wall = time.perf_counter() - t0
    if rec["status"] != "done":
        raise RuntimeError(rec.get("error"))
    c = rec["cost"]
    return {
        "epoch_time_s": c["epoch_time_s"],
        "fit_time_s": c["train_time_s"],
        "train_samples_per_sec": c["train_samples_per_sec"],
        "infer_samples_per_sec": c["infer_samples_per_sec"],
        "val_auc": rec["val"]["auc"],
        "wall_incl_test_s": round(wall, 2),
        "ran_on": rec["env"].get("device"),
    }


def _splits(data_dir: Path, train_limit: int | None, seed: int):
    from bench.data.medmnist import MedMNISTDataModule

    dm = MedMNISTDataModule(
        "pneumoniamnist",
        root=str(data_dir),
        download=False,
        limit=train_limit,
        seed=seed,
        batch_size=128,
    )
    dm.setup()
    return dm


def raw(
    model: str,
    precision: str,
    data_dir: Path,
    train_limit: int | None,
    seed: int,
    device: str,
    epochs: int = 1,
) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from bench.metrics import classification_metrics
    from bench.models import build_model

    torch.manual_seed(seed)
    dm = _splits(data_dir, train_limit, seed)
    name, kw = MODELS[model]
    prec, cl = PRECISIONS[precision]
    torch.backends.cudnn.benchmark = device == "cuda"
    net = build_model(name, dm.spec, **kw).to(device)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    # the same starting point as the harness: each split whole in (device) memory
    tr, va = (
        {
            "x": torch.as_tensor(np.asarray(dm.splits[s].images)).to(device),
            "y": torch.as_tensor(np.asarray(dm.splits[s].targets)).to(device),
        }
        for s in ("train", "val")
    )

    def prep(x):
        x = (x.float() / 255 - 0.5) / 0.5
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    ctx = (
        (lambda: torch.autocast(device, dtype=torch.bfloat16))
        if prec.startswith("bf16")
        else (lambda: torch.autocast(device, enabled=False))
    )

    def epoch() -> tuple[float, float, int, float]:
        sync(device)
        t0 = time.perf_counter()
        net.train()
        n = 0
        perm = torch.randperm(len(tr["x"]), device=device)
        for i in range(0, len(perm) - 127, 128):
            x, y = tr["x"][perm[i : i + 128]], tr["y"][perm[i : i + 128]]
            with ctx():
                loss = F.cross_entropy(net(prep(x)).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
        sync(device)
        t_train = time.perf_counter() - t0
        net.eval()
        scores = []
        t1 = time.perf_counter()
        with torch.no_grad(), ctx():
            for i in range(0, len(va["x"]), EVAL_BATCH):
                scores.append(torch.softmax(net(prep(va["x"][i : i + EVAL_BATCH])).float(), 1))
        scores = torch.cat(scores).cpu()
        auc = classification_metrics(va["y"].cpu(), scores, "binary-class", ("auc",))["auc"]
        return t_train, time.perf_counter() - t1, n, auc

    return summarise_epochs([epoch() for _ in range(epochs)], len(va["x"]))


def summarise_epochs(epochs: list[tuple[float, float, int, float]], n_eval: int) -> dict:
    """Per-epoch (train s, eval s, train samples, val AUC) -> the row's timing columns."""
    import statistics

    later = epochs[1:] or epochs  # the first epoch also pays warm-up (cuDNN autotune, caches)
    t_train, t_eval, n, _ = (statistics.median(col) for col in zip(*later, strict=True))
    return {
        "epoch_time_s": round(statistics.median(t + e for t, e, _, _ in later), 4),
        "fit_time_s": round(sum(t + e for t, e, _, _ in epochs), 4),
        "train_samples_per_sec": round(n / t_train, 2),
        "infer_samples_per_sec": round(n_eval / t_eval, 2),
        "val_auc": epochs[-1][3],
    }


def reference(
    model: str,
    precision: str,
    data_dir: Path,
    train_limit: int | None,
    seed: int,
    device: str,
    epochs: int = 1,
) -> dict:
    """medmnist's Dataset/DataLoader path, training then scoring train/val/test each epoch."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision.transforms as T
    from medmnist import PneumoniaMNIST
    from torch.utils.data import DataLoader, Subset

    from bench.metrics import classification_metrics
    from bench.models import build_model

    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False  # the official script's default (Lightning may set it)
    tf = T.Compose([T.ToTensor(), T.Normalize(mean=[0.5], std=[0.5])])
    sets = {
        s: PneumoniaMNIST(split=s, transform=tf, download=False, root=str(data_dir))
        for s in ("train", "val", "test")
    }
    train_set = sets["train"]
    if train_limit:
        train_set = Subset(
            train_set, np.random.default_rng(seed).choice(len(train_set), train_limit, False)
        )
    name, kw = MODELS[model]
    from bench.spec import DataSpec

    spec = DataSpec("pneumoniamnist", "binary-class", 2, 1, 2, (28, 28))
    net = build_model(name, spec, **kw).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(train_set, batch_size=128, shuffle=True)

    def epoch() -> tuple[float, float, int, float]:
        t0 = time.perf_counter()
        net.train()
        n = 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(net(x), y.squeeze(1).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(y)
        sync(device)
        t_train = time.perf_counter() - t0
        aucs, t1 = {}, time.perf_counter()
        for split in ("train", "val", "test"):  # as the official script: all three every epoch
            net.eval()
            scores, ys = [], []
            with torch.no_grad():
                for x, y in DataLoader(sets[split], batch_size=128, shuffle=False):
                    scores.append(torch.softmax(net(x.to(device)), 1).cpu())
                    ys.append(y.squeeze(1))
            aucs[split] = classification_metrics(
                torch.cat(ys), torch.cat(scores), "binary-class", ("auc",)
            )["auc"]
        return t_train, time.perf_counter() - t1, n, aucs["val"]

    n_eval = sum(len(sets[s]) for s in ("train", "val", "test"))
    return summarise_epochs([epoch() for _ in range(epochs)], n_eval)


METHODS = {"harness": harness, "raw": raw, "reference": reference}


TINY_RUN = [  # a job whose training is negligible: what is left is per-job overhead
    "model=bccnn",
    "model.width=4",
    "model.hidden=[16]",
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "data.n_train=64",
    "data.n_val=32",
    "data.n_test=32",
    "data.batch_size=32",
]

STARTUP_IMPORTS = [  # in import order: each line's time excludes what earlier lines loaded
    ("torch", "import torch"),
    ("lightning", "import lightning"),
    ("torchmetrics", "import torchmetrics"),
    ("timm", "import timm"),
    ("hydra + omegaconf", "import hydra, omegaconf"),
    ("bench.train (the rest: pandas, matplotlib, ...)", "import bench.train"),
]


def startup_probe() -> None:
    """Run one tiny job in this process and print (phase, seconds) from launch to first step."""
    launched = float(os.environ.get("BENCH_SPEED_LAUNCHED", T_SCRIPT))
    phases = [("interpreter start, script's stdlib imports", T_SCRIPT - launched)]
    for label, stmt in STARTUP_IMPORTS:
        t = time.perf_counter()
        exec(stmt)  # noqa: S102 - fixed statements above
        phases.append((f"import {label}", time.perf_counter() - t))

    import lightning as L
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    import bench.train as bt

    marks: dict[str, float] = {}

    class FirstStep(L.Callback):
        def setup(self, trainer, pl_module, stage):
            marks.setdefault("trainer_setup", time.perf_counter())

        def on_train_start(self, trainer, pl_module):
            marks["train_start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            marks.setdefault("first_step", time.perf_counter())

    timed_gmacs = bt.gmacs

    def gmacs(*a, **k):
        t = time.perf_counter()
        try:
            return timed_gmacs(*a, **k)
        finally:
            marks["gmacs_s"] = time.perf_counter() - t

    bt.gmacs = gmacs
    t = time.perf_counter()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY_RUN, "seed=7"])
    tmp = Path(tempfile.mkdtemp(prefix="startup-"))
    with open_dict(cfg):
        cfg.paths.runs_dir, cfg.paths.output_dir = str(tmp / "runs"), str(tmp / "out")
    phases.append(("compose the Hydra config", time.perf_counter() - t))
    orig = bt.instantiate

    def instantiate(conf, *a, **k):  # add the probe to the trainer's callbacks
        if k.get("callbacks") is not None:
            k["callbacks"] = [*k["callbacks"], FirstStep()]
        return orig(conf, *a, **k)

    bt.instantiate = instantiate
    t_train = time.perf_counter()
    rec = bt.train(cfg)
    if rec["status"] != "done":
        raise RuntimeError(rec.get("error"))
    phases += [
        (
            "run claim, datamodule, model build, logger, Trainer (excl. GMACs)",
            marks["trainer_setup"] - t_train - marks["gmacs_s"],
        ),
        ("GMACs count (FlopCounterMode, once per run)", marks["gmacs_s"]),
        (
            "fit start: data load, model to device, optimiser",
            marks["train_start"] - marks["trainer_setup"],
        ),
        ("first training step", marks["first_step"] - marks["train_start"]),
    ]
    print(json.dumps([{"what": w, "seconds": round(sec, 3)} for w, sec in phases]))


def startup_and_overhead(data_dir: Path, jobs: int = 10) -> list[dict]:
    """Import + first-step time of one run, and seconds per job beyond training in a multirun."""
    probe = subprocess.run(
        [sys.executable, __file__, "--startup-probe"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled", "BENCH_SPEED_LAUNCHED": str(time.time())},
    )
    if probe.returncode:
        raise RuntimeError(f"start-up probe failed: {probe.stderr.strip().splitlines()[-1:]}")
    rows = json.loads(probe.stdout.strip().splitlines()[-1])
    imp = sum(r["seconds"] for r in rows if r["what"].startswith("import"))
    rows.append(
        {
            "what": "start-up total: process start to first step",
            "seconds": round(sum(r["seconds"] for r in rows), 3),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "WANDB_MODE": "disabled",
            "MEDBENCH_RUNS_DIR": f"{tmp}/runs",
            "MEDBENCH_LOG_DIR": f"{tmp}/out",
            "MEDBENCH_DATA_DIR": f"{tmp}/data",
        }
        bench_train = [sys.executable, "-m", "bench.train"]  # works without a pip install
        tiny = TINY_RUN
        t0 = time.perf_counter()
        subprocess.run(
            [*bench_train, *tiny, "seed=100"], env=env, capture_output=True, check=True, cwd=ROOT
        )
        one = time.perf_counter() - t0
        rows.append(
            {"what": "one tiny run end to end (process start to record)", "seconds": round(one, 2)}
        )
        t0 = time.perf_counter()
        subprocess.run(
            [*bench_train, "-m", *tiny, "seed=" + ",".join(map(str, range(jobs)))],
            env=env,
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        total = time.perf_counter() - t0
        recs = [json.loads(p.read_text()) for p in Path(tmp, "runs").glob("*/record.json")]
        training = sum(r["cost"]["train_time_s"] for r in recs if r.get("seed", -1) < jobs)
        rows.append({"what": f"multirun of {jobs} tiny jobs, total", "seconds": round(total, 2)})
        rows.append(
            {
                "what": "per-job overhead beyond training (total - imports) / jobs - train",
                "seconds": round((total - imp - training) / jobs, 2),
            }
        )
    return rows


def main() -> int:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/medmnist"))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--reps", type=int, default=3, help="measured repetitions per cell")
    p.add_argument(
        "--warmup-reps",
        type=int,
        default=None,
        help="unreported repetitions first (default: 1 on a GPU, 0 on the CPU)",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["32", "bf16_cl"],
        choices=list(PRECISIONS),
        help="harness/raw settings: 32 (fp32), 32_cl (fp32 + channels_last), bf16_cl (bf16 "
        "autocast + channels_last; pays on GPUs and CPUs with native bf16 only)",
    )
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="train on a stratified subset of this many images (faster table)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs per measurement; with >1, epoch_time_s is the median after the first "
        "(warm-up) and fit_time_s the whole fit",
    )
    p.add_argument("--startup-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile one harness run of the first model (after a warm-up run) into FILE",
    )
    p.add_argument(
        "--aggregate-from",
        help="summarise repetitions already measured (speed_reps.csv, or a log of JSON rows)",
    )
    p.add_argument("--overhead-only", action="store_true", help="only the start-up/overhead table")
    p.add_argument("--out", default=str(ROOT / "results/speed"))
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument(
        "--append",
        action="store_true",
        help="keep other models' rows from an earlier speed_reps.csv in --out",
    )
    args = p.parse_args()
    if args.startup_probe:
        startup_probe()
        return 0
    if args.aggregate_from:  # e.g. the JSON lines a run printed before it was cut off
        src = Path(args.aggregate_from)
        if not src.is_file():
            print(f"error: --aggregate-from {src}: no such file", file=sys.stderr)
            return 2
        if src.suffix == ".csv":
            df = pd.read_csv(src, dtype={"precision": str})
        else:
            lines = [ln for ln in src.read_text().splitlines() if ln.startswith("{")]
            df = pd.DataFrame([json.loads(ln) for ln in lines])
        if df.empty:
            print(f"error: --aggregate-from {src}: no measured rows in it", file=sys.stderr)
            return 2
        return summarise(df, args)
    data_dir = Path(args.data_dir)
    if not (data_dir / "pneumoniamnist.npz").exists():
        print(f"error: {data_dir}/pneumoniamnist.npz not found; pass --data-dir", file=sys.stderr)
        return 2
    if args.profile:
        return profile_harness(args, data_dir)
    if args.overhead_only:
        return write_overhead(data_dir, Path(args.out))
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda but torch sees no CUDA device; use --device cpu", file=sys.stderr
        )
        return 2
    facts = {
        "train_images": args.train_limit or 4708,
        "epochs": args.epochs,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }
    # show where the harness keeps the data ("moving the dataset ... to cuda once")
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("bench.data").setLevel(logging.INFO)
    if args.warmup_reps is None:  # the first pass on a GPU pays CUDA init and cuDNN autotuning
        args.warmup_reps = 1 if device == "cuda" else 0
    rows = []
    for model in args.models:
        # methods interleaved per repetition, their order rotated: drift and whatever the
        # previous cell leaves behind (allocator state, caches) hit every method alike
        for rep in range(args.warmup_reps + args.reps):
            k = rep % len(args.methods)
            for method in args.methods[k:] + args.methods[:k]:
                for prec in ["32"] if method == "reference" else args.precisions:
                    row = {
                        "model": model,
                        "method": method,
                        "precision": prec,
                        "rep": rep,
                        "warmup": rep < args.warmup_reps,
                    }
                    try:
                        with gpu_monitor(device) as gpu:
                            r = METHODS[method](
                                model,
                                prec,
                                data_dir,
                                args.train_limit,
                                seed=rep,
                                device=device,
                                epochs=args.epochs,
                            )
                    except Exception as e:  # one broken cell must not lose the others
                        traceback.print_exc()
                        print(f"error: {model} {method} {prec} rep {rep}: {e!r}", flush=True)
                        continue
                    rows.append(
                        {**row, **r, **gpu, "peak_rss_mb": round(peak_rss_mb(), 1), **facts}
                    )
                    print(json.dumps(rows[-1]), flush=True)
    if not rows:
        print("error: every benchmark cell failed", file=sys.stderr)
        return 1
    status = summarise(pd.DataFrame(rows), args)
    if not args.skip_overhead:
        status = status or write_overhead(data_dir, Path(args.out))
    return status


def summarise(df, args) -> int:
    """Median/min/max per (model, method, precision), the ratios, and the CSVs."""
    import pandas as pd

    if "warmup" not in df:
        df["warmup"] = df["rep"] < (args.warmup_reps or 0)
    earlier = Path(args.out) / "speed_reps.csv"
    if args.append and earlier.exists():
        old = pd.read_csv(earlier, dtype={"precision": str})
        df = pd.concat([old[~old.model.isin(args.models)], df], ignore_index=True)
    agg = (
        df[~df.warmup.astype(bool)]
        .groupby(["model", "method", "precision"])
        .agg(
            epoch_time_s=("epoch_time_s", "median"),
            epoch_time_s_min=("epoch_time_s", "min"),
            epoch_time_s_max=("epoch_time_s", "max"),
            **({"fit_time_s": ("fit_time_s", "median")} if "fit_time_s" in df else {}),
            train_samples_per_sec=("train_samples_per_sec", "median"),
            infer_samples_per_sec=("infer_samples_per_sec", "median"),
            val_auc=("val_auc", "median"),
            peak_rss_mb=("peak_rss_mb", "max"),
            reps=("rep", "count"),
            **{k: (k, "first") for k in FACTS if k in df},
            **(
                {
                    "gpu_util_pct": ("gpu_util_pct", "median"),
                    "peak_gpu_mem_mb": ("peak_gpu_mem_mb", "max"),
                }
                if "gpu_util_pct" in df
                else {}
            ),
        )
        .reset_index()
    )

    def lookup(m, meth, prec, col="epoch_time_s"):
        s = agg[(agg.model == m) & (agg.method == meth) & (agg.precision == prec)]
        return float(s[col].iloc[0]) if len(s) else float("nan")

    for col, suffix in (("epoch_time_s", ""), ("fit_time_s", "_fit")):
        if col in agg:
            agg[f"harness_over_raw{suffix}"] = [
                lookup(r.model, "harness", r.precision, col)
                / lookup(r.model, "raw", r.precision, col)
                if r.method == "harness"
                else float("nan")
                for r in agg.itertuples()
            ]
    # the reference at its fp32 default against the harness at its fastest measured setting
    measured = sorted(set(df.precision[df.method == "harness"]))
    fastest = {
        m: min(measured, key=lambda pr, m=m: lookup(m, "harness", pr)) for m in agg.model.unique()
    }
    agg["reference_over_harness"] = [
        lookup(r.model, "reference", "32") / lookup(r.model, "harness", r.precision)
        if r.method == "harness" and r.precision == fastest[r.model]
        else float("nan")
        for r in agg.itertuples()
    ]
    agg = agg[[c for c in agg.columns if c not in FACTS] + [c for c in FACTS if c in agg]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    agg.to_csv(out / "speed.csv", index=False, float_format="%.4g")
    df.to_csv(out / "speed_reps.csv", index=False, float_format="%.4g")
    (out / "speed.md").write_text(markdown_table(agg))
    print(agg.to_string(index=False))
    return 0


def markdown_table(agg) -> str:
    """The README's view of speed.csv."""
    cols = ["model", "method", "precision", "epoch s (median, min-max)"]
    cols += ["fit s", "train img/s", "infer img/s", "val AUC"]
    gpu = "gpu_util_pct" in agg
    if gpu:
        cols += ["GPU util %"]
    cols += ["harness/raw (epoch)", "harness/raw (fit)", "reference/harness"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def f(v, fmt="{:.3g}"):
        return "" if v != v or v is None else fmt.format(v)

    for r in agg.itertuples():
        cells = [
            r.model,
            r.method,
            r.precision,
            f"{r.epoch_time_s:.3g} ({r.epoch_time_s_min:.3g}-{r.epoch_time_s_max:.3g})",
            f(getattr(r, "fit_time_s", float("nan"))),
            f(r.train_samples_per_sec, "{:.0f}"),
            f(r.infer_samples_per_sec, "{:.0f}"),
            f(r.val_auc),
        ]
        if gpu:
            cells.append(f(r.gpu_util_pct))
        cells += [
            f(r.harness_over_raw, "{:.2f}"),
            f(getattr(r, "harness_over_raw_fit", float("nan")), "{:.2f}"),
            f(r.reference_over_harness, "{:.2f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def profile_harness(args, data_dir: Path) -> int:
    """Where the harness's time goes: cumulative cProfile of one run, after a warm-up run."""
    import cProfile
    import io
    import pstats

    device = "cuda" if args.device == "cuda" else "cpu"
    precision = args.precisions[0]
    run = [args.models[0], precision, data_dir, args.train_limit]
    harness(*run, seed=0, device=device, epochs=args.epochs)  # warm-up: imports, caches
    prof = cProfile.Profile()
    prof.enable()
    result = harness(*run, seed=1, device=device, epochs=args.epochs)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(60)
    header = (
        f"# bench_speed.py --profile: {args.models[0]} {precision} on {device}, "
        f"train images {args.train_limit or 4708}, epochs {args.epochs}\n# {json.dumps(result)}\n"
    )
    Path(args.profile).parent.mkdir(parents=True, exist_ok=True)
    Path(args.profile).write_text(header + text.getvalue())
    print(f"wrote {args.profile}")
    return 0


def write_overhead(data_dir: Path, out: Path) -> int:
    import pandas as pd

    ov = pd.DataFrame(startup_and_overhead(data_dir))
    out.mkdir(parents=True, exist_ok=True)
    ov.to_csv(out / "overhead.csv", index=False, float_format="%.4g")
    print(ov.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
