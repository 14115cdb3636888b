"""W&B offline/disabled behaviour and secret hygiene, through the real CLI."""

from pathlib import Path

import pytest

from conftest import run_cli
from test_sweeps import TINY

FAKE_KEY = "fake-wandb-key-0123456789abcdef0123456789abcdef"
FAKE_TOKEN = "tok-SECRET-9876543210"


def _all_text(root: Path) -> str:
    chunks = []
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size < 5_000_000:
            chunks.append(p.read_bytes().decode("utf-8", "ignore"))
    return "\n".join(chunks)


@pytest.mark.slow
def test_offline_wandb_one_run_per_job_and_no_secret_leaks(tmp_path):
    args = [
        "bench-train",
        "-m",
        *[a for a in TINY if a != "logger=none"],
        "logger=wandb",
        "seed=0,1",
        "+note=uses_${oc.env:MY_SERVICE_TOKEN}",
    ]
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY, "MY_SERVICE_TOKEN": FAKE_TOKEN}
    proc = run_cli(args, tmp_path, env=env, check=True)
    runs = sorted((tmp_path / "outputs").rglob("offline-run-*"))
    assert len(runs) == 2, proc.stderr[-3000:]
    assert runs[0].parent.parent != runs[1].parent.parent  # one per job folder, not merged
    for run in runs:  # sample predictions, confusion matrix and ROC were logged as media
        assert len(list(run.rglob("media/images/test/samples_*.png"))) == 16
        tables = [p.name for p in run.rglob("media/table/**/*.table.json")]
        assert any("confusion_matrix" in t for t in tables), tables
        assert any("per_class" in t for t in tables) and any("roc" in t for t in tables), tables
    text = _all_text(tmp_path) + proc.stdout + proc.stderr
    assert FAKE_KEY not in text
    assert FAKE_TOKEN not in text


def test_disabled_wandb_writes_nothing(tmp_path):
    args = ["bench-train", *[a for a in TINY if a != "logger=none"], "logger=wandb"]
    run_cli(args, tmp_path, env={"WANDB_MODE": "disabled"}, check=True)
    assert not list(tmp_path.rglob("wandb"))
    assert len(list((tmp_path / "runs").glob("*/record.json"))) == 1


@pytest.mark.slow
def test_offline_wandb_3d_segmentation_logs_middle_slices_with_masks(tmp_path):
    args = ["bench-train", "data=synthetic_seg3d", "data.size=16", "data.n_train=8"]
    args += ["data.n_val=4", "data.n_test=4", "data.batch_size=4", "model=unet", "model.depth=2"]
    args += ["model.base_width=4", "logger=wandb", "trainer.max_epochs=1"]
    args += ["trainer.enable_progress_bar=false"]
    proc = run_cli(args, tmp_path, env={"WANDB_MODE": "offline"}, check=True)
    (run,) = (tmp_path / "outputs").rglob("offline-run-*")
    samples = list(run.rglob("media/images/test/samples_*.png"))
    assert len(samples) == 4, proc.stderr[-3000:]
    from PIL import Image

    assert Image.open(samples[0]).size == (16, 16)  # a slice, not a volume
    masks = list(run.rglob("media/images/mask/test/samples_*.mask.png"))  # W&B dedups by hash
    assert masks and all(Image.open(m).size == (16, 16) for m in masks)


def test_loggers_combine_from_the_logger_group(tmp_path):
    """logger=[csv,tensorboard,mlflow]: every tracker gets the run's metrics."""
    args = [
        "bench-train",
        *[a for a in TINY if a != "logger=none"],
        "logger=[csv,tensorboard,mlflow]",
    ]
    proc = run_cli(args, tmp_path, check=True)
    (metrics,) = (tmp_path / "outputs").rglob("csv/*/metrics.csv")
    assert "val/auc" in metrics.read_text() and "test/auc" in metrics.read_text()
    assert list((tmp_path / "outputs").rglob("tensorboard/*/events.out.tfevents.*"))
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "medbench"]
    (run,) = client.search_runs([exp.experiment_id])
    assert "test/auc" in run.data.metrics and run.data.params["model.name"] == "bccnn"
    assert "Traceback" not in proc.stderr


def test_disabled_wandb_builds_no_logger_and_a_missing_tracker_is_one_line(monkeypatch):
    import sys

    from bench.errors import ConfigError
    from bench.tracking import build_loggers, resolve_wandb_mode

    # an explicit mode in the config beats the environment (wandb.init's own precedence);
    # the environment only decides for mode=auto
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb_cfg = {"wandb": {"_target_": "bench.tracking.wandb_logger", "mode": "disabled"}}
    assert build_loggers(wandb_cfg, name="x", id="x") == []
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    import lightning.pytorch.loggers.mlflow as lm

    monkeypatch.setattr(lm, "_MLFLOW_AVAILABLE", False)
    cfg = {"mlflow": {"_target_": "lightning.pytorch.loggers.MLFlowLogger"}}
    with pytest.raises(ConfigError, match=r"logger=mlflow needs a package .*medbench\[trackers\]"):
        build_loggers(cfg, run_name="x")
