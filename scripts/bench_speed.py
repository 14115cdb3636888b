#!/usr/bin/env python
"""Speed of the harness against a raw PyTorch loop and the MedMNIST reference style.

Measured side by side in one process, on PneumoniaMNIST 28² (the real file), per model:

1. ``harness``   - bench's whole Lightning path (``bench.train.train``): one epoch of training
                   plus validation, timed from the record (``cost.train_time_s``);
2. ``raw``       - a minimal loop over the same preloaded uint8 tensors (same model, precision,
                   batch size, optimiser), one epoch + one validation pass: the lower bound;
3. ``reference`` - medmnist's Dataset + ToTensor + Normalize(.5,.5) through a DataLoader (per-item
                   PIL), one training epoch, then scoring train, val and test as the official
                   experiment script does every epoch (fp32, its default).

Writes ``results/speed/speed.csv`` (one row per model x method x precision x repetition summary)
and ``results/speed/overhead.csv`` (start-up split and per-job overhead in a 10-job multirun).

    python scripts/bench_speed.py                       # the full table (slow on a CPU)
    python scripts/bench_speed.py --reps 3 --train-limit 1024 --models resnet18_ss bccnn
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {  # name -> (registry name, builder kwargs)
    "resnet18_ss": ("resnet18", {"small_input_stem": True}),
    "resnet50": ("resnet50", {}),
    "mobilenetv2": ("mobilenet", {}),
    "bccnn": ("bccnn", {}),
}
PRECISIONS = {"32": ("32-true", False), "bf16_cl": ("bf16-mixed", True)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def harness(model: str, precision: str, data_dir: Path, train_limit: int | None, seed: int) -> dict:
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
        "trainer.max_epochs=1",
        f"trainer.precision={prec}",
        f"task.channels_last={str(cl).lower()}",
        "trainer.enable_progress_bar=false",
        "data.batch_size=128",
        f"seed={seed}",
        "keep_checkpoints=none",
        "+force=true",
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
        "epoch_time_s": c["train_time_s"],
        "train_samples_per_sec": c["train_samples_per_sec"],
        "infer_samples_per_sec": c["infer_samples_per_sec"],
        "val_auc": rec["val"]["auc"],
        "wall_incl_test_s": round(wall, 2),
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


def raw(model: str, precision: str, data_dir: Path, train_limit: int | None, seed: int) -> dict:
    import torch
    import torch.nn.functional as F

    from bench.metrics import classification_metrics
    from bench.models import build_model

    torch.manual_seed(seed)
    dm = _splits(data_dir, train_limit, seed)
    name, kw = MODELS[model]
    prec, cl = PRECISIONS[precision]
    net = build_model(name, dm.spec, **kw)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    tr, va = dm.splits["train"], dm.splits["val"]

    def prep(x):
        x = (x.float() / 255 - 0.5) / 0.5
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    ctx = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if prec.startswith("bf16")
        else (lambda: torch.autocast("cpu", enabled=False))
    )
    t0 = time.perf_counter()
    net.train()
    n = 0
    perm = torch.randperm(len(tr))
    for i in range(0, len(tr) - 127, 128):
        x, y, _ = tr[perm[i : i + 128]]
        with ctx():
            loss = F.cross_entropy(net(prep(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    t_train = time.perf_counter() - t0
    net.eval()
    scores, ys = [], []
    t1 = time.perf_counter()
    with torch.no_grad(), ctx():
        for i in range(0, len(va), 256):
            x, y, _ = va[torch.arange(i, min(i + 256, len(va)))]
            scores.append(torch.softmax(net(prep(x)).float(), 1))
            ys.append(y)
    t_val = time.perf_counter() - t1
    auc = classification_metrics(torch.cat(ys), torch.cat(scores), "binary-class", ("auc",))["auc"]
    return {
        "epoch_time_s": round(t_train + t_val, 3),
        "train_samples_per_sec": round(n / t_train, 2),
        "infer_samples_per_sec": round(len(va) / t_val, 2),
        "val_auc": auc,
    }


def reference(
    model: str, precision: str, data_dir: Path, train_limit: int | None, seed: int
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

    net = build_model(name, DataSpec("pneumoniamnist", "binary-class", 2, 1, 2, (28, 28)), **kw)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(train_set, batch_size=128, shuffle=True)
    t0 = time.perf_counter()
    net.train()
    n = 0
    for x, y in loader:
        loss = F.cross_entropy(net(x), y.squeeze(1).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    t_train = time.perf_counter() - t0
    aucs, t_eval, n_eval = {}, 0.0, 0
    for split in ("train", "val", "test"):  # as the official script: all three every epoch
        t1 = time.perf_counter()
        net.eval()
        scores, ys = [], []
        with torch.no_grad():
            for x, y in DataLoader(sets[split], batch_size=128, shuffle=False):
                scores.append(torch.softmax(net(x), 1))
                ys.append(y.squeeze(1))
        t_eval += time.perf_counter() - t1
        n_eval += len(sets[split])
        aucs[split] = classification_metrics(
            torch.cat(ys), torch.cat(scores), "binary-class", ("auc",)
        )["auc"]
    return {
        "epoch_time_s": round(t_train + t_eval, 3),
        "train_samples_per_sec": round(n / t_train, 2),
        "infer_samples_per_sec": round(n_eval / t_eval, 2),
        "val_auc": aucs["val"],
    }


METHODS = {"harness": harness, "raw": raw, "reference": reference}


def startup_and_overhead(data_dir: Path, jobs: int = 10) -> list[dict]:
    """Import + first-step time of one run, and seconds per job beyond training in a multirun."""
    rows = []
    code = "import time;t=time.perf_counter();import bench.train;print(time.perf_counter()-t)"
    imp = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    )
    rows.append(
        {
            "what": "import bench.train (torch, lightning, timm, hydra, torchmetrics)",
            "seconds": round(imp, 2),
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
        bench_train = str(Path(sys.executable).parent / "bench-train")
        tiny = [
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
        t0 = time.perf_counter()
        subprocess.run([bench_train, *tiny, "seed=100"], env=env, capture_output=True, check=True)
        one = time.perf_counter() - t0
        rows.append(
            {"what": "one tiny run end to end (process start to record)", "seconds": round(one, 2)}
        )
        t0 = time.perf_counter()
        subprocess.run(
            [bench_train, "-m", *tiny, "seed=" + ",".join(map(str, range(jobs)))],
            env=env,
            capture_output=True,
            check=True,
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
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--precisions",
        nargs="+",
        default=list(PRECISIONS),
        help="harness/raw precisions: 32 and/or bf16_cl (bf16 autocast + "
        "channels_last; only pays on CPUs with native bf16 and on GPUs)",
    )
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="train on a stratified subset of this many images (faster table)",
    )
    p.add_argument("--out", default=str(ROOT / "results/speed"))
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument(
        "--append",
        action="store_true",
        help="keep other models' rows from an earlier speed_reps.csv in --out",
    )
    args = p.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "pneumoniamnist.npz").exists():
        print(f"error: {data_dir}/pneumoniamnist.npz not found; pass --data-dir", file=sys.stderr)
        return 2
    import torch

    rows = []
    for model in args.models:
        for rep in range(args.reps):  # methods interleaved per repetition: drift hits all alike
            for method in args.methods:
                for prec in ["32"] if method == "reference" else args.precisions:
                    r = METHODS[method](model, prec, data_dir, args.train_limit, seed=rep)
                    rows.append(
                        {
                            "model": model,
                            "method": method,
                            "precision": prec,
                            "rep": rep,
                            **r,
                            "peak_rss_mb": round(peak_rss_mb(), 1),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    earlier = Path(args.out) / "speed_reps.csv"
    if args.append and earlier.exists():
        old = pd.read_csv(earlier, dtype={"precision": str})
        df = pd.concat([old[~old.model.isin(args.models)], df], ignore_index=True)
    agg = (
        df.groupby(["model", "method", "precision"])
        .agg(
            epoch_time_s=("epoch_time_s", "median"),
            epoch_time_s_min=("epoch_time_s", "min"),
            epoch_time_s_max=("epoch_time_s", "max"),
            train_samples_per_sec=("train_samples_per_sec", "median"),
            infer_samples_per_sec=("infer_samples_per_sec", "median"),
            val_auc=("val_auc", "median"),
            peak_rss_mb=("peak_rss_mb", "max"),
            reps=("rep", "count"),
        )
        .reset_index()
    )

    def lookup(m, meth, prec):
        s = agg[(agg.model == m) & (agg.method == meth) & (agg.precision == prec)]
        return float(s.epoch_time_s.iloc[0]) if len(s) else float("nan")

    agg["harness_over_raw"] = [
        lookup(r.model, "harness", r.precision) / lookup(r.model, "raw", r.precision)
        if r.method == "harness"
        else float("nan")
        for r in agg.itertuples()
    ]
    # the reference at its fp32 default against the harness at its fastest measured setting
    fastest = {
        m: min(args.precisions, key=lambda pr, m=m: lookup(m, "harness", pr))
        for m in agg.model.unique()
    }
    agg["reference_over_harness"] = [
        lookup(r.model, "reference", "32") / lookup(r.model, "harness", r.precision)
        if r.method == "harness" and r.precision == fastest[r.model]
        else float("nan")
        for r in agg.itertuples()
    ]
    agg["train_images"] = args.train_limit or 4708
    agg["device"] = "cpu"
    agg["cpu_threads"] = torch.get_num_threads()
    agg["machine"] = platform.machine()
    agg["torch"] = torch.__version__
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    agg.to_csv(out / "speed.csv", index=False, float_format="%.4g")
    df.to_csv(out / "speed_reps.csv", index=False, float_format="%.4g")
    print(agg.to_string(index=False))
    if not args.skip_overhead:
        ov = pd.DataFrame(startup_and_overhead(data_dir))
        ov.to_csv(out / "overhead.csv", index=False, float_format="%.4g")
        print(ov.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
