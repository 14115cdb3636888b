"""A user's own images read right or refused (issue: folders people really have, one reader for
training, checking and predicting, metrics that never score an absent class).

Each test names the numbered case it pins; each failed before the fix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics import classification_metrics, per_class_table
from bench.records import load_record

from conftest import FAST, train_run
from helpers import write_medmnist_npz


# -- 5. macro metrics never score an absent class ------------------------------------------------
def test_absent_class_is_left_out_of_macro_recall_f1_and_balanced_accuracy():
    y = [0, 0, 1, 1]  # three classes, class 2 absent from the split
    scores = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, scores, "multi-class")
    # per-class recall 0.5 (class 0) and 1.0 (class 1): 0.75, not (0.5 + 1 + 0) / 3 = 0.5
    assert m["balanced_acc"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    # F1 2/3 and 0.8 over the two present classes
    assert m["f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    row = per_class_table(y, scores, "multi-class")[2]
    assert row["support"] == 0
    assert math.isnan(row["recall"]) and math.isnan(row["f1"]) and math.isnan(row["precision"])
    # a class predicted but absent keeps its precision 0: those were real false positives
    wrong = np.array([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    assert per_class_table(y, wrong, "multi-class")[2]["precision"] == 0.0


# -- 6. a val or test split without one of three or more classes ---------------------------------
def _retina(tmp_path, **labels):
    counts = {"train": 30, "val": 10, "test": 10}
    root = tmp_path / "mm"
    write_medmnist_npz(root / "retinamnist.npz", (28, 28, 3), 5, counts=counts, **labels)
    return ["data=retinamnist", f"data.root={root}", "model=bccnn", *FAST[:3]]


def test_val_split_without_a_trained_class_is_refused(tmp_path):
    val = (np.arange(10) % 4).reshape(10, 1)  # class 4 missing; train has all five
    out = train_run(tmp_path, _retina(tmp_path, val_labels=val))
    assert out.status == "failed" and out.exit_code == 2
    assert "val split of retinamnist has no samples of class '4'" in out.error.replace('"', "'")


def test_test_split_without_a_class_is_noted_and_left_out(tmp_path, caplog):
    test = (np.arange(10) % 4).reshape(10, 1)
    out = train_run(tmp_path, _retina(tmp_path, test_labels=test))
    rec = load_record(out.record_path)
    assert rec.status == "done"
    assert any("no samples of class" in n and "left out" in n for n in rec.notes), rec.notes
    absent = [r for r in rec.per_class["test"] if r["support"] == 0]
    assert len(absent) == 1 and math.isnan(absent[0]["recall"])
    assert "has no samples of class" in caplog.text
