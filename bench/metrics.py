"""Metrics on accumulated predictions, through torchmetrics' functional API.

AUC and ACC follow medmnist's ``Evaluator`` exactly, so numbers compare with the MedMNIST papers:

- binary-class: AUC on the last score column, ACC with that score thresholded at 0.5;
- multi-class and ordinal-regression: mean one-vs-rest AUC over classes, ACC of the argmax;
- multi-label: mean per-label AUC, mean per-label ACC at 0.5.

Also macro F1/precision/recall, balanced accuracy (mean per-class recall; for multi-label the
mean over labels of (sensitivity + specificity) / 2), top-label ECE with 15 bins (mean per label
for multi-label) and the Brier score (mean squared error of the probabilities: over the positive
column for binary and per label for multi-label, summed over classes for multi-class).
Segmentation: Dice and IoU per foreground class and their mean, over the whole split.
"""

from __future__ import annotations

import numpy as np
import torch
import torchmetrics.functional.classification as C
from torchmetrics.functional.segmentation import dice_score, mean_iou

CLASSIFICATION_METRICS = (
    "auc",
    "acc",
    "f1",
    "precision",
    "recall",
    "balanced_acc",
    "ece",
    "brier",
)


def scores_from_logits(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Probabilities as medmnist scores them: sigmoid for multi-label, softmax otherwise."""
    return torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, dim=-1)


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))


def classification_metrics(
    y_true, y_score, task: str, metrics: tuple[str, ...] = CLASSIFICATION_METRICS
) -> dict[str, float]:
    """Compute the named metrics from labels and probabilities (N, C).

    ``y_true`` is (N,) or (N,1) integer labels, or (N, L) 0/1 for multi-label.
    """
    y_true = _as_tensor(y_true)
    y_score = _as_tensor(y_score).float()
    out: dict[str, torch.Tensor] = {}
    if task == "multi-label":
        t = y_true.reshape(y_score.shape).long()
        L = y_score.shape[1]
        fns = {
            "auc": lambda: C.multilabel_auroc(y_score, t, L, average="macro"),
            "acc": lambda: C.multilabel_accuracy(y_score, t, L, threshold=0.5, average="macro"),
            "f1": lambda: C.multilabel_f1_score(y_score, t, L, average="macro"),
            "precision": lambda: C.multilabel_precision(y_score, t, L, average="macro"),
            "recall": lambda: C.multilabel_recall(y_score, t, L, average="macro"),
            "balanced_acc": lambda: (
                (
                    C.multilabel_recall(y_score, t, L, average=None)
                    + C.multilabel_specificity(y_score, t, L, average=None)
                ).mean()
                / 2
            ),
            "ece": lambda: torch.stack(
                [C.binary_calibration_error(y_score[:, i], t[:, i], n_bins=15) for i in range(L)]
            ).mean(),
            "brier": lambda: ((y_score - t.float()) ** 2).mean(),
        }
    else:
        t = y_true.reshape(-1).long()
        K = y_score.shape[1]
        binary = task == "binary-class"
        preds = (y_score[:, -1] > 0.5).long() if binary else y_score.argmax(dim=1)
        fns = {
            "auc": lambda: (
                C.binary_auroc(y_score[:, -1], t)
                if binary
                else C.multiclass_auroc(y_score, t, K, average="macro")
            ),
            "acc": lambda: (preds == t).float().mean(),
            "f1": lambda: C.multiclass_f1_score(preds, t, K, average="macro"),
            "precision": lambda: C.multiclass_precision(preds, t, K, average="macro"),
            "recall": lambda: C.multiclass_recall(preds, t, K, average="macro"),
            "balanced_acc": lambda: C.multiclass_recall(preds, t, K, average="macro"),
            "ece": lambda: C.multiclass_calibration_error(y_score, t, K, n_bins=15),
            "brier": lambda: (
                ((y_score[:, -1] - t.float()) ** 2).mean()
                if binary
                else ((y_score - torch.nn.functional.one_hot(t, K).float()) ** 2).sum(1).mean()
            ),
        }
    for name in metrics:
        out[name] = fns[name]()
    return {k: float(v) for k, v in out.items()}


def segmentation_metrics(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, class_names=None
) -> dict[str, float]:
    """Dice and IoU per foreground class and their means; ``preds``/``target`` are index maps."""
    preds, target = preds.long(), target.long()
    dice = dice_score(
        preds,
        target,
        num_classes,
        include_background=False,
        average="none",
        input_format="index",
        aggregation_level="global",
    ).reshape(-1)
    iou = mean_iou(
        preds,
        target,
        num_classes,
        include_background=False,
        per_class=True,
        input_format="index",
    )
    iou = iou.reshape(-1, num_classes - 1).nanmean(0)
    names = list(class_names or range(num_classes))[1:]
    out = {"dice": float(dice.nanmean()), "iou": float(iou.nanmean())}
    for i, name in enumerate(names):
        out[f"dice_{name}"] = float(dice[i])
        out[f"iou_{name}"] = float(iou[i])
    return out
