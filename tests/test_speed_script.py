"""scripts/bench_speed.py: its summary arithmetic, and one tiny measured run on real data."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import PNEUMONIA, ROOT, needs_pneumonia

SCRIPT = ROOT / "scripts" / "bench_speed.py"


def _row(model, method, precision, rep, epoch_s, fit_s):
    return {
        "model": model,
        "method": method,
        "precision": precision,
        "rep": rep,
        "epoch_time_s": epoch_s,
        "fit_time_s": fit_s,
        "train_samples_per_sec": 100.0,
        "infer_samples_per_sec": 200.0,
        "val_auc": 0.9,
        "peak_rss_mb": 1000.0,
        "device": "cpu",
    }


def test_summary_drops_warmup_takes_medians_and_ratios(tmp_path):
    rows = [
        _row("m", "harness", "32", 0, 99.0, 99.0),  # warm-up: must not count
        _row("m", "raw", "32", 0, 99.0, 99.0),
        _row("m", "reference", "32", 0, 99.0, 99.0),
    ]
    for rep, (h, r, ref) in enumerate([(11, 10, 30), (13, 10, 40), (12, 12, 20)], start=1):
        rows += [
            _row("m", "harness", "32", rep, h, h + 1),
            _row("m", "raw", "32", rep, r, r),
            _row("m", "reference", "32", rep, ref, ref),
        ]
    log = tmp_path / "log.txt"
    log.write_text("noise line\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--aggregate-from", str(log), "--warmup-reps", "1"]
        + ["--out", str(out), "--data-dir", str(tmp_path / "no-data")],  # needs no data
        check=True,
        capture_output=True,
    )
    agg = pd.read_csv(out / "speed.csv", dtype={"precision": str}).set_index("method")
    assert agg.loc["harness", "reps"] == 3 and agg.loc["harness", "epoch_time_s"] == 12
    assert agg.loc["harness", "epoch_time_s_max"] == 13  # the warm-up's 99 is gone
    # medians: harness 12, raw 10, reference 30; fit: harness 13, raw 10
    assert agg.loc["harness", "harness_over_raw"] == pytest.approx(1.2)
    assert agg.loc["harness", "harness_over_raw_fit"] == pytest.approx(1.3)
    assert agg.loc["harness", "reference_over_harness"] == pytest.approx(2.5)
    assert "| m | harness | 32 | 12 (11-13)" in (out / "speed.md").read_text()


@pytest.mark.parametrize("content", [None, "no json rows here\n"])
def test_aggregate_from_a_missing_or_empty_log_is_one_line(tmp_path, content):
    log = tmp_path / "log.txt"
    if content is not None:
        log.write_text(content)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--aggregate-from", str(log), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --aggregate-from") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "speed.csv").exists()


@pytest.mark.slow
@needs_pneumonia()
def test_tiny_measured_run_writes_every_method(tmp_path):
    out = tmp_path / "speed"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(PNEUMONIA.parent), "--models", "bccnn"]
        + ["--reps", "1", "--train-limit", "256", "--precisions", "32", "--skip-overhead"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env={"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    agg = pd.read_csv(out / "speed.csv", dtype={"precision": str})
    assert set(agg.method) == {"harness", "raw", "reference"}
    assert (agg.epoch_time_s > 0).all() and (agg.train_images == 256).all()
    assert agg.harness_over_raw.notna().sum() == 1 and agg.reference_over_harness.notna().sum() == 1
