"""Experiment loggers: W&B (online/offline chosen automatically), CSV, or none.

W&B goes online only when credentials exist (``WANDB_API_KEY`` or a ``~/.netrc`` entry made by
``wandb login``); otherwise it runs offline with a one-line hint about ``wandb sync``.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC", str(Path.home() / ".netrc")))
        return rc.authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str | None) -> str:
    """``auto`` -> ``online`` with credentials, else ``offline``; ``WANDB_MODE`` wins if set."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if mode in (None, "auto"):
        if wandb_credentials_present():
            return "online"
        log.info("W&B: no API key found, logging offline; upload later with `wandb sync <dir>`")
        return "offline"
    return mode


def build_logger(
    logger_cfg: dict,
    *,
    run_name: str,
    group: str,
    tags: list[str],
    config: dict,
    save_dir: Path,
    run_id: str,
) -> Any:
    """A Lightning logger from ``conf/logger/<kind>.yaml`` values (False for none)."""
    kind = logger_cfg.get("kind", "none")
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(save_dir), name="csv", version=run_id)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        mode = resolve_wandb_mode(logger_cfg.get("mode"))
        save_dir.mkdir(parents=True, exist_ok=True)
        return WandbLogger(
            project=logger_cfg.get("project", "medbench"),
            entity=logger_cfg.get("entity"),
            name=run_name,
            group=group,
            job_type=logger_cfg.get("job_type", "train"),
            tags=tags,
            save_dir=str(save_dir),
            mode=mode,
            config=config,
            log_model=False,
        )
    raise ValueError(f"unknown logger kind {kind!r}")


def finish_wandb(logger: Any) -> None:
    """Close the W&B run so the next multirun job starts a new one."""
    if logger is False or logger is None:
        return
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as e:  # never let logging teardown hide the run's own outcome
        log.warning("wandb.finish() failed: %s", e)


def log_run_summary(
    logger: Any, record: dict, task: Any, datamodule: Any, n_samples: int = 16
) -> None:
    """Test metrics and cost as W&B summary values; confusion matrix, ROC curve, per-class
    table and sample predictions (mask overlays for segmentation) as media."""
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    import torch
    import torchmetrics.functional.classification as C
    import wandb

    run = logger.experiment
    run.define_metric("val/auc", summary="max")
    run.define_metric("val/dice", summary="max")
    for k, v in (record.get("test") or {}).items():
        run.summary[f"test/{k}"] = v
    for k, v in (record.get("cost") or {}).items():
        if not isinstance(v, list):
            run.summary[f"cost/{k}"] = v
    spec = task.spec
    preds = task.predictions.get("test")
    if not preds:
        return
    names = list(spec.label_names) or [str(i) for i in range(spec.num_classes)]
    ds = datamodule.splits["test"]
    idx = preds["index"][:n_samples]
    raw, _, _ = ds[idx.to(torch.long)]
    raw = raw.cpu()
    media: dict[str, Any] = {}
    if spec.kind == "segmentation":
        labels = dict(enumerate(names))
        pred_masks, true_masks = preds["pred"], preds["target"]
        if spec.spatial_dims == 3:  # the middle slice of each volume
            mid = raw.shape[2] // 2
            raw, pred_masks, true_masks = raw[:, :, mid], pred_masks[:, mid], true_masks[:, mid]
        media["test/samples"] = [
            wandb.Image(
                raw[i].float().mean(0).numpy(),
                masks={
                    "prediction": {"mask_data": pred_masks[i].numpy(), "class_labels": labels},
                    "ground_truth": {
                        "mask_data": true_masks[i].numpy(),
                        "class_labels": labels,
                    },
                },
            )
            for i in range(len(idx))
        ]
    elif spec.task != "multi-label":
        y, score = preds["target"].long(), preds["score"]
        pred = score.argmax(1)
        media["test/confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=y.tolist(), preds=pred.tolist(), class_names=names
        )
        media["test/roc"] = wandb.plot.roc_curve(y.numpy(), score.numpy(), labels=names)
        k = spec.num_classes
        per_class = [
            C.multiclass_precision(pred, y, k, average=None),
            C.multiclass_recall(pred, y, k, average=None),
            C.multiclass_f1_score(pred, y, k, average=None),
        ]
        support = torch.bincount(y, minlength=k)
        media["test/per_class"] = wandb.Table(
            columns=["class", "precision", "recall", "f1", "support"],
            data=[[names[c], *(float(m[c]) for m in per_class), int(support[c])] for c in range(k)],
        )
        img = raw if spec.spatial_dims == 2 else raw[:, :, raw.shape[2] // 2]  # middle slice
        media["test/samples"] = [
            wandb.Image(
                img[i].permute(1, 2, 0).numpy() if img.shape[1] == 3 else img[i, 0].numpy(),
                caption=f"true {names[int(y[j])]} / pred {names[int(pred[j])]}",
            )
            for j, i in enumerate(range(len(idx)))
        ]
    run.log(media)
