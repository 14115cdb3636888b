"""Metrics on accumulated predictions, through torchmetrics' functional API.

AUC and ACC follow medmnist's ``Evaluator`` exactly, so numbers compare with the MedMNIST papers:

- binary-class: AUC on the last score column, ACC with that score thresholded at 0.5;
- multi-class and ordinal-regression: mean one-vs-rest AUC over classes, ACC of the argmax;
- multi-label: mean per-label AUC, mean per-label ACC at 0.5.

Also macro F1/precision/recall/specificity (a class absent from the split is left out of the
macro means and its per-class recall and F1 are NaN, never 0), balanced accuracy (mean
per-class recall over the classes present; for multi-label the mean over labels of
(sensitivity + specificity) / 2), Matthews correlation (MCC, multi-class form; mean over labels
for multi-label), top-label ECE with 15 bins (mean per label for multi-label), the Brier score
(mean squared error of the probabilities: over the positive column for binary and per label for
multi-label, summed over classes for multi-class) and the
negative log-likelihood (NLL) of the true class.

Everything is computed on the tensors' own device and returned as tensors first
(:func:`classification_metric_tensors`), so a training epoch reads all its metrics from a GPU
in one transfer.

Segmentation: Dice and IoU per case (the mean over cases is what nnU-Net reports and ranks by)
and pooled over the whole split (``dice_pooled``), per foreground class and averaged.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torchmetrics.functional.classification as C

CLASSIFICATION_METRICS = (
    "auc",
    "acc",
    "f1",
    "precision",
    "recall",
    "specificity",
    "balanced_acc",
    "mcc",
    "ece",
    "brier",
    "nll",
)
# lower is better for these; higher for every other metric
LOWER_IS_BETTER = ("ece", "brier", "nll", "loss", "aurc", "rbe", "be")


def lower_is_better(metric: str) -> bool:
    name = metric.split("/")[-1].removeprefix("test_").removeprefix("val_")
    return name.split("_")[0] in LOWER_IS_BETTER or name.endswith(LOWER_IS_BETTER)


def scores_from_logits(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Probabilities as medmnist scores them: sigmoid for multi-label, softmax otherwise."""
    return torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, dim=-1)


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))


def hard_predictions(y_score: torch.Tensor, task: str) -> torch.Tensor:
    """Predicted labels as medmnist's ACC defines them (0.5 threshold for binary/multi-label)."""
    if task == "multi-label":
        return (y_score > 0.5).long()
    if task == "binary-class":
        return (y_score[:, -1] > 0.5).long()
    return y_score.argmax(dim=1)


