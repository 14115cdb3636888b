"""Task modules by task kind; a model never knows which task trains it."""

from __future__ import annotations

import inspect

from torch import nn

from bench.errors import ConfigError
from bench.spec import DataSpec
from bench.tasks.base import BaseTask
from bench.tasks.classification import ClassificationTask
from bench.tasks.segmentation import SegmentationTask

TASKS_BY_KIND: dict[str, type[BaseTask]] = {
    "classification": ClassificationTask,
    "segmentation": SegmentationTask,
}


def task_options(cls: type[BaseTask]) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (BaseTask, ClassificationTask, SegmentationTask):
            names |= set(inspect.signature(klass.__init__).parameters) - {"self", "args", "kwargs"}
    return names - {"model", "spec"}


def build_task(model: nn.Module, spec: DataSpec, **cfg) -> BaseTask:
    """The task module for ``spec.kind``; ``cfg`` holds optimiser, scheduler and options.

    Unset (null) options take the task's defaults; an option of the other kind's task that is
    set is a one-line error.
    """
    cls = TASKS_BY_KIND[spec.kind]
    accepted = task_options(cls) | {"tta"}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    wrong = sorted(set(cfg) - accepted)
    if wrong:
        raise ConfigError(
            f"task.{wrong[0]} does not apply to {spec.kind} data ({spec.name}); remove it"
        )
    return cls(model=model, spec=spec, **cfg)
