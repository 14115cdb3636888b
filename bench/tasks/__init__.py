"""Task modules by task kind; a model never knows which task trains it."""

from __future__ import annotations

from torch import nn

from bench.spec import DataSpec
from bench.tasks.base import BaseTask
from bench.tasks.classification import ClassificationTask
from bench.tasks.segmentation import SegmentationTask

TASKS_BY_KIND: dict[str, type[BaseTask]] = {
    "classification": ClassificationTask,
    "segmentation": SegmentationTask,
}


def build_task(model: nn.Module, spec: DataSpec, **cfg) -> BaseTask:
    """The task module for ``spec.kind``; ``cfg`` holds optimiser, scheduler and options."""
    cls = TASKS_BY_KIND[spec.kind]
    if spec.kind != "segmentation":
        cfg.pop("dice_weight", None)
    return cls(model=model, spec=spec, **cfg)
