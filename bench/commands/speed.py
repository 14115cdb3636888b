"""``bench-speed``: the harness's speed against a raw loop and the official pipeline, measured
side by side (``grid``), K runs on one device (``pack``), full-protocol hours (``project``), the
plain-PyTorch protocol loop (``protocol``), saved repetitions re-summarised (``aggregate``)
and the hours per seed of study rows on this machine (``eta``)."""

from __future__ import annotations

import argparse

from bench.commands._common import exit_with, new_parser, positive_int, run_tool
from bench.paths import medmnist_dir
from bench.toolkit import add_device_option

EXAMPLES = """examples:
  bench-speed grid --models bccnn resnet18_ss --reps 3            # results/speed/ table
  bench-speed grid --device cuda --epochs 3 --out results/speed/gpu
  bench-speed grid --device cuda --methods harness raw --batch-scales 1 4 8
  bench-speed colocate 1 2 4 8 --device cuda                       # K runs at once
  bench-speed project medmnist2d --device cuda                     # hours of the protocol
  bench-speed protocol retinamnist --model paper_resnet18 --seeds 0 1 2
  bench-speed aggregate results/speed/speed_reps.csv
  bench-speed packed 1 2 3 4 8 --packed-models bccnn resnet18_28   # results/speed/packed.csv
  bench-speed packed 1 2 3 --implementations vmap grouped --device cuda --out results/speed/gpu
  bench-speed project medmnist2d --rates-from rates.jsonl --packed-seeds-from packed.csv
  bench-speed roofline --threads 1 2 --reps 3                       # results/speed/cpu_roofline.csv
  bench-speed datapath --threads 1 2 --reps 5                       # results/speed/cpu_datapath.csv
  bench-speed eta pneumoniamnist:resnet50 adrenalmnist3d:resnet18_3d --out results/eta"""


def _common() -> argparse.ArgumentParser:
    """Options every mode takes."""
    p = argparse.ArgumentParser(add_help=False)
    default_dir = str(medmnist_dir())
    p.add_argument("--data-dir", default=default_dir, help="folder of MedMNIST npz files")
    p.add_argument("--flag", default="pneumoniamnist", help="MedMNIST dataset timed")
    p.add_argument("--models", nargs="+", default=["bccnn", "resnet18_ss", "resnet50_ss"])
    p.add_argument("--methods", nargs="+", default=["harness", "raw", "reference"])
    p.add_argument("--precisions", nargs="+", default=["32", "bf16_cl"])
    p.add_argument("--reps", type=int, default=3, help="measured repetitions per cell")
    p.add_argument(
        "--warmup-reps",
        type=int,
        default=None,
        help="unreported repetitions first (default: 1 on a GPU, 0 on the CPU)",
    )
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    add_device_option(p)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", default="results/speed", help="folder of the tables")
    return p


def parser():
    """bench-speed's parser: one sub-command per mode."""
    p = new_parser("bench-speed", __doc__.split(": ", 1)[1].replace("\n", " "), EXAMPLES)
    sub = p.add_subparsers(dest="mode", required=True)
    common = _common()
    for add in (
        _grid_arguments,
        _colocate_arguments,
        _project_arguments,
        _protocol_arguments,
        _packed_arguments,
        _roofline_arguments,
        _datapath_arguments,
        _parity_arguments,
        _eta_arguments,
        _aggregate_arguments,
    ):
        add(sub, common)
    return p


def _grid_arguments(sub, common) -> None:
    grid = sub.add_parser("grid", parents=[common], help="models x methods x precisions")
    grid.add_argument(
        "--batch-scales",
        nargs="+",
        type=int,
        default=[1],
        metavar="S",
        help="train batch 128 x S with the LR scaled (harness and raw loop)",
    )
    grid.add_argument("--lr-scaling", choices=["sqrt", "linear"], default="sqrt")
    grid.add_argument("--append", action="store_true", help="add to the saved repetitions")
    grid.add_argument(
        "--torch-profile",
        metavar="FILE",
        help="also profile one harness epoch of the first model (torch.profiler)",
    )


def _colocate_arguments(sub, common) -> None:
    colocate = sub.add_parser(
        "colocate",
        aliases=["pack"],
        parents=[common],
        help="K runs at once on one device (hydra/launcher=colocate; 'pack': old name)",
    )
    colocate.add_argument("k", nargs="+", type=int, metavar="K")
    colocate.add_argument(
        "--jobs", "--pack-jobs", type=int, default=8, help="jobs in the colocated sweep"
    )


def _project_arguments(sub, common) -> None:
    project = sub.add_parser("project", parents=[common], help="hours of a full protocol")
    project.add_argument("project", choices=["medmnist2d"])
    project.add_argument(
        "--project-flag", default="bloodmnist", help="dataset whose sizes are timed"
    )
    project.add_argument(
        "--colocate-from",
        "--packing-from",
        dest="colocate_from",
        help="colocate.csv (bench-speed colocate) whose best speed-up is applied",
    )
    project.add_argument("--rates-from", help="project from rows measured before (JSON lines)")
    project.add_argument(
        "--packed-seeds-from",
        help="packed.csv (bench-speed packed) whose K=3 speed-up on this device gives the "
        "packed-seeds column",
    )


def _protocol_arguments(sub, common) -> None:
    protocol = sub.add_parser("protocol", parents=[common], help="the plain-PyTorch protocol loop")
    protocol.add_argument("plain_protocol", metavar="FLAG")
    protocol.add_argument("--model", default="paper_resnet18", help="conf/model option")
    protocol.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    protocol.add_argument("--protocol-epochs", type=int, default=100)


def _packed_arguments(sub, common) -> None:
    packed = sub.add_parser(
        "packed", parents=[common], help="K seeds packed in one network vs K separate runs"
    )
    packed.add_argument("packed_k", nargs="+", type=int, metavar="K")
    packed.add_argument("--packed-models", nargs="+", default=["bccnn", "resnet18_28"])
    packed.add_argument("--batch", type=int, default=128)
    packed.add_argument("--steps", type=int, default=4, help="timed steps per cell")
    packed.add_argument("--size", type=int, default=28, help="input size (28: MedMNIST)")
    packed.add_argument(
        "--implementations",
        nargs="+",
        default=["vmap", "grouped"],
        help="packed forms to time against separate networks: vmap, grouped",
    )


# the roofline's networks (bench.speed.roofline.MODELS), the heaviest study rows last
ROOFLINE_MODELS = ["bccnn", "resnet18_28", "resnet50", "xception", "mobilenetv2", "cnn3d", "unet",
                   "resnet50_28", "resnet18_3d"]  # fmt: skip


def _cpu_model_arguments(p, models: list[str]) -> None:
    """The roofline networks, thread counts and seconds per cell of a CPU measurement."""
    p.add_argument("--roofline-models", nargs="+", default=models)
    p.add_argument("--threads", nargs="+", type=positive_int, default=[1, 2])
    p.add_argument("--min-seconds", type=float, default=0.5, help="timed per cell and rep")


def _roofline_arguments(sub, common) -> None:
    roof = sub.add_parser(
        "roofline", parents=[common], help="CPU peak vs what each model achieves per setting"
    )
    _cpu_model_arguments(roof, ROOFLINE_MODELS)
    roof.add_argument(
        "--settings",
        nargs="+",
        default=["fp32", "fp32_cl", "bf16", "bf16_cl"],
        help="fp32 fp32_cl bf16 bf16_cl, each also +compile (e.g. bf16_cl+compile)",
    )
    roof.set_defaults(min_seconds=1.0)


def _datapath_arguments(sub, common) -> None:
    path = sub.add_parser(
        "datapath", parents=[common], help="CPU time outside the network: data path, inter-op"
    )
    _cpu_model_arguments(path, ROOFLINE_MODELS[:7])  # the 3D ResNet's step is minutes long
    path.add_argument("--interop-models", nargs="+", default=["bccnn", "resnet18_28"])


def _parity_arguments(sub, common) -> None:
    par = sub.add_parser(
        "parity", parents=[common], help="fp32 vs trainer=cpu_fast runs: test AUC/ACC parity"
    )
    par.add_argument(
        "--stores",
        nargs="+",
        default=[
            "results/breastmnist/runs",
            "results/pneumoniamnist/runs",
            "results/speed/parity/runs",
        ],
    )
    par.add_argument("--parity-models", nargs="+", default=["bccnn", "resnet18"])
    par.add_argument("--parity-datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    par.add_argument(
        "--parity-seeds", nargs="+", type=int, default=[0, 1, 2],
        help="the seeds a pair needs under both settings for a verdict",
    )  # fmt: skip


def _eta_arguments(sub, common) -> None:
    eta = sub.add_parser(
        "eta", parents=[common], help="hours per seed of study rows on this machine"
    )
    eta.add_argument("eta_rows", nargs="+", metavar="DATA:MODEL[:OVERRIDES]")
    eta.add_argument("--experiment", default="medmnist_protocol", help="the rows' recipe")
    eta.add_argument("--budget-h", type=float, default=1.5, help="hours per seed that run here")
    eta.add_argument("--train-batches", type=int, default=6, help="timed training batches")
    eta.add_argument(
        "--preset",
        choices=["fp32", "cpu_fast"],
        default="fp32",
        help="time the rows at the protocol's fp32 or under trainer=cpu_fast",
    )


def _aggregate_arguments(sub, common) -> None:
    aggregate = sub.add_parser("aggregate", parents=[common], help="re-summarise saved reps")
    aggregate.add_argument("aggregate_from", metavar="FILE", help="speed_reps.csv or a JSON log")


# each mode's body lives beside the module it drives: mode -> (module, function)
MODES = {
    "grid": ("bench.speed.grid", "grid"),
    "aggregate": ("bench.speed.grid", "aggregate"),
    "colocate": ("bench.speed.colocate", "colocate"),
    "project": ("bench.speed.projection", "project_protocol"),
    "protocol": ("bench.speed.protocol_loop", "plain_protocol"),
    "eta": ("bench.speed.eta", "study_eta"),
    "packed": ("bench.speed.packed_bench", "packed_seeds"),
    "roofline": ("bench.speed.roofline", "roofline"),
    "datapath": ("bench.speed.datapath", "datapath"),
    "parity": ("bench.speed.parity", "parity"),
}


def _dispatch(args) -> int:
    import importlib
    import sys

    from bench.errors import ConfigError
    from bench.speed.runners import MODELS, PRECISIONS, RUNNERS  # after parsing: --help is fast

    # the valid names live beside the runners (importing them loads torch): checked here
    for option, given, valid in (
        ("--models", args.models, MODELS),
        ("--methods", args.methods, RUNNERS),
        ("--precisions", args.precisions, PRECISIONS),
    ):
        unknown = [v for v in given if v not in valid]
        if unknown:
            raise ConfigError(f"{option} {' '.join(unknown)}: choose from {', '.join(valid)}")
    mode = "colocate" if args.mode == "pack" else args.mode
    if args.mode == "pack":
        print("note: bench-speed pack is renamed bench-speed colocate", file=sys.stderr)
    module, function = MODES[mode]
    return getattr(importlib.import_module(module), function)(args)


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.speed", argv, call=_dispatch)


def cli() -> None:
    exit_with(main)


if __name__ == "__main__":
    cli()
