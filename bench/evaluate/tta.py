"""Test-time augmentation: average the predictions over flipped views of each input.

``eval.tta=flips`` (a config option, so TTA rows are their own leaderboard rows) scores the final
validation and test passes on the identity, the horizontal, the vertical and both flips (2D;
flips along each axis for 3D volumes); segmentation maps are flipped back before averaging.
``identity`` is one view: the same as no TTA (a check of the machinery). ``bench-tta`` evaluates
a finished run's best checkpoint with TTA, without training again, and stores the result in that
run's record (``evaluations.tta``), as every after-the-fact evaluation does.

    bench-tta --run-dir runs/<run_id> --tta flips
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from bench.cli import add_device_option, exit_code_of, resolve_device
from bench.errors import ConfigError

TTA_MODES = ("none", "identity", "flips")


def views(mode: str, spatial_dims: int) -> list[tuple[int, ...]]:
    """The spatial axes flipped by each view (``()`` is the image itself)."""
    if mode == "identity":
        return [()]
    if mode == "flips":
        last = [-1, -2, -3][:spatial_dims]
        if spatial_dims == 2:
            return [(), (-1,), (-2,), (-1, -2)]
        return [(), *[(a,) for a in last]]
    raise ConfigError(f"eval.tta={mode!r} is not one of: {', '.join(TTA_MODES)}")


def tta_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    mode: str,
    task: str,
    spatial_dims: int,
) -> torch.Tensor:
    """Logits whose probabilities are the mean of the views' probabilities."""
    probs = []
    for axes in views(mode, spatial_dims):
        logits = forward(x.flip(axes) if axes else x).float()
        if task == "segmentation" and axes:
            logits = logits.flip(axes)  # back into the input's frame
        probs.append(torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, 1))
    p = torch.stack(probs).mean(0).clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p)) if task == "multi-label" else torch.log(p)


def tta_run(run_dir: Path, mode: str = "flips", device: str = "cpu"):
    """Evaluate a finished run's best weights with TTA. The metrics go into the run's own
    record (``evaluations.tta.<mode>``: views, val, test): an evaluation of that run, not a new
    run, so it adds no leaderboard row and no training cost."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from bench.console import install_noise_filters
    from bench.evaluate.robust import load_run_model
    from bench.explain import load_run
    from bench.records import RunStore, now_iso
    from bench.tasks import build_task

    install_noise_filters()
    base = load_run(Path(run_dir))
    if mode not in TTA_MODES or mode == "none":
        raise ConfigError(f"--tta {mode!r}: choose identity or flips")
    dm, model = load_run_model(base)  # the best weights, on the CPU; Lightning moves them
    cfg = OmegaConf.create(base.config)
    spec = dm.spec
    task_cfg = instantiate(cfg.task, _convert_="all")
    task_cfg["class_weights"] = None
    task = build_task(model, spec, tta=mode, **task_cfg)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else device,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(task, datamodule=dm, verbose=False)
    trainer.test(task, datamodule=dm, verbose=False)
    base.evaluations.setdefault("tta", {})[mode] = {
        "views": len(views(mode, spec.spatial_dims)),
        "val": dict(task.last_metrics["val"]),
        "test": dict(task.last_metrics["test"]),
        "evaluated_at": now_iso(),
    }
    RunStore(base.dir.parent).write(base)
    return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench-tta", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", nargs="+", required=True, help="finished run folders")
    p.add_argument("--tta", default="flips", choices=["identity", "flips"])
    add_device_option(p)
    args = p.parse_args(argv)

    def body() -> int:
        for d in args.run_dir:
            rec = tta_run(Path(d), args.tta, resolve_device(args.device))
            metric = "dice" if rec.kind == "segmentation" else "auc"
            got = rec.evaluations["tta"][args.tta]
            print(
                f"{rec.run_id}: test {metric} {got['test'].get(metric):.4f} with {args.tta} TTA "
                f"({got['views']} views; without: {rec.test.get(metric):.4f}); stored in "
                f"{rec.path} under evaluations.tta.{args.tta}"
            )
        return 0

    return exit_code_of(body)


def cli() -> None:
    sys.exit(main())
