"""Classification: cross-entropy (BCE-with-logits for multi-label), MedMNIST-compatible metrics.

``class_weights`` weights the loss per class (per label: ``pos_weight`` for multi-label), e.g.
inverse class frequencies of the training split (``task.class_weights=auto``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.metrics import classification_metric_tensors, scores_from_logits
from bench.tasks.base import BaseTask


class ClassificationTask(BaseTask):
    """Model selection by the best validation AUC, as the MedMNIST protocol describes."""

    monitor = "val/auc"
    monitor_mode = "max"

    def __init__(self, *args, class_weights: list[float] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        # a buffer follows the module to its device; not persistent: checkpoints stay plain
        self.register_buffer("class_weight", weight, persistent=False)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        # half precision is scored in float32; float64 (precision 64-true) stays float64
        logits = logits.float() if logits.dtype != torch.float64 else logits
        weight = None if self.class_weight is None else self.class_weight.to(logits.dtype)
        if self.spec.task == "multi-label":
            return F.binary_cross_entropy_with_logits(
                logits, y.to(logits.dtype), pos_weight=weight, reduction=reduction
            )
        return F.cross_entropy(logits, y, weight=weight, reduction=reduction)

    def eval_outputs(self, logits, y, idx, stage):
        return {"index": idx, "target": y, "score": scores_from_logits(logits, self.spec.task)}

    def metric_tensors(self, outputs):
        return classification_metric_tensors(outputs["target"], outputs["score"], self.spec.task)