def _mean_over(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of per-class ``values`` over the classes ``keep`` marks (NaN when none)."""
    return torch.where(keep, values, torch.nan).nanmean()


def _multilabel_fns(t: torch.Tensor, y_score: torch.Tensor) -> dict:
    L = y_score.shape[1]
    nan = torch.tensor(torch.nan, device=y_score.device)
    eps = 1e-12
    # a label that is all 0 or all 1 in the split has no ROC curve: left out of the mean
    both = (t.sum(0) > 0) & (t.sum(0) < t.shape[0])
    return {
        "auc": lambda: _mean_over(C.multilabel_auroc(y_score, t, L, average="none"), both),
        "acc": lambda: C.multilabel_accuracy(y_score, t, L, threshold=0.5, average="macro"),
        "f1": lambda: C.multilabel_f1_score(y_score, t, L, average="macro"),
        "precision": lambda: C.multilabel_precision(y_score, t, L, average="macro"),
        "recall": lambda: C.multilabel_recall(y_score, t, L, average="macro"),
        "specificity": lambda: C.multilabel_specificity(y_score, t, L, average="macro"),
        "balanced_acc": lambda: (
            (
                C.multilabel_recall(y_score, t, L, average=None)
                + C.multilabel_specificity(y_score, t, L, average=None)
            ).mean()
            / 2
        ),
        "mcc": lambda: torch.where(
            both,
            torch.stack([C.binary_matthews_corrcoef(y_score[:, i], t[:, i]) for i in range(L)]),
            nan,
        ).nanmean(),
        "ece": lambda: torch.stack(
            [
                C.binary_calibration_error(y_score[:, i].contiguous(), t[:, i], n_bins=15)
                for i in range(L)
            ]
        ).mean(),
        "brier": lambda: ((y_score - t.float()) ** 2).mean(),
        "nll": lambda: (
            -(
                t * torch.log(y_score.clamp_min(eps))
                + (1 - t) * torch.log((1 - y_score).clamp_min(eps))
            ).mean()
        ),
    }


def _single_label_fns(t: torch.Tensor, y_score: torch.Tensor, task: str) -> dict:
    K = y_score.shape[1]
    nan = torch.tensor(torch.nan, device=y_score.device)
    binary = task == "binary-class"
    preds = hard_predictions(y_score, task)
    # a class absent from the split has no recall, no F1 and no one-vs-rest curve: it is left
    # out of the macro means (never scored as 0); precision counts the classes predicted too
    present = torch.bincount(t, minlength=K)[:K] > 0
    predicted = torch.bincount(preds, minlength=K)[:K] > 0
    defined = present.sum() >= 2
    recall = lambda: C.multiclass_recall(preds, t, K, average="none")  # noqa: E731
    return {
        "auc": lambda: torch.where(
            defined,
            C.binary_auroc(y_score[:, -1], t)
            if binary
            else _mean_over(C.multiclass_auroc(y_score, t, K, average="none"), present),
            nan,
        ),
        "acc": lambda: (preds == t).float().mean(),
        "f1": lambda: _mean_over(C.multiclass_f1_score(preds, t, K, average="none"), present),
        "precision": lambda: _mean_over(
            C.multiclass_precision(preds, t, K, average="none"), present | predicted
        ),
        "recall": lambda: _mean_over(recall(), present),
        "specificity": lambda: C.multiclass_specificity(preds, t, K, average="macro"),
        "balanced_acc": lambda: _mean_over(recall(), present),
        "mcc": lambda: torch.where(defined, C.multiclass_matthews_corrcoef(preds, t, K), nan),
        "ece": lambda: C.multiclass_calibration_error(y_score, t, K, n_bins=15),
        "brier": lambda: (
            ((y_score[:, -1] - t.float()) ** 2).mean()
            if binary
            else ((y_score - torch.nn.functional.one_hot(t, K).float()) ** 2).sum(1).mean()
        ),
        "nll": lambda: -torch.log(y_score.gather(1, t[:, None]).clamp_min(1e-12)).mean(),
    }


def classification_metric_tensors(
    y_true, y_score, task: str, metrics: tuple[str, ...] = CLASSIFICATION_METRICS
) -> dict[str, torch.Tensor]:
    """The named metrics as 0-d tensors on the scores' device.

    ``y_true`` is (N,) or (N,1) integer labels, or (N, L) 0/1 for multi-label; ``y_score`` holds
    probabilities (N, C).
    """
    y_true = _as_tensor(y_true)
    y_score = _as_tensor(y_score).float()
    if task == "multi-label":
        t = y_true.reshape(y_score.shape).long().to(y_score.device)
        fns = _multilabel_fns(t, y_score)
    else:
        t = y_true.reshape(-1).long().to(y_score.device)
        fns = _single_label_fns(t, y_score, task)
    with warnings.catch_warnings():
        # a class absent from the split: its terms are masked out above (NaN, never 0)
        warnings.filterwarnings("ignore", message="No (positive|negative) samples in targets")
        return {name: fns[name]().float() for name in metrics}


def absent_classes(y_true, num_classes: int) -> list[int]:
    """Classes of a single-label split without a sample (left out of its macro means)."""
    t = _as_tensor(y_true).reshape(-1).long().cpu()
    counts = torch.bincount(t, minlength=num_classes)[:num_classes]
    return [c for c in range(num_classes) if counts[c] == 0]


def classification_metrics(
    y_true, y_score, task: str, metrics: tuple[str, ...] = CLASSIFICATION_METRICS
) -> dict[str, float]:
    """Compute the named metrics from labels and probabilities (N, C) as floats."""
    tensors = classification_metric_tensors(y_true, y_score, task, metrics)
    values = torch.stack(list(tensors.values())).tolist() if tensors else []
    return dict(zip(tensors, values, strict=True))


def per_class_table(y_true, y_score, task: str, names: list[str] | None = None) -> list[dict]:
    """Per class (per label for multi-label): precision, recall (sensitivity), specificity, F1
    and support, at the same decision rule as ACC."""
    y_true = _as_tensor(y_true).cpu()
    y_score = _as_tensor(y_score).float().cpu()
    if task == "multi-label":
        t = y_true.reshape(y_score.shape).long()
        k = y_score.shape[1]
        cols = {
            "precision": C.multilabel_precision(y_score, t, k, average=None),
            "recall": C.multilabel_recall(y_score, t, k, average=None),
            "specificity": C.multilabel_specificity(y_score, t, k, average=None),
            "f1": C.multilabel_f1_score(y_score, t, k, average=None),
        }
        support = t.sum(0)
    else:
        t = y_true.reshape(-1).long()
        k = y_score.shape[1]
        pred = hard_predictions(y_score, task)
        cols = {
            "precision": C.multiclass_precision(pred, t, k, average=None),
            "recall": C.multiclass_recall(pred, t, k, average=None),
            "specificity": C.multiclass_specificity(pred, t, k, average=None),
            "f1": C.multiclass_f1_score(pred, t, k, average=None),
        }
        support = torch.bincount(t, minlength=k)[:k]
        predicted = torch.bincount(pred, minlength=k)[:k]
        # a class without samples has no recall and no F1; precision only where predicted
        absent = support == 0
        for m in ("recall", "f1"):
            cols[m] = torch.where(absent, torch.nan, cols[m].float())
        cols["precision"] = torch.where(absent & (predicted == 0), torch.nan, cols["precision"])
    names = list(names or [str(i) for i in range(k)])
    return [
        {
            "class": names[c] if c < len(names) else str(c),
            **{m: _rounded(float(v[c])) for m, v in cols.items()},
            "support": int(support[c]),
        }
        for c in range(k)
    ]


def _rounded(v: float) -> float:
    return v if v != v else round(v, 6)


# -- segmentation -----------------------------------------------------------------------------
def case_overlaps(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per case and foreground class: (intersection, predicted voxels, true voxels), (N, C-1, 3).

    ``pred``/``target`` are index maps (N, *spatial); counts stay on their device.
    """
    n = pred.shape[0]
    p = pred.reshape(n, -1).long()
    t = target.reshape(n, -1).long()
    out = []
    for c in range(1, num_classes):
        pc, tc = p == c, t == c
        out.append(torch.stack([(pc & tc).sum(1), pc.sum(1), tc.sum(1)], dim=1))
    return torch.stack(out, dim=1).float()


def dice_iou_from_overlaps(overlaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-case Dice and IoU (N, C-1); NaN where a class is absent from both (nnU-Net's rule)."""
    inter, psum, tsum = overlaps.unbind(-1)
    union = psum + tsum - inter
    empty = (psum + tsum) == 0
    dice = torch.where(empty, torch.nan, 2 * inter / (psum + tsum).clamp_min(1))
    iou = torch.where(empty, torch.nan, inter / union.clamp_min(1))
    return dice, iou


def segmentation_metric_tensors(
    overlaps: torch.Tensor, class_names: list[str] | tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """Per-case means (``dice``, ``iou``, ``dice_<class>``...) and their pooled counterparts."""
    dice, iou = dice_iou_from_overlaps(overlaps)
    k = overlaps.shape[1]
    names = list(class_names or range(k + 1))[1:]
    inter, psum, tsum = overlaps.sum(0).unbind(-1)
    pooled_dice = 2 * inter / (psum + tsum).clamp_min(1)
    pooled_iou = inter / (psum + tsum - inter).clamp_min(1)
    case_dice = dice.nanmean(1)  # mean over classes present in the case
    case_iou = iou.nanmean(1)
    out = {
        "dice": case_dice.nanmean(),
        "dice_std": _nanstd(case_dice),
        "iou": case_iou.nanmean(),
        "dice_pooled": pooled_dice.mean(),
        "iou_pooled": pooled_iou.mean(),
    }
    for i, name in enumerate(names):
        out[f"dice_{name}"] = dice[:, i].nanmean()
        out[f"iou_{name}"] = iou[:, i].nanmean()
    return out


def surface_metric_tensors(
    surface: torch.Tensor, class_names: list[str] | tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """Per-case means of HD95 and surface Dice from (N, C-1, 2) values: ``hd95``, ``nsd`` and
    per class ``hd95_<class>``, ``nsd_<class>``; NaN entries (undefined) are left out."""
    surface = torch.as_tensor(surface, dtype=torch.float64)
    k = surface.shape[1]
    names = list(class_names or range(k + 1))[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: NaN, as intended
        out = {
            "hd95": surface[..., 0].nanmean(1).nanmean(),
            "nsd": surface[..., 1].nanmean(1).nanmean(),
        }
        for i, name in enumerate(names):
            out[f"hd95_{name}"] = surface[:, i, 0].nanmean()
            out[f"nsd_{name}"] = surface[:, i, 1].nanmean()
    return out


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    x = x[~torch.isnan(x)]
    return x.std() if x.numel() > 1 else torch.zeros((), device=x.device)


def segmentation_metrics(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, class_names=None
) -> dict[str, float]:
    """Dice and IoU (per case and pooled) from index maps, as floats."""
    tensors = segmentation_metric_tensors(case_overlaps(preds, target, num_classes), class_names)
    return dict(zip(tensors, torch.stack(list(tensors.values())).tolist(), strict=True))


def segmentation_metrics_from_overlaps(
    overlaps, class_names=None, surface=None
) -> dict[str, float]:
    """Dice and IoU (per case and pooled) from saved per-case overlap counts (N, C-1, 3), and
    HD95/surface Dice from saved per-case values (N, C-1, 2) when given."""
    tensors = segmentation_metric_tensors(
        torch.as_tensor(overlaps, dtype=torch.float64), class_names
    )
    if surface is not None:
        tensors.update(surface_metric_tensors(surface, class_names))
    return dict(zip(tensors, torch.stack(list(tensors.values())).tolist(), strict=True))
