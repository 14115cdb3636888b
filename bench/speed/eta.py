"""The cost of a study row on the machine at hand, measured before it is trained.

A row (data x model at a recipe) is timed on a few training batches and the whole validation
split, on the real data, through the harness; the per-epoch cost is then scaled to the row's
split sizes and epochs. ``bench-speed eta`` prints it per seed and writes ``eta.csv``, which
study pages quote (never typed) and which tells which rows fit a CPU session.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError, ConfigError
from bench.job.entry import train
from bench.records import load_record
from bench.speed.runners import compose_in_temp_store
from bench.speed.tables import write_replacing


@dataclass
class RowCost:
    """Measured rates of one row and what they imply for a whole run (one seed)."""

    dataset: str
    model: str
    experiment: str | None
    epochs: int
    n_train: int
    n_val: int
    n_test: int
    train_samples_per_sec: float
    infer_samples_per_sec: float
    epoch_s: float
    eta_h_per_seed: float
    gmacs: float | None
    device: str
    threads: int
    measured_at: str
    command: str
    # fp32 (the protocol) or cpu_fast (trainer=cpu_fast: what this CPU runs fastest)
    preset: str = "fp32"
    # what the run trained in here: precision and layout (cpu_fast is fp32 on a CPU without
    # native bf16, so the preset's name alone does not say it)
    setting: str = ""


# what trainer=cpu_fast adds to a row (the protocol experiment pins fp32; auto lets it choose)
CPU_FAST = ["trainer=cpu_fast", "trainer.precision=auto", "task.channels_last=auto"]


def measure_row(
    data: str,
    model: str,
    experiment: str | None = "medmnist_protocol",
    extra: list[str] | None = None,
    train_batches: int = 6,
    preset: str = "fp32",
) -> RowCost:
    """Time ``train_batches`` training batches (second epoch: warm) and one validation pass of
    ``data`` x ``model``; scale to the experiment's epochs and the real split sizes.
    ``preset="cpu_fast"`` times it under ``trainer=cpu_fast``."""
    import torch
    from omegaconf import open_dict

    row = [f"data={data}", f"model={model}", *(extra or [])]
    if preset == "cpu_fast":
        row += CPU_FAST
    if experiment:
        row.insert(0, f"experiment={experiment}")
    cfg = compose_in_temp_store(
        [
            *row,
            "logger=none",
            "trainer.enable_progress_bar=false",
            "checkpoint.keep=none",
            "+force=true",
        ],
        prefix="eta-",
    )
    epochs = int(cfg.trainer.max_epochs)
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
        cfg.trainer.limit_train_batches = train_batches
    outcome = train(cfg)
    if outcome.status != "done":
        raise BenchError(f"{data} x {model}: the timing run {outcome.status}: {outcome.error}")
    rec = load_record(outcome.record_path)
    sizes = rec.split_sizes
    n_train, n_val, n_test = sizes["train"], sizes["val"], sizes["test"]
    train_sps = float(rec.cost.train_samples_per_sec)
    infer_sps = float(rec.cost.infer_samples_per_sec)
    epoch_s = n_train / train_sps + n_val / infer_sps
    layout = (rec.config.get("task") or {}).get("channels_last")  # as resolved for the run
    # two final evaluations of val and test (best and last weights)
    total_s = epochs * epoch_s + 2 * (n_val + n_test) / infer_sps
    return RowCost(
        dataset=rec.dataset,
        model=model,
        experiment=experiment,
        epochs=epochs,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        train_samples_per_sec=round(train_sps, 1),
        infer_samples_per_sec=round(infer_sps, 1),
        epoch_s=round(epoch_s, 1),
        eta_h_per_seed=round(total_s / 3600, 2),
        gmacs=rec.cost.gmacs,
        device=rec.env.device or "cpu",
        threads=torch.get_num_threads(),
        measured_at=time.strftime("%Y-%m-%d"),
        command=" ".join(["bench-train -m", *row, "seed=0,1,2"]),
        preset=preset,
        setting=f"{rec.precision} {'channels-last' if layout is True else 'NCHW'}",
    )


def parse_row(text: str) -> tuple[str, str, list[str]]:
    """``data:model[:override,override]`` -> (data, model, extra overrides)."""
    parts = text.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"row {text!r}: write data:model (e.g. pneumoniamnist:resnet50)")
    extra = [o for o in ":".join(parts[2:]).split(",") if o] if len(parts) > 2 else []
    return parts[0], parts[1], extra


def fits(cost: RowCost, budget_h: float) -> bool:
    """Whether one seed of the row is within ``budget_h`` hours here."""
    return math.isfinite(cost.eta_h_per_seed) and cost.eta_h_per_seed <= budget_h


def as_row(cost: RowCost, budget_h: float) -> dict:
    return {**asdict(cost), "budget_h_per_seed": budget_h, "runs_here": fits(cost, budget_h)}


def study_eta(args) -> int:
    """Time each row on this machine, print its hours per seed and write ``eta.csv``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for text in args.eta_rows:
        try:
            data, model, extra = parse_row(text)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        cost = measure_row(data, model, args.experiment, extra, args.train_batches, args.preset)
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
    write_replacing(path, pd.DataFrame(rows), ["dataset", "model", "preset"])
    print(f"wrote {path}")
    return 0
