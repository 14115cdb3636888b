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

from pathlib import Path

from bench.console import install_noise_filters
from bench.errors import ConfigError
from bench.finished import load_run
from bench.records import RunStore, now_iso
from bench.tasks import build_task
from bench.tasks.tta import TTA_MODES, views
from bench.toolkit import resolve_device


def tta_run(run_dir: Path, mode: str = "flips", device: str = "cpu"):
    """Evaluate a finished run's best weights with TTA. The metrics go into the run's own
    record (``evaluations.tta.<mode>``: views, val, test): an evaluation of that run, not a new
    run, so it adds no leaderboard row and no training cost."""
    import lightning as L
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    install_noise_filters()
    run = load_run(Path(run_dir))
    base = run.record
    if mode not in TTA_MODES or mode == "none":
        raise ConfigError(f"--tta {mode!r}: choose identity or flips")
    dm, model = run.datamodule, run.model  # the best weights, on the CPU; Lightning moves them
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


def run(args) -> int:
    """The body of ``bench-tta`` (its options: :mod:`bench.commands.tta`)."""
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
