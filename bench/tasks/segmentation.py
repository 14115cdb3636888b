"""Segmentation: MONAI's losses, whole-image (sliding-window) inference, per-case metrics.

- Loss ``task.seg_loss``: ``dice_ce`` (MONAI ``DiceCELoss``, the default), ``dice``
  (``DiceLoss``), ``focal`` (``FocalLoss``), ``dice_focal`` (``DiceFocalLoss``) or ``ce``;
  Dice terms over the foreground classes, batch-level (nnU-Net's ``batch_dice``), weighted by
  ``task.dice_weight``.
- Inference: when the model was trained on patches (``data.patch_size``) and a val/test image is
  larger, MONAI's ``sliding_window_inference`` predicts the whole image from overlapping
  windows with Gaussian blending (``task.sliding_window``: overlap, mode, sw_batch_size).
- Metrics per case and foreground class: Dice and IoU from the overlap counts (the counts are
  stored per case, so pooled Dice and bootstrap CIs come from the same file; tests pin them to
  MONAI's ``DiceMetric``/``MeanIoU``), and on the test split MONAI's
  ``HausdorffDistanceMetric`` (95th percentile) and ``SurfaceDiceMetric`` (normalised surface
  Dice at ``task.surface_tolerance`` pixels). A class in neither truth nor prediction of a case
  has no Dice (NaN, nnU-Net's rule); HD95 and surface Dice are NaN when truth or prediction
  of the class is empty in a case; the record's notes count such cases.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F

from bench.errors import ConfigError
from bench.metrics import case_overlaps, segmentation_metric_tensors, surface_metric_tensors
from bench.tasks.base import BaseTask

log = logging.getLogger(__name__)

SEG_LOSSES = ("dice_ce", "dice", "focal", "dice_focal", "ce")
SLIDING_WINDOW_DEFAULTS = {"overlap": 0.5, "mode": "gaussian", "sw_batch_size": 4}


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over foreground classes (batch-level, smoothed by ``eps``).

    The plain reference the MONAI losses are tested against."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


def build_loss(name: str, dice_weight: float = 1.0) -> torch.nn.Module | None:
    """The MONAI loss ``name`` on logits (N, C, *spatial) and index targets (N, 1, *spatial);
    None for plain cross-entropy."""
    if name not in SEG_LOSSES:
        raise ConfigError(f"task.seg_loss={name!r} is not one of: {', '.join(SEG_LOSSES)}")
    if name == "ce":
        return None
    from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss

    common = {"include_background": False, "to_onehot_y": True}
    if name == "dice_ce":
        return DiceCELoss(softmax=True, batch=True, lambda_dice=dice_weight, **common)
    if name == "dice":
        return DiceLoss(softmax=True, batch=True, **common)
    if name == "dice_focal":
        return DiceFocalLoss(softmax=True, batch=True, lambda_dice=dice_weight, **common)
    return FocalLoss(use_softmax=True, **common)


def whole_image_logits(
    predictor, x: torch.Tensor, patch_size: tuple[int, ...] | None, sliding_window: dict | None
) -> torch.Tensor:
    """Logits of whole images: one forward pass when they fit ``patch_size`` (or it is None),
    else MONAI's ``sliding_window_inference`` over windows of ``patch_size``."""
    if patch_size is None or not any(s > p for s, p in zip(x.shape[2:], patch_size, strict=False)):
        return predictor(x)
    from monai.inferers import sliding_window_inference

    sw = {**SLIDING_WINDOW_DEFAULTS, **(sliding_window or {})}
    return sliding_window_inference(
        x,
        roi_size=patch_size,
        sw_batch_size=int(sw["sw_batch_size"]),
        predictor=predictor,
        overlap=float(sw["overlap"]),
        mode=sw["mode"],
    )


class SegmentationTask(BaseTask):
    monitor = "val/dice"
    monitor_mode = "max"

    def __init__(
        self,
        *args,
        dice_weight: float = 1.0,
        seg_loss: str = "dice_ce",
        patch_size: tuple[int, ...] | None = None,
        sliding_window: dict | None = None,
        surface_tolerance: float = 2.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.dice_weight = dice_weight
        self.seg_loss = seg_loss
        self.loss_fn = build_loss(seg_loss, dice_weight)
        self.patch_size = tuple(int(p) for p in patch_size) if patch_size else None
        unknown = set(sliding_window or {}) - set(SLIDING_WINDOW_DEFAULTS)
        if unknown:
            raise ConfigError(
                f"task.sliding_window.{sorted(unknown)[0]} is not an option; use "
                f"{', '.join(SLIDING_WINDOW_DEFAULTS)}"
            )
        self.sliding_window = {**SLIDING_WINDOW_DEFAULTS, **(sliding_window or {})}
        if surface_tolerance is None or float(surface_tolerance) < 0:
            raise ConfigError("task.surface_tolerance must be >= 0 (pixels)")
        self.surface_tolerance = float(surface_tolerance)
        self.surface_notes: list[str] = []

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = logits.float()
        if self.loss_fn is None:
            loss = F.cross_entropy(logits, y)
        else:
            loss = self.loss_fn(logits, y.unsqueeze(1))
        # the Dice term is a batch quantity; a "sum" is the batch loss times its size
        return loss * logits.shape[0] if reduction == "sum" else loss

    # -- whole-image inference -----------------------------------------------------------------
    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of whole images: one forward pass, or sliding windows of ``patch_size``."""
        whole = getattr(self.model, "whole_image", False)
        return whole_image_logits(self, x, None if whole else self.patch_size, self.sliding_window)

    def eval_outputs(self, logits, y, idx, stage):
        pred = logits.argmax(1)
        out = {"index": idx, "overlaps": case_overlaps(pred, y, self.spec.num_classes)}
        if stage == "test":  # surface metrics and masks for the final test set only
            out["surface"] = self.surface_metrics(pred, y)
            out["pred"], out["target"] = pred.to(torch.uint8), y.to(torch.uint8)
        return out

    def surface_metrics(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per case and foreground class (N, C-1, 2): MONAI's HD95 and surface Dice."""
        from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric

        k = self.spec.num_classes
        p1 = F.one_hot(pred.long(), k).movedim(-1, 1).float()
        y1 = F.one_hot(y.long(), k).movedim(-1, 1).float()
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
        nsd = SurfaceDiceMetric(
            [self.surface_tolerance] * (k - 1), include_background=False, reduction="none"
        )
        with warnings.catch_warnings():
            # an empty truth or prediction: MONAI warns and returns nan/inf, masked below
            warnings.simplefilter("ignore")
            hd95 = hd(p1, y1).float()
            surf = nsd(p1, y1).float()
        empty = (p1[:, 1:].flatten(2).sum(-1) == 0) | (y1[:, 1:].flatten(2).sum(-1) == 0)
        hd95 = torch.where(empty | ~torch.isfinite(hd95), torch.nan, hd95)
        surf = torch.where(empty | ~torch.isfinite(surf), torch.nan, surf)
        return torch.stack([hd95.to(pred.device), surf.to(pred.device)], dim=-1)

    def metric_tensors(self, outputs):
        out = segmentation_metric_tensors(outputs["overlaps"], self.spec.label_names)
        if "surface" in outputs:
            out.update(surface_metric_tensors(outputs["surface"], self.spec.label_names))
        return out
