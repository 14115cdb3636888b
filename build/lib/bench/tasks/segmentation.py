"""Segmentation: Dice + cross-entropy loss; Dice and IoU per case (ranked) and pooled."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.metrics import case_overlaps, segmentation_metric_tensors
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

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), y)
        loss = ce + self.dice_weight * soft_dice_loss(logits, y)
        # the Dice term is a batch quantity; a "sum" is the batch loss times its size
        return loss * logits.shape[0] if reduction == "sum" else loss

    def eval_outputs(self, logits, y, idx, stage):
        pred = logits.argmax(1)
        out = {"index": idx, "overlaps": case_overlaps(pred, y, self.spec.num_classes)}
        if stage == "test":  # masks only for the final test set (sample overlays in W&B)
            out["pred"], out["target"] = pred.to(torch.uint8), y.to(torch.uint8)
        return out

    def metric_tensors(self, outputs):
        return segmentation_metric_tensors(outputs["overlaps"], self.spec.label_names)
