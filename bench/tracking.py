"""Experiment trackers from the ``logger`` config group (Hydra ``_target_`` configs).

``conf/logger/<name>.yaml`` each add one entry under ``logger:``; ``logger=[wandb,csv]`` combines
them (as in lightning-hydra-template). :func:`build_loggers` instantiates every entry and hands
each the run's name, group, tags, id and config where its class takes them. W&B goes online only
when credentials exist (``WANDB_API_KEY`` or ``wandb login``); otherwise it runs offline with a
one-line hint about ``wandb sync``; ``mode: disabled`` builds no W&B logger at all.
"""

from __future__ import annotations

import inspect
import logging
import netrc
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import ConfigError

_OFFLINE_HINT_SAID = "MEDBENCH_WANDB_OFFLINE_HINT_SAID"
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
    """An explicit mode (``online``, ``offline``, ``disabled``) is used as it is; ``auto`` follows
    ``WANDB_MODE`` when set, else goes ``online`` with credentials and ``offline`` without."""
    if mode in (None, "auto"):
        env = os.environ.get("WANDB_MODE")
        if env:
            return env
        if wandb_credentials_present():
            return "online"
        if not os.environ.get(_OFFLINE_HINT_SAID):  # once per command, not once per job
            os.environ[_OFFLINE_HINT_SAID] = "1"
            log.info("W&B: no API key found, logging offline; upload later with `wandb sync <dir>`")
        return "offline"
    return mode


def wandb_logger(
    project: str = "medbench",
    entity: str | None = None,
    job_type: str = "train",
    mode: str | None = "auto",
    save_dir: str = ".",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    config: dict | None = None,
    id: str | None = None,
):
    """A Lightning ``WandbLogger`` with the mode resolved, or None when W&B is disabled."""
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project,
        entity=entity,
        name=name,
        group=group,
        job_type=job_type,
        tags=tags,
        save_dir=save_dir,
        mode=mode,
        config=config,
        log_model=False,
    )
    # Lightning always passes wandb's deprecated `anonymous` setting, which makes wandb warn
    logger._wandb_init.pop("anonymous", None)
    return logger


def build_loggers(logger_cfg: dict | None, **run: Any) -> list:
    """Instantiate every ``logger.<name>`` entry; ``run`` holds name, group, tags, id, version,
    config and run_name, each passed to the loggers whose class takes it and whose config does
    not set it already."""
    from hydra.utils import get_method, instantiate

    loggers = []
    for key, cfg in (logger_cfg or {}).items():
        if not cfg or "_target_" not in cfg:
            continue
        target = get_method(cfg["_target_"])
        params = inspect.signature(target).parameters
        extras = {k: v for k, v in run.items() if k in params and k not in cfg}
        try:
            logger = instantiate(cfg, _partial_=True)(**extras)
        except Exception as e:
            cause = e
            while cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, ImportError):  # an optional tracker whose package is absent
                raise ConfigError(
                    f"logger={key} needs a package that is not installed ({cause}); "
                    "pip install 'medbench[trackers]'"
                ) from None
            raise
        if logger is not None:
            loggers.append(logger)
    return loggers


def is_wandb(logger: Any) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def finish_trackers(loggers: list) -> None:
    """Close the trackers so the next multirun job starts new runs (W&B: ``wandb.finish()``)."""
    for logger in loggers:
        try:
            if is_wandb(logger):
                import wandb

                if wandb.run is not None:
                    wandb.finish()
            else:
                logger.finalize("success")
        except Exception as e:  # never let logging teardown hide the run's own outcome
            log.warning("closing %s failed: %s", type(logger).__name__, e)


def log_run_summary(
    loggers: list,
    *,
    test: dict[str, float],
    cost: dict[str, Any],
    spec: Any,
    predictions: dict | None,
    samples: np.ndarray | None,
) -> None:
    """W&B: test metrics and cost as summary values; confusion matrix, ROC curve, per-class
    table and sample predictions (mask overlays for segmentation) as media. ``samples`` are the
    raw test images of ``predictions['index'][:len(samples)]``."""
    for logger in loggers:
        if is_wandb(logger):
            _wandb_summary(logger, test, cost, spec, predictions, samples)


def _wandb_summary(logger, test, cost, spec, preds, raw) -> None:
    import torch
    import torchmetrics.functional.classification as C
    import wandb

    run = logger.experiment
    run.define_metric("val/auc", summary="max")
    run.define_metric("val/dice", summary="max")
    for k, v in test.items():
        run.summary[f"test/{k}"] = v
    for k, v in cost.items():
        if v is not None and not isinstance(v, list):
            run.summary[f"cost/{k}"] = v
    if not preds or raw is None:
        return
    names = list(spec.label_names) or [str(i) for i in range(spec.num_classes)]
    n = len(raw)
    media: dict[str, Any] = {}
    if spec.kind == "segmentation":
        labels = dict(enumerate(names))
        pred_masks, true_masks = preds["pred"][:n], preds["target"][:n]
        if spec.spatial_dims == 3:  # the middle slice of each volume
            mid = raw.shape[2] // 2
            raw, pred_masks, true_masks = raw[:, :, mid], pred_masks[:, mid], true_masks[:, mid]
        media["test/samples"] = [
            wandb.Image(
                raw[i].astype(np.float32).mean(0),
                masks={
                    "prediction": {"mask_data": pred_masks[i].numpy(), "class_labels": labels},
                    "ground_truth": {"mask_data": true_masks[i].numpy(), "class_labels": labels},
                },
            )
            for i in range(n)
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
                img[i].transpose(1, 2, 0) if img.shape[1] == 3 else img[i, 0],
                caption=f"true {names[int(y[i])]} / pred {names[int(pred[i])]}",
            )
            for i in range(n)
        ]
    run.log(media)
