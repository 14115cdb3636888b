"""Multirun sweeps through the real CLI: grid, resume, failure isolation, kill/restart,
concurrent writers, submitit."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_cli, start_cli

TINY = [
    "model=bccnn",
    "model.width=4",
    "model.hidden=[16]",
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "data.n_train=64",
    "data.n_val=32",
    "data.n_test=32",
    "data.batch_size=16",
]


def records(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/record.json")}


def with_(base: list[str], **kv) -> list[str]:
    keys = {k.replace("__", "."): v for k, v in kv.items()}
    return [a for a in base if a.split("=")[0] not in keys] + [f"{k}={v}" for k, v in keys.items()]


def test_grid_rerun_skips_and_failures_are_isolated(tmp_path):
    args = ["bench-train", "-m", *with_(TINY, model__width="4,8"), "seed=0,1"]
    first = run_cli(args, tmp_path, check=True)
    recs = records(tmp_path / "runs")
    assert len(recs) == 4 and {r["status"] for r in recs.values()} == {"done"}
    assert "4 jobs, 4 done, 0 failed, 0 skipped" in first.stderr
    stamps = {k: r["finished_at"] for k, r in recs.items()}

    second = run_cli(args, tmp_path, check=True)
    assert "4 jobs, 0 done, 0 failed, 4 skipped" in second.stderr
    assert second.stdout.count("already done") + second.stderr.count("already done") == 4
    assert {k: r["finished_at"] for k, r in records(tmp_path / "runs").items()} == stamps

    failing = run_cli(
        ["bench-train", "-m", *with_(TINY, model__name="bccnn,does_not_exist"), "seed=5"], tmp_path
    )
    assert failing.returncode == 1, failing.stderr[-2000:]
    assert "2 jobs, 1 done, 1 failed" in failing.stderr
    by_status = {}
    for r in records(tmp_path / "runs").values():
        if r["seed"] == 5:
            by_status[r["status"]] = r
    assert set(by_status) == {"done", "failed"}
    assert "unknown model 'does_not_exist'" in by_status["failed"]["error"]


@pytest.mark.slow
def test_sigkill_mid_sweep_then_restart_matches_uninterrupted(tmp_path):
    args = ["bench-train", "-m", *with_(TINY, trainer__max_epochs=2), "model.width=4,5,6,7"]
    proc = start_cli(
        args,
        tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [r for r in records(tmp_path / "runs").values() if r["status"] == "done"]
        if done:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {k: r for k, r in records(tmp_path / "runs").items() if r["status"] == "done"}
    assert 1 <= len(before) < 4
    run_cli(args, tmp_path, check=True)
    after = records(tmp_path / "runs")
    assert len(after) == 4 and all(r["status"] == "done" for r in after.values())
    for k, r in before.items():  # finished before the kill: kept, not redone
        assert after[k]["finished_at"] == r["finished_at"]
    # the same sweep uninterrupted, in another run store: identical numbers
    clean = tmp_path / "clean"
    clean.mkdir()
    run_cli(args, clean, env={"MEDBENCH_DATA_DIR": str(tmp_path / "data")}, check=True)
    reference = records(clean / "runs")
    assert set(reference) == set(after)
    for k in after:
        assert after[k]["test"] == reference[k]["test"], k


@pytest.mark.slow
def test_two_sweeps_on_one_store_at_once(tmp_path):
    args = ["bench-train", "-m", *TINY, "model.width=4,5,6,7"]
    procs = [
        start_cli(
            args,
            tmp_path,
            env={"MEDBENCH_LOG_DIR": str(tmp_path / f"out{i}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = records(tmp_path / "runs")
    assert len(recs) == 4 and all(r["status"] == "done" for r in recs.values())
    started = sum(o.count(" -> ") for o in outs)
    assert started == 4, outs  # every run trained exactly once across both processes
    assert not list((tmp_path / "runs").glob("*/.*.tmp")), "half-written files left behind"


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    args = ["bench-train", "-m", "hydra/launcher=local_submitit", *TINY, "model.width=4,8"]
    proc = run_cli(args, tmp_path, check=True)
    recs = records(tmp_path / "runs")
    assert len(recs) == 2 and all(r["status"] == "done" for r in recs.values()), proc.stderr[-2000:]
    assert list((tmp_path / "outputs").rglob(".submitit"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, said",
    [
        (signal.SIGINT, "interrupted by the user (Ctrl-C)"),
        (signal.SIGTERM, "terminated by SIGTERM"),
    ],
)
def test_ctrl_c_marks_interrupted_and_rerun_resumes_from_last_checkpoint(tmp_path, sig, said):
    # epochs of ~1-2 s: long enough to interrupt after the first, short enough to finish later
    args = [
        "bench-train",
        *with_(TINY, trainer__max_epochs=6, data__n_train=768, model__width=32),
        "checkpoint.every_minutes=0",
    ]
    proc = start_cli(
        args,
        tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/checkpoints/last.ckpt")):
        if proc.poll() is not None:  # ended before its first checkpoint: say why, don't wait
            pytest.fail(f"run ended early (exit {proc.returncode}): {proc.stdout.read()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-2000:]
    (rec,) = records(tmp_path / "runs").values()
    assert rec["status"] == "interrupted" and said in rec["error"], rec["error"]
    assert "rerun the same command to resume" in rec["error"]
    run_cli(args, tmp_path, check=True)
    after = records(tmp_path / "runs")[rec["run_id"]]
    assert after["status"] == "done" and after["resumed_from"].endswith("last.ckpt")
    assert after["attempt"] == 2


def _ckpt_epoch(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def _state(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_killed_after_a_non_improving_epoch_resumes_to_the_same_final_weights(tmp_path):
    """The resume checkpoint is the latest epoch (never an older best one) and carries the best
    weights so far: a run killed after an epoch that did not improve continues from the next
    epoch and ends exactly as an uninterrupted run (CPU, deterministic)."""
    import torch

    args = [
        "bench-train",
        *with_(
            TINY, trainer__max_epochs=8, data__n_train=512, model__width=16, model__hidden="[32]"
        ),
        "task.optimizer.lr=0.003",
        "trainer.deterministic=true",
        "checkpoint.every_minutes=0",
        "checkpoint.keep=all",
        "threads=1",
    ]
    ref_root = tmp_path / "reference"
    ref_root.mkdir()
    env = {"MEDBENCH_DATA_DIR": str(tmp_path / "data")}
    run_cli(args, ref_root, env=env, check=True)
    (ref,) = records(ref_root / "runs").values()
    import pandas as pd

    hist = pd.read_csv(ref_root / "runs" / ref["run_id"] / "history.csv")
    best_so_far = hist["val_auc"].cummax().shift(1)
    non_improving = [int(e) for e in hist.epoch[1:-1] if hist.val_auc[e] <= best_so_far[e]]
    assert non_improving, "the reference run improved every epoch; change the seed or lr"
    target = non_improving[0]

    root = tmp_path / "killed"
    root.mkdir()
    proc = start_cli(
        args,
        root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    last = None
    seen = 0.0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list((root / "runs").glob("*/checkpoints/last.ckpt"))
        if found and found[0].stat().st_mtime != seen:
            os.killpg(proc.pid, signal.SIGSTOP)  # freeze, then look at the epoch it saved
            last = found[0]
            seen = last.stat().st_mtime
            if _ckpt_epoch(last) >= target:  # saved at the end of epoch `target`
                os.killpg(proc.pid, signal.SIGKILL)
                break
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    proc.wait()
    assert last is not None and _ckpt_epoch(last) == target
    killed_state = torch.load(last, map_location="cpu", weights_only=False)
    best = next(
        iter(v for k, v in killed_state["callbacks"].items() if k.startswith("BestAndResume"))
    )
    assert best["best_epoch"] < target  # the best epoch lies before the kill: not the resume point
    (rec,) = records(root / "runs").values()
    assert rec["status"] == "running"  # SIGKILL: no chance to write more

    run_cli(args, root, env=env, check=True)
    (after,) = records(root / "runs").values()
    assert after["status"] == "done" and after["resumed_from"].endswith("last.ckpt")
    assert after["best_epoch"] == ref["best_epoch"] and after["test"] == ref["test"]
    run_a, run_b = (r / "runs" / ref["run_id"] for r in (ref_root, root))
    pd.testing.assert_frame_equal(
        pd.read_csv(run_a / "history.csv").drop(columns="epoch_time_s"),
        pd.read_csv(run_b / "history.csv").drop(columns="epoch_time_s"),
    )
    # its cost is the whole run's: epochs before the kill keep their times, fit time adds up
    hist_b = pd.read_csv(run_b / "history.csv")
    assert hist_b.epoch_time_s.notna().all() and len(hist_b) == len(hist)
    assert after["cost"]["train_time_s"] >= 0.99 * hist_b.epoch_time_s.sum()
    assert after["cost"]["wall_time_s"] > after["cost"]["train_time_s"]
    for name in ("last.ckpt", "best.ckpt"):  # final weights and best weights, bit for bit
        a, b = _state(run_a / "checkpoints" / name), _state(run_b / "checkpoints" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
