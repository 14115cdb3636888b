"""Shared fixtures: Hydra-composed configs pointed at temp folders, tiny data, real-data paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from bench.job.instantiate import compose_train

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SHARED_MEDMNIST = ROOT.parent / "shared" / "data" / "medmnist"
PNEUMONIA = SHARED_MEDMNIST / "pneumoniamnist.npz"
BIN = Path(sys.executable).parent

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

# a fast synthetic config: tiny sets, few batches, no progress bars
FAST = [
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "data.n_train=96",
    "data.n_val=48",
    "data.n_test=48",
    "data.batch_size=16",
]


def needs_pneumonia():
    return pytest.mark.skipif(
        not PNEUMONIA.exists(), reason=f"real PneumoniaMNIST not found at {PNEUMONIA}"
    )


@pytest.fixture
def make_cfg(tmp_path):
    """compose(overrides) -> DictConfig with paths in tmp_path and HydraConfig set."""

    def _make(overrides: list[str] | None = None):
        cfg = compose_train(
            overrides,
            paths={
                "data_dir": tmp_path / "data",
                "runs_dir": tmp_path / "runs",
                "output_dir": tmp_path / "out",
                "log_dir": tmp_path / "logs",
            },
        )
        if "cache_dir" in cfg.data:
            cfg.data.cache_dir = str(tmp_path / "data" / "synthetic")
        return cfg

    yield _make
    GlobalHydra.instance().clear()


def train_run(root: Path, overrides: list[str]):
    """Compose and train one run into ``root/runs`` (outputs and data caches under ``root``);
    returns its outcome. The tests' one way to make a run in-process."""
    from bench.job.entry import train

    cfg = compose_train(overrides, paths={"runs_dir": root / "runs", "output_dir": root / "out"})
    if "cache_dir" in cfg.data:
        cfg.data.cache_dir = str(root / "data")
    return train(cfg)


# the tools' tests share one trained run (trained once per session; each test gets a copy)
BCCNN_RUN = ["model=bccnn", "model.batch_norm=true", *FAST, "trainer.max_epochs=2"]


@pytest.fixture(scope="session")
def _bccnn_store(tmp_path_factory):
    out = train_run(tmp_path_factory.mktemp("bccnn_store"), BCCNN_RUN)
    assert out.status == "done", out.error
    return Path(out.record_path).parent


@pytest.fixture
def bccnn_run(_bccnn_store, tmp_path):
    """A private copy of the session's trained BCCNN run (a tool may write into it): its
    record."""
    import shutil

    from bench.records import load_record

    dest = tmp_path / "runs" / _bccnn_store.name
    shutil.copytree(_bccnn_store, dest)
    return load_record(dest)


def cli_env(cwd: Path, env: dict | None = None) -> dict:
    """Environment for a CLI run in ``cwd``: data, run store and logs under it, W&B disabled."""
    return {
        **os.environ,
        "WANDB_MODE": "disabled",
        "MEDBENCH_DATA_DIR": str(cwd / "data"),
        "MEDBENCH_RUNS_DIR": str(cwd / "runs"),
        "MEDBENCH_LOG_DIR": str(cwd / "outputs"),
        **(env or {}),
    }


def start_cli(args: list[str], cwd: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start a console script of this venv in the background (see :func:`cli_env`)."""
    return subprocess.Popen(
        [str(BIN / args[0]), *args[1:]], cwd=cwd, env=cli_env(cwd, env), **popen
    )


def run_cli(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600, check: bool = False
) -> subprocess.CompletedProcess:
    """Run a console script of this venv in ``cwd`` and wait for it."""
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=cli_env(cwd, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc
