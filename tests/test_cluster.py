"""medbench against a real SLURM (a one-node cluster started by the fixture; docs/cluster.md):
array sweeps, preemption and requeue, time limits, cancellation, DDP under srun, a failing
task. Each test asserts records and weights, not only exit codes. Skipped with a reason where
SLURM is not installed or cannot be started (CI installs it: .ci/run)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from slurm_cluster import SlurmCluster, start_cluster, why_not

from bench.records import RunStore, load_record

from conftest import BIN, cli_env, train_run

pytestmark = pytest.mark.slow
TESTS = str(Path(__file__).parent)
TINY = [
    "model=bccnn", "model.width=4", "model.hidden=[16]", "logger=none",
    "trainer.enable_progress_bar=false", "data.n_train=64", "data.n_val=32", "data.n_test=32",
    "data.batch_size=16", "checkpoint.every_minutes=0", "threads=1",
]  # fmt: skip
SLURM = [
    "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]  # fmt: skip


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except (OSError, subprocess.SubprocessError, TimeoutError, RuntimeError) as e:
        pytest.skip(f"SLURM did not start here: {str(e).splitlines()[0]}")
    yield cluster
    cluster.stop()


def _sweep(cluster: SlurmCluster, cwd: Path, args: list[str], wait: bool = True, **popen):
    env = {**cli_env(cwd), **cluster.env, "PYTHONPATH": TESTS}
    cmd = [str(BIN / "bench-train"), "-m", *SLURM, *args]
    if not wait:
        out = subprocess.PIPE
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


class Releaser:
    """SLURM holds a requeued batch job for about two minutes before it may start again (a
    guard against requeue loops); the tests make such a job eligible at once (scontrol update
    StartTime=now), so a requeue is seconds, not minutes. What is tested is unchanged."""

    def __init__(self, cluster: SlurmCluster) -> None:
        self.cluster, self.stop = cluster, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            out = self.cluster.run("squeue", "-h", "-o", "%i|%T|%r", check=False).stdout
            for line in out.splitlines():
                job, state, reason = (line.split("|") + ["", ""])[:3]
                if state == "PENDING" and reason == "BeginTime":
                    self.cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now",
                                     check=False)  # fmt: skip

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def _records(cwd: Path) -> dict[str, object]:
    return {r.run_id: r for r in RunStore(cwd / "runs").iter_records()[0]}


def _wait_epoch(cwd: Path, epoch: int, timeout: float = 240) -> None:
    """Until a run's resume checkpoint holds ``epoch`` (it trains under the scheduler)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for last in (cwd / "runs").glob("*/checkpoints/last.ckpt"):
            try:
                if torch.load(last, map_location="cpu", weights_only=False)["epoch"] >= epoch:
                    return
            except Exception:  # being written: look again
                pass
        time.sleep(0.5)
    raise TimeoutError(f"no run reached epoch {epoch} under SLURM")


def _job_id(cluster: SlurmCluster, timeout: float = 60) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        running = [j for j in cluster.jobs() if j["state"] == "RUNNING"]
        if running:
            return running[0]["id"]
        time.sleep(0.5)
    raise TimeoutError(f"no running job: {cluster.jobs()}")


def _best_weights(record) -> dict:
    return torch.load(record.dir / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]


def test_an_array_sweep_of_four_runs_two_at_a_time(slurm, tmp_path):
    grid = ["hydra.launcher.array_parallelism=2", "model.width=4,8", "seed=0,1"]
    proc = _sweep(slurm, tmp_path, [*TINY, "trainer.max_epochs=1", *grid])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = _records(tmp_path)
    assert len(recs) == 4 and all(r.status == "done" for r in recs.values())
    assert len({(r.config_id, r.seed) for r in recs.values()}) == 4  # no configuration twice
    assert "sweep finished: 4 jobs, 4 done, 0 failed" in proc.stdout + proc.stderr
    assert "Bypassing sacct error" not in proc.stdout + proc.stderr  # said once, in our words


def _uninterrupted(tmp_path: Path, extra: list[str]):
    """The same run, in-process and uninterrupted: the weights to compare with."""
    ref = tmp_path / "reference"
    out = train_run(ref, [*TINY, *extra, "+callbacks.slow._target_=rendezvous.SlowEpochs",
                          "+callbacks.slow.seconds=0"])  # fmt: skip
    return load_record(out.record_path)


