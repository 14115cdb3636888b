"""Classification: cross-entropy (BCE-with-logits for multi-label), MedMNIST-compatible metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.metrics import classification_metrics, scores_from_logits
from bench.tasks.base import BaseTask


class ClassificationTask(BaseTask):
    """Model selection by the best validation AUC, as the MedMNIST protocol does."""

    monitor = "val/auc"
    monitor_mode = "max"

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.spec.task == "multi-label":
            return F.binary_cross_entropy_with_logits(logits.float(), y.float())
        return F.cross_entropy(logits.float(), y)

    def eval_outputs(self, logits, y, idx):
        return {"index": idx, "target": y, "score": scores_from_logits(logits, self.spec.task)}

    def compute_metrics(self, outputs):
        return classification_metrics(outputs["target"], outputs["score"], self.spec.task)
