"""What a user sees: a fast --help, quiet runs that end with their results, sweep progress with
the time left and the sweep's leaderboard, epoch lines without a terminal."""

import subprocess

import pytest

from bench.sweep import JobOutcome, eta_seconds, format_duration

from conftest import BIN, run_cli
from test_sweeps import TINY

NOISE = (
    "GPU available",
    "TPU available",
    "💡",
    "_pytree",
    "log_every_n_steps",
    "Restoring states",
    "Loaded model weights",
    "anonymous setting",
    "LeafSpec",
)


def test_help_is_fast_and_lists_options_without_partials(tmp_path):
    # fast by construction: --help imports neither torch nor Lightning (a machine-independent check)
    probe = (
        "import sys; from bench.cli import train_cli; sys.argv = ['bench-train', '--help']\n"
        "try:\n    train_cli()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    light = subprocess.run(
        [str(BIN / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    assert "HEAVY []" in light.stderr, light.stderr[-2000:]
    proc = run_cli(["bench-train", "--help"], tmp_path, check=True)
    out = proc.stdout
    assert "usage: bench-train" in out and "paper_resnet18" in out and "colocate" in out
    assert "_common" not in out and "_medmnist" not in out
    assert len(out.splitlines()) < 60


def test_a_run_is_quiet_and_ends_with_its_results(tmp_path):
    args = [*[a for a in TINY if a != "logger=none"], "logger=wandb", "trainer.max_epochs=2"]
    proc = run_cli(["bench-train", *args], tmp_path, env={"WANDB_MODE": "disabled"}, check=True)
    text = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in text, noise
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("record: ") and lines[-1].endswith("record.json")
    assert any(line.startswith("test ") for line in lines[-5:])
    assert "auc" in text and "epoch 1/2" in text and "epoch 2/2" in text  # no terminal: lines
    assert not list(tmp_path.rglob("wandb"))  # disabled W&B builds no logger at all


def test_eta_from_finished_jobs():
    jobs = [
        JobOutcome("done", "a", wall_s=10),
        JobOutcome("failed", "b", wall_s=30),
        JobOutcome("skipped", "c", wall_s=0.1),
    ]
    assert eta_seconds(jobs, total=8) == pytest.approx(20 * 5)  # mean 20 s x 5 jobs left
    assert eta_seconds(jobs, total=8, parallel=2) == pytest.approx(50)
    assert eta_seconds([JobOutcome("skipped", "c")], total=4) is None
    assert format_duration(3725) == "1:02:05"


def test_a_sweep_shows_progress_and_ends_with_its_leaderboard(tmp_path):
    proc = run_cli(["bench-train", "-m", *TINY, "model.width=4,8"], tmp_path, check=True)
    text = proc.stdout + proc.stderr
    assert "job 1 of 2: done" in text and "test_auc" in text and "ETA 0:0" in text
    assert "leaderboard of this sweep (2 runs)" in proc.stdout
    board = proc.stdout.split("leaderboard of this sweep")[1]
    assert "model.width" in board and "bccnn" in board
    # ranks need CIs: the instant table orders rows and leaves ranking to bench-leaderboard
    assert "rank" not in board.splitlines()[1] and "bench-leaderboard ranks" in board


def test_state_dict_works_during_an_evaluation_epoch(make_cfg):
    import lightning as L

    from bench.job.entry import train

    seen = {}

    class Peek(L.Callback):
        def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs):
            seen["keys"] = len(pl_module.state_dict())  # the eval buffers live elsewhere

    cfg = make_cfg(
        [
            "model=bccnn",
            "model.hidden=[16]",
            *TINY[4:],
            "+callbacks.peek._target_=test_console.Peek",
        ]
    )
    globals()["Peek"] = Peek
    assert train(cfg).status == "done"
    assert seen["keys"] > 0


def test_the_console_scripts_are_installed():
    for name in (
        "bench-train",
        "bench-leaderboard",
        "bench-report",
        "bench-explain",
        "bench-robust",
        "bench-tta",
        "bench-uncertainty",
        "bench-export",
        "bench-predict",
        "bench-data",
        "bench-speed",
    ):
        assert (BIN / name).exists(), name


@pytest.mark.parametrize(
    "module", ["bench.commands.robust", "bench.commands.tta", "bench.commands.uncertainty"]
)
def test_evaluation_commands_share_one_device_option(module, tmp_path, capsys):
    import importlib

    import torch

    main = importlib.import_module(module).main
    with pytest.raises(SystemExit):
        main(["--device", "gpu"])  # the old bench-tta spelling is refused by argparse
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
    if torch.cuda.is_available():
        pytest.skip("the no-GPU error needs a machine without CUDA")
    assert main(["--run-dir", str(tmp_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA GPU is visible" in err, err
