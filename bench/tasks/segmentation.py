"""Segmentation: Dice + cross-entropy loss, Dice and IoU per class and mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.metrics import segmentation_metrics
from bench.tasks.base import BaseTask


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over foreground classes (batch-level, smoothed by ``eps``)."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


class SegmentationTask(BaseTask):
    monitor = "val/dice"
    monitor_mode = "max"

    def __init__(self, *args, dice_weight: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dice_weight = dice_weight

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y) + self.dice_weight * soft_dice_loss(logits, y)

    def eval_outputs(self, logits, y, idx):
        return {"index": idx, "target": y.to(torch.uint8), "pred": logits.argmax(1).to(torch.uint8)}

    def compute_metrics(self, outputs):
        return segmentation_metrics(
            outputs["pred"], outputs["target"], self.spec.num_classes, self.spec.label_names
        )
