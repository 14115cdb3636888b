import numpy as np
import pytest
import torch
from medmnist.evaluator import getACC, getAUC

from bench.metrics import classification_metrics, segmentation_metrics

MEDMNIST_TASK = {"multi-label": "multi-label, binary-class"}


@pytest.mark.parametrize(
    "task,k",
    [("binary-class", 2), ("multi-class", 7), ("ordinal-regression", 5), ("multi-label", 14)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_auc_acc_equal_medmnist_evaluator(task, k, seed):
    rng = np.random.default_rng(seed)
    n = 257
    if task == "multi-label":
        y, s = rng.integers(0, 2, (n, k)), rng.random((n, k))
    else:
        y, s = rng.integers(0, k, (n, 1)), rng.dirichlet(np.ones(k), n)
    ours = classification_metrics(y, s, task)
    mt = MEDMNIST_TASK.get(task, task)
    assert ours["auc"] == pytest.approx(getAUC(y, s, mt), abs=1e-6)
    assert ours["acc"] == pytest.approx(getACC(y, s, mt), abs=1e-6)


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    m = classification_metrics(y, s, "binary-class")
    # AUC: positives 0.65, 0.8 vs negatives 0.1, 0.6 -> all 4 pairs ordered right
    assert m["auc"] == pytest.approx(1.0)
    assert m["acc"] == pytest.approx(0.75)  # sample 2 predicted positive wrongly
    # Brier on the positive column: (.1^2 + .6^2 + .35^2 + .2^2) / 4
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.1225 + 0.04) / 4, abs=1e-6)
    # balanced accuracy: recall class0 = 1/2, class1 = 2/2
    assert m["balanced_acc"] == pytest.approx(0.75)


def test_ece_by_hand():
    # top-label confidences 0.9 (correct), 0.6 (wrong), 0.65 (correct), 0.8 (correct)
    y = np.array([0, 0, 1, 1])
    s = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    m = classification_metrics(y, s, "multi-class")
    # 15 equal bins of width 1/15: 0.6 and 0.65 share bin [0.6, 0.667) (acc 1/2, conf 0.625);
    # ECE = sum over bins of (n_bin / n) * |acc_bin - conf_bin|
    expected = (1 * abs(1 - 0.9) + 2 * abs(0.5 - 0.625) + 1 * abs(1 - 0.8)) / 4
    assert m["ece"] == pytest.approx(expected, abs=1e-6)
    # multi-class Brier sums over classes
    brier = np.mean(((s - np.eye(2)[y]) ** 2).sum(1))
    assert m["brier"] == pytest.approx(brier, abs=1e-6)


def test_segmentation_dice_iou_by_hand():
    target = torch.tensor([[[0, 1, 1, 2]]])
    pred = torch.tensor([[[0, 1, 2, 2]]])
    m = segmentation_metrics(pred, target, 3, ["bg", "a", "b"])
    # class a: pred {1}, target {1,2} -> dice 2*1/(1+2), iou 1/2
    assert m["dice_a"] == pytest.approx(2 / 3)
    assert m["iou_a"] == pytest.approx(0.5)
    # class b: pred {2,3}, target {3} -> dice 2/3, iou 1/2
    assert m["dice_b"] == pytest.approx(2 / 3)
    assert m["dice"] == pytest.approx(2 / 3)
    assert m["iou"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "task, k", [("binary-class", 2), ("multi-class", 4), ("ordinal-regression", 3)]
)
@pytest.mark.parametrize("metric", ["auc", "acc"])
def test_vectorised_bootstrap_equals_the_metric_on_each_resample(task, k, metric):
    """The bootstrap's batch path (all resamples at once) gives the numbers the metric gives on
    each resample, ties and resamples that lack a class (NaN) included."""
    import numpy as np

    from bench.stats import _resample_indices, metric_fn

    rng = np.random.default_rng(1)
    n = 30
    y = rng.integers(0, k, n)
    y[:3] = 0  # a rare class: some resamples miss the others
    s = np.round(rng.dirichlet(np.ones(k), n), 1)  # rounded: many ties
    fn = metric_fn(task, metric)
    idx = _resample_indices(n, 200, 0)
    fast = fn.batch(y, s, idx)
    slow = np.array([fn(y[i], s[i]) for i in idx])
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    ok = ~np.isnan(slow)
    np.testing.assert_allclose(fast[ok], slow[ok], atol=1e-6)