def test_a_requeued_job_resumes_and_ends_with_the_uninterrupted_weights(slurm, tmp_path):
    sys.path.insert(0, TESTS)
    extra = ["trainer.max_epochs=6", "checkpoint.keep=all"]
    slow = ["+callbacks.slow._target_=rendezvous.SlowEpochs", "+callbacks.slow.seconds=2"]
    with Releaser(slurm):
        proc = _sweep(slurm, tmp_path, [*TINY, *extra, *slow], wait=False)
        _wait_epoch(tmp_path, 2)
        slurm.run("scontrol", "requeue", _job_id(slurm))  # what a preemption does to the job
        out, _ = proc.communicate(timeout=480)
    (rec,) = _records(tmp_path).values()
    assert rec.status == "done" and rec.attempt >= 2 and rec.resumed_from, out[-3000:]
    ref = _uninterrupted(tmp_path, extra)
    mine, theirs = _best_weights(rec), _best_weights(ref)
    assert rec.best_epoch == ref.best_epoch
    for key in theirs:
        assert torch.equal(mine[key], theirs[key]), key


def test_a_job_at_its_time_limit_saves_is_requeued_and_completes(slurm, tmp_path):
    slow = ["+callbacks.slow._target_=rendezvous.SlowEpochs", "+callbacks.slow.seconds=4"]
    limits = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30",
              "hydra.launcher.max_num_timeout=4"]  # fmt: skip
    with Releaser(slurm):  # SIGUSR2 30 s before the 1-minute limit: ~30 s of training a try
        proc = _sweep(slurm, tmp_path, [*TINY, "trainer.max_epochs=10", *slow, *limits])
    (rec,) = _records(tmp_path).values()
    assert rec.status == "done", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rec.attempt >= 2 and rec.resumed_from  # it was signalled, saved, requeued, resumed
    assert rec.epochs_run == 10


def test_a_cancelled_job_is_interrupted_and_a_rerun_trains_only_what_is_missing(slurm, tmp_path):
    slow = ["+callbacks.slow._target_=rendezvous.SlowEpochs", "+callbacks.slow.seconds=2"]
    args = [*TINY, "trainer.max_epochs=8", *slow, "hydra.launcher.array_parallelism=1", "seed=0,1"]
    proc = _sweep(slurm, tmp_path, args, wait=False)
    _wait_epoch(tmp_path, 1)
    running = _job_id(slurm)
    slurm.run("scancel", running)
    proc.communicate(timeout=480)
    recs = _records(tmp_path)
    states = sorted(r.status for r in recs.values())
    assert "interrupted" in states, states
    done_before = {k for k, r in recs.items() if r.status == "done"}
    again = _sweep(slurm, tmp_path, args)
    recs = _records(tmp_path)
    assert all(r.status == "done" for r in recs.values()) and len(recs) == 2, again.stdout[-2000:]
    for k in done_before:  # finished runs were skipped, not trained again
        assert recs[k].attempt == 1
    assert "skipped" in again.stdout + again.stderr


def test_ddp_under_srun_two_tasks_one_record_whole_test_split(slurm, tmp_path):
    from bench.metrics import classification_metrics
    from bench.stats import read_predictions

    ddp = [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.precision=32-true", "hydra.launcher.tasks_per_node=2", "trainer.max_epochs=2",
    ]  # fmt: skip
    proc = _sweep(slurm, tmp_path, [*TINY, *ddp])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (rec,) = _records(tmp_path).values()  # one record, written by rank 0
    assert rec.status == "done" and rec.split_sizes["test"] == 32
    _, y, s = read_predictions(rec.dir / "predictions_test.csv")
    assert len(y) == 32  # the whole test split, not one rank's half
    whole = classification_metrics(y, s, rec.task)
    assert abs(whole["auc"] - rec.test["auc"]) < 1e-6 and abs(whole["acc"] - rec.test["acc"]) < 1e-6


def test_a_failing_task_records_its_error_and_the_others_finish(slurm, tmp_path):
    bad = "trainer.gradient_clip_val=null,abc"  # the second task fails inside its job
    proc = _sweep(slurm, tmp_path, [*TINY, "trainer.max_epochs=1", bad])
    recs = list(_records(tmp_path).values())
    done = [r for r in recs if r.status == "done"]
    failed = [r for r in recs if r.status == "failed"]
    assert len(done) == 1 and len(failed) == 1, [(r.status, r.error) for r in recs]
    assert "\n" not in failed[0].error and "gradient_clip_val" in failed[0].error
    assert proc.returncode == 1  # the number of failed jobs
