"""How long the whole MedMNIST v2 2D protocol takes on the device at hand, from measurements.

A method's measured row gives its training throughput, its evaluation throughput and, from its
steady epoch time, a fixed cost per epoch. For each dataset (its official split sizes from
``medmnist.INFO``) one epoch then takes::

    fixed + n_train / train_rate + n_eval / eval_rate

where ``n_eval`` is the validation split for the harness and the raw loop, and train + val +
test for the official script (it scores all three every epoch). The protocol is 100 epochs x
3 seeds x {ResNet-18, ResNet-50} on the 12 2D datasets; packing K runs on one device divides the
wall time by the measured aggregate speed-up. Packing a configuration's seeds into one network
(``execution.pack_seeds``) divides it by the speed-up ``bench-speed packed`` measured for that
model at K = seeds on the same kind of device (``packed.csv``); unmeasured there, it is NaN.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from medmnist import INFO

from bench.data.npz import write_medmnist_npz
from bench.speed.runners import RUNNERS, Setting, measure
from bench.speed.tables import machine_facts
from bench.toolkit import resolve_device

MEDMNIST2D = (
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
)


@dataclass(frozen=True)
class Rates:
    """A measured method: samples/s in training and evaluation, fixed seconds per epoch."""

    train_rate: float
    eval_rate: float
    fixed_s: float
    evaluates: str = "val"  # "val" or "all" (train + val + test every epoch)

    @classmethod
    def from_row(cls, row: dict, n_train: int, n_eval: int, evaluates: str = "val") -> Rates:
        """From a timing row measured on ``n_train`` training and ``n_eval`` scored samples."""
        train_rate = float(row["train_samples_per_sec"])
        eval_rate = float(row["infer_samples_per_sec"])
        epoch = float(row["epoch_time_s"])
        variable = n_train / train_rate + n_eval / eval_rate
        if variable > epoch:
            # a training rate slower than the measured steady epoch allows (one that counted a
            # warm-up epoch): the steady epoch decides, with no fixed cost
            train_rate = n_train / max(1e-9, epoch - n_eval / eval_rate)
            variable = epoch
        return cls(train_rate, eval_rate, epoch - variable, evaluates)

    def epoch_seconds(self, sizes: dict[str, int]) -> float:
        n_eval = sizes["val"] + (sizes["train"] + sizes["test"] if self.evaluates == "all" else 0)
        return self.fixed_s + sizes["train"] / self.train_rate + n_eval / self.eval_rate


# projection model names -> their name in packed.csv (the same networks)
PACKED_NAMES = {"resnet18_ss": "resnet18_28", "resnet50_ss": "resnet50_28"}


def packed_seed_speedups(packed: pd.DataFrame, device: str, k: int) -> dict[str, float]:
    """Per projection model: the best measured speed-up of K=``k`` packed seeds over ``k``
    separate networks on ``device`` (the implementations are equally exact)."""
    rows = packed[(packed["device"] == device) & (packed["k"] == k)]
    best = rows.groupby("model")["speedup_vs_separate"].max().to_dict()
    names = {**{v: v for v in best}, **PACKED_NAMES}
    return {ours: float(best[theirs]) for ours, theirs in names.items() if theirs in best}


def split_sizes(flag: str) -> dict[str, int]:
    from medmnist import INFO

    return dict(INFO[flag]["n_samples"])


def project(
    rates: dict[tuple[str, str], Rates],
    epochs: int = 100,
    seeds: int = 3,
    datasets: tuple[str, ...] = MEDMNIST2D,
    packing: dict[str, float] | None = None,
    packed_seeds: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Hours per (method, model, dataset) for ``seeds`` x ``epochs``; ``packing[method]`` is the
    aggregate speed-up of packed runs over one run alone (1 when not packed);
    ``packed_seeds[model]`` the speed-up of the seeds packed into one network (harness only)."""
    rows = []
    for (method, model), r in rates.items():
        speedup = (packing or {}).get(method, 1.0)
        seeds_speedup = (packed_seeds or {}).get(model) if method == "harness" else None
        for flag in datasets:
            sizes = split_sizes(flag)
            epoch_s = r.epoch_seconds(sizes)
            # the test split is scored once at the end by the harness and the raw loop
            total_s = seeds * (epochs * epoch_s + sizes["test"] / r.eval_rate)
            rows.append(
                {
                    "method": method,
                    "model": model,
                    "dataset": flag,
                    "n_train": sizes["train"],
                    "epoch_time_s": round(epoch_s, 3),
                    "runs": seeds,
                    "hours_one_at_a_time": round(total_s / 3600, 4),
                    "packing_speedup": speedup,
                    "hours": round(total_s / 3600 / speedup, 4),
                    "packed_seeds_speedup": seeds_speedup,
                    "hours_packed_seeds": round(total_s / 3600 / seeds_speedup, 4)
                    if seeds_speedup
                    else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def totals(projection: pd.DataFrame) -> pd.DataFrame:
    """Hours of the whole protocol per method (both models, every dataset); the packed-seeds
    total is NaN unless every model's packing was measured."""
    cols = ["hours_one_at_a_time", "hours"]
    out = projection.groupby("method")[cols].sum().round(3)
    if "hours_packed_seeds" in projection:
        packed = projection.groupby("method")["hours_packed_seeds"].sum(min_count=1)
        complete = projection.groupby("method")["hours_packed_seeds"].apply(
            lambda s: s.notna().all()
        )
        out["hours_packed_seeds"] = packed.where(complete).round(3)
    return out.reset_index()


def project_protocol(args) -> int:
    """``bench-speed project``: measure rates on a synthetic dataset of real size, then project
    the 2D protocol."""
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
        data = Path(tempfile.mkdtemp(prefix="proj-"))
        info = INFO[flag]
        write_medmnist_npz(
            data / f"{flag}.npz",
            (28, 28, 3) if info["n_channels"] == 3 else (28, 28),
            len(info["label"]),
            counts=info["n_samples"],
        )
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
    if args.colocate_from and Path(args.colocate_from).exists():
        pk = pd.read_csv(args.colocate_from)
        packing = {"harness": float(pk["speedup_over_k1"].max())}
    packed_seeds = {}
    if args.packed_seeds_from and Path(args.packed_seeds_from).exists():
        measured_on = (
            "cuda" if any(r.get("ran_on", "").startswith("NVIDIA") for r in rows) else device
        )
        packed_seeds = packed_seed_speedups(pd.read_csv(args.packed_seeds_from), measured_on, 3)
    table = project(rates, packing=packing, packed_seeds=packed_seeds)
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
