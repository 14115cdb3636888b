"""``bench-speed colocate``: the same sweep with K jobs at once on one device
(``hydra/launcher=colocate``), aggregate training images per second against K = 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.records import RunStore
from bench.speed.runners import MODELS, PRECISIONS, gpu_monitor
from bench.speed.tables import machine_facts
from bench.toolkit import resolve_device


def colocate(args) -> int:
    """The same sweep with K = 1, 2, 4, 8 jobs at once on one device: aggregate images/s."""

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, _ = MODELS[args.models[0]]
    rows = []
    for k in args.k:
        with tempfile.TemporaryDirectory() as tmp:
            seeds = ",".join(str(i) for i in range(args.jobs))
            cmd = [
                sys.executable,
                "-m",
                "bench.hydra_main",
                "-m",
                "hydra/launcher=colocate",
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
            t0 = time.perf_counter()
            with gpu_monitor(device) as gpu:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            recs = [r for r in RunStore(f"{tmp}/runs").iter_records()[0] if r.done]
            images = sum(r.split_sizes.get("train", 0) * (r.epochs_run or 0) for r in recs)
            rows.append(
                {
                    "k": k,
                    "jobs": args.jobs,
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
    df.to_csv(out / "colocate.csv", index=False)
    print(df.to_string(index=False))
    return 0
