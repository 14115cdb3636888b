"""One run lifecycle for the single and the packed path (bench/job/lifecycle.py).

The packed path once lacked what the single path had: the out-of-memory message, the pruned
status, the cause's exit code, the reset Ctrl-C handler, the per-epoch reseed, the progress-bar
check and the Optuna pruning callback. Each is asserted here on both paths.
"""

from __future__ import annotations

import signal

import pytest
import torch

import bench.job.packed as packed_mod
import bench.job.run as run_mod
from bench.callbacks import EpochSeed, epoch_seed
from bench.console import EpochLines
from bench.errors import NonFiniteLossError, Terminated
from bench.job.lifecycle import checked, ending_of
from bench.records import RunStore
from bench.search import OptunaPruning

from conftest import FAST


class TrialPruned(Exception):
    """Named as Optuna's: the lifecycle recognises it by name (optuna stays optional there)."""


def test_endings_are_classified_once_for_every_path():
    oom = ending_of(RuntimeError("wrapper").with_traceback(None))
    assert (oom.status, oom.exit_code) == ("failed", 1) and oom.traceback
    cases = {
        "oom": ending_of(torch.cuda.OutOfMemoryError("CUDA out of memory")),
        "user": ending_of(NonFiniteLossError("non-finite loss at step 3")),
        "pruned": ending_of(TrialPruned("trial 4 pruned at epoch 2")),
        "sigterm": ending_of(Terminated("terminated by SIGTERM")),
        "ctrl_c": ending_of(KeyboardInterrupt()),
    }
    assert cases["oom"].status == "failed" and "lower data.batch_size" in cases["oom"].error
    assert cases["oom"].traceback is None
    assert (cases["user"].status, cases["user"].exit_code) == ("failed", 2)
    assert cases["user"].error == "NonFiniteLossError: non-finite loss at step 3"
    assert cases["pruned"].status == "pruned"
    assert cases["sigterm"].interrupted and "rerun the same command" in cases["sigterm"].error
    assert cases["ctrl_c"].interrupted and "Ctrl-C" in cases["ctrl_c"].error


PACK = [*FAST, "model=bccnn", "model.width=4", "data.n_train=32", "seed=0"]


def _fail_fit(monkeypatch, error: BaseException) -> None:
    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(packed_mod, "fit_module", boom)
    monkeypatch.setattr(run_mod, "execute", boom)


@pytest.mark.parametrize("packed", [False, True], ids=["single", "packed"])
def test_out_of_memory_and_user_errors_read_the_same_on_both_paths(make_cfg, monkeypatch, packed):
    overrides = [*PACK, f"execution.pack_seeds={2 if packed else 1}"]
    from bench.job.entry import train

    _fail_fit(monkeypatch, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried 2 GiB"))
    cfg = make_cfg(overrides)
    outcome = train(cfg)
    records = RunStore(cfg.paths.runs_dir).iter_records()[0]
    assert len(records) == (2 if packed else 1)
    for r in records:
        assert r.status == "failed"
        assert r.error.startswith("out of memory: OutOfMemoryError: CUDA out of memory")
        assert r.error.endswith("lower data.batch_size")
    assert outcome.exit_code == 1

    _fail_fit(monkeypatch, NonFiniteLossError("non-finite loss at step 0; lower task.optimizer.lr"))
    cfg = make_cfg([*overrides, "+force=true"])
    outcome = train(cfg)
    assert outcome.status == "failed" and outcome.exit_code == 2  # the cause's, not always 1
    assert all(r.attempt == 2 for r in RunStore(cfg.paths.runs_dir).iter_records()[0])


@pytest.mark.parametrize("packed", [False, True], ids=["single", "packed"])
def test_pruned_trial_is_no_failure_on_both_paths(make_cfg, monkeypatch, packed):
    from bench.job.entry import train

    _fail_fit(monkeypatch, TrialPruned("trial 0 pruned at epoch 1"))
    cfg = make_cfg([*PACK, f"execution.pack_seeds={2 if packed else 1}"])
    outcome = train(cfg)
    assert outcome.status == "pruned" and outcome.exit_code is None
    assert {r.status for r in RunStore(cfg.paths.runs_dir).iter_records()[0]} == {"pruned"}


@pytest.mark.parametrize("packed", [False, True], ids=["single", "packed"])
def test_interrupt_records_every_member_and_restores_the_ctrl_c_handler(
    make_cfg, monkeypatch, packed
):
    from bench.job.entry import train

    _fail_fit(monkeypatch, KeyboardInterrupt())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as Lightning's graceful handler leaves it
    cfg = make_cfg([*PACK, f"execution.pack_seeds={2 if packed else 1}"])
    try:
        with pytest.raises(SystemExit) as stop:
            train(cfg)
        assert stop.value.code == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    records = RunStore(cfg.paths.runs_dir).iter_records()[0]
    assert len(records) == (2 if packed else 1)
    assert {r.status for r in records} == {"interrupted"}
    assert all("rerun the same command to resume" in r.error for r in records)


def test_packed_trainer_has_the_callbacks_of_a_single_fit(make_cfg, tmp_path):
    """The per-epoch reseed, the progress-bar choice and an Optuna trial's pruning come from one
    builder; the pack adds only its timer and its per-member resume checkpoints."""
    import optuna

    from bench.job.build import build_job
    from bench.job.lifecycle import run_context
    from bench.tasks.packed import PackedTask

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=storage, study_name="s", direction="maximize").ask()
    cfg = make_cfg(
        [
            *PACK,
            "+hparams_search.trial_number=0",
            f"+hparams_search.storage='{storage}'",
            "+hparams_search.study_name=s",
        ]
    )
    members = []
    store = RunStore(cfg.paths.runs_dir)
    for seed in (0, 1):
        c = packed_mod.member_config(cfg, seed)
        cfg_dict, dm = checked(c)
        m = packed_mod._Member(c, cfg_dict, dm, store)
        m.job = build_job(c, m.run_dir, run_context(m.run_id)[0], dm)
        members.append(m)
    task = PackedTask([m.job.task for m in members], [m.datamodule for m in members], [0, 1])
    trainer, _ = packed_mod._packed_trainer(cfg, task, members)
    single = members[0].job.trainer
    kinds = lambda t: [type(c) for c in t.callbacks]  # noqa: E731
    for kind in (EpochSeed, EpochLines, OptunaPruning):
        assert kind in kinds(trainer) and kind in kinds(single)
    seeds = [c.seed for c in trainer.callbacks if isinstance(c, EpochSeed)]
    assert seeds == [0]  # dropout of the pack draws from the first seed's epoch stream
    assert epoch_seed(0, 3) == 3 and epoch_seed(2, 1) == 2 * 1_000_003 + 1
