"""``bench-speed grid`` and ``aggregate``: the harness, a raw loop and the official pipeline
timed side by side (repetitions rotated), summarised as medians and ratios."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pandas as pd

from bench.errors import ConfigError
from bench.speed.runners import RUNNERS, Setting, measure
from bench.speed.tables import BASE_BATCH, BASE_LR, FACTS, machine_facts, markdown, summarise
from bench.toolkit import resolve_device


def scaled_lr(lr: float, scale: int, rule: str) -> float:
    """The learning rate for a batch ``scale`` times the base: ``sqrt`` (the square-root rule
    for Adam-type optimisers) or ``linear`` (Goyal et al.'s rule for SGD)."""
    factor = scale if rule == "linear" else math.sqrt(scale)
    return round(lr * factor, 8)


def grid(args) -> int:
    """Time every (model, method, precision, batch) ``--reps`` times; write the tables."""
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
        if k in reps and k not in summary:  # numeric facts are already per cell (medians)
            summary[k] = reps[k].iloc[0]
    summary.to_csv(out / "speed.csv", index=False)
    (out / "speed.md").write_text(markdown(summary))
    (out / "machine.txt").write_text(json.dumps(facts, indent=2) + "\n")
    print(markdown(summary))
    return 0


def aggregate(args) -> int:
    """Re-summarise saved repetitions (``speed_reps.csv`` or a JSON-lines log)."""
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
