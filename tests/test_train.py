import json

import pandas as pd
import pytest
import torch

from bench.board import build_board
from bench.cli import config_groups
from bench.errors import UnknownOptionError
from bench.job.entry import train
from bench.job.instantiate import compose_train
from bench.records import RunRecord, RunStore, load_record

from conftest import CONF, FAST, PNEUMONIA, needs_pneumonia, run_cli


def run(cfg) -> RunRecord:
    """Train ``cfg``; the record the run wrote (or the one it skipped to)."""
    outcome = train(cfg)
    assert outcome.record_path, outcome
    rec = load_record(outcome.record_path)
    rec.outcome = outcome.status
    return rec


RECORD_FIELDS = {
    "schema_version",
    "run_id",
    "status",
    "error",
    "created_at",
    "finished_at",
    "dataset",
    "model",
    "scheme",
    "seed",
    "epochs",
    "config",
    "env",
    "spec",
    "cost",
    "val",
    "test",
    "best_epoch",
}


def _targets(node, path=""):
    """Every (dotted path, _target_) in a config container (unresolved)."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node["_target_"]
        for k, v in node.items():
            yield from _targets(v, f"{path}.{k}" if path else str(k))


def check_targets(cfg, group: str) -> None:
    """Import every _target_ (a typo fails here); build what is cheap to build; check that a
    model config's options are exactly ones its builder takes."""
    from hydra.utils import get_method, instantiate
    from omegaconf import OmegaConf

    from bench.models.registry import check_options, get_entry

    if group.startswith("hydra"):
        scope = {
            k: OmegaConf.to_container(cfg.hydra[k], resolve=False)
            for k in ("launcher", "sweeper", "callbacks")
        }
    else:
        scope = OmegaConf.to_container(cfg, resolve=False)
        scope.pop("hydra", None)
    for _path, target in _targets(scope):
        if "${" in str(target):
            continue
        get_method(target)  # ImportError / AttributeError on a bad _target_
    if group == "model":
        options = OmegaConf.to_container(cfg.model, resolve=True)
        for key in ("_target_", "name", "weights", "freeze", "num_classes"):
            options.pop(key, None)
        check_options(get_entry(cfg.model.name), options)
    if group == "data":
        data = cfg.data.copy()
        for key in OmegaConf.missing_keys(data):  # mandatory paths (data.root=...)
            OmegaConf.update(data, key.removeprefix("data."), "/nonexistent")
        instantiate(data)  # constructors validate values; no data is read
    if group == "callbacks":
        for c in (cfg.get("callbacks") or {}).values():
            instantiate(c)


def test_every_config_group_option_composes_and_its_targets_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDBENCH_DATA_DIR", str(tmp_path))
    groups = config_groups(CONF)
    checked = 0
    default = compose_train()
    assert default.data.name == "synthetic" and default.model.name == "resnet50"
    for group, options in groups.items():
        if group in ("local",):
            continue
        for opt in options:
            prefix = "+" if group in ("combo",) else ""
            check_targets(compose_train([f"{prefix}{group}={opt}"], keep_hydra=True), group)
            checked += 1
    assert checked > 60


def test_composition_check_fails_on_a_bad_target(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "broken.yaml").write_text("_target_: bench.models.build_modle\nname: bccnn\n")
    (conf / "model" / "typo.yaml").write_text(
        "_target_: bench.models.build_model\nname: bccnn\nwidht: 8\n"
    )
    for name, exc in (("broken", ImportError), ("typo", UnknownOptionError)):
        cfg = compose_train([f"model={name}"], config_dir=str(conf), keep_hydra=True)
        with pytest.raises(exc):
            check_targets(cfg, "model")


def test_seed_zero_really_seeds(make_cfg):
    cfg = make_cfg(["model=bccnn", "seed=0", *FAST])
    assert cfg.seed == 0 and cfg.data.seed == 0


def test_fast_train_writes_record_and_leaderboard_reads_it(make_cfg, tmp_path):
    cfg = make_cfg(["model=bccnn", "model.batch_norm=true", *FAST, "trainer.max_epochs=2"])
    record = run(cfg)
    assert record.status == "done", record.error
    store = RunStore(cfg.paths.runs_dir)
    on_disk = json.loads(store.record_path(record.run_id).read_text())
    assert RECORD_FIELDS <= set(on_disk)
    assert on_disk["schema_version"] == 2 and on_disk["config_id"] == record.config_id
    assert on_disk["test"]["auc"] == record.test["auc"]
    assert on_disk["cost"]["params_total"] > 0 and on_disk["cost"]["gmacs"] > 0
    assert on_disk["env"]["torch"] and on_disk["spec"]["num_classes"] == 3
    # per-class rows, specificity and MCC, last-epoch metrics, calibration after scaling
    assert [r["class"] for r in on_disk["per_class"]["test"]] == ["normal", "blob", "ring"]
    assert {"specificity", "mcc", "aurc", "ece_ts"} <= set(on_disk["test"])
    assert (
        on_disk["test_last"]["auc"] > 0 and on_disk["evaluations"]["calibration"]["temperature"] > 0
    )
    run_dir = store.run_dir(record.run_id)
    assert (run_dir / "predictions_test.csv").exists() and (run_dir / "history.csv").exists()
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.epoch) == [0, 1] and (history.epoch_time_s > 0).all()
    # the steady epoch time is the second epoch's (the first pays warm-up), within the fit time
    assert on_disk["cost"]["epoch_time_s"] == pytest.approx(history.epoch_time_s[1], abs=1e-3)
    assert history.epoch_time_s.sum() <= on_disk["cost"]["train_time_s"]
    assert list(history.lr) == [0.001, 0.0001]  # the LR each epoch trained with
    assert (run_dir / "checkpoints" / "best.ckpt").exists()
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    board = build_board(cfg.paths.runs_dir, n_boot=50)
    assert board.problems == [] and len(board.table) == 1
    assert board.table.loc[0, "test_auc_mean"] == pytest.approx(record.test["auc"])
    # the same config again is recognised as done and skipped
    again = train(cfg)
    assert again.status == "skipped"


def test_fast_dev_run_and_force(make_cfg):
    cfg = make_cfg(["model=bccnn", *FAST, "+trainer.fast_dev_run=true"])
    assert train(cfg).status == "done"
    cfg = make_cfg(["model=bccnn", *FAST, "+trainer.fast_dev_run=true", "+force=true"])
    rec = run(cfg)
    assert rec.status == "done" and rec.attempt == 2  # reran instead of skipping


def test_run_id_ignores_paths_and_logging(make_cfg):
    from omegaconf import OmegaConf

    from bench.records import compute_run_id

    a = make_cfg(["model=bccnn", *FAST])
    b = make_cfg(["model=bccnn", *FAST, "logger=csv", "data.num_workers=2"])
    c = make_cfg(["model=bccnn", *FAST, "seed=1"])
    ids = [compute_run_id(OmegaConf.to_container(x, resolve=True)) for x in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.slow
def test_3d_unet_learns_synthetic_volumes(make_cfg):
    cfg = make_cfg(
        ["data=synthetic_seg3d", "data.size=24", "data.n_train=64", "data.n_val=16"]
        + ["data.n_test=16", "model=unet", "model.depth=2", "model.base_width=8", "logger=none"]
        + ["trainer.enable_progress_bar=false", "trainer.max_epochs=5", "task.optimizer.lr=0.003"]
    )
    record = run(cfg)
    assert record.status == "done", record.error
    assert record.spec["input_size"] == [24, 24, 24]
    # predicting background everywhere scores 0; 5 epochs find the blobs (0.61 when written)
    assert record.test["dice_blob"] > 0.3 and record.test["dice"] > 0.15
    assert 0 < record.test["dice_pooled"] <= 1


def test_progress_bar_refresh_and_a_users_own_bar(make_cfg):
    on = [*FAST, "trainer.enable_progress_bar=true", "progress_refresh_steps=3"]
    cfg = make_cfg(["model=bccnn", *on])
    assert train(cfg).status == "done"
    # a bar from the callbacks group replaces ours (Lightning refuses two bars)
    own = ["+callbacks.bar._target_=lightning.pytorch.callbacks.TQDMProgressBar"]
    own.append("+callbacks.bar.refresh_rate=7")
    cfg = make_cfg(["model=bccnn", *on, *own, "seed=5"])
    assert run(cfg).status == "done"


def test_finite_guard_defers_the_read_but_reports_the_first_bad_step():
    from bench.errors import NonFiniteLossError
    from bench.tasks.base import FiniteLossGuard

    guard = FiniteLossGuard(check_every=5, defer=True)  # as on a GPU: no read per step
    for step, loss in enumerate([1.0, 0.5, 0.4, float("nan")]):
        guard.update(torch.tensor(loss), step)  # steps 0-3: not read yet, no error
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3"):
        guard.update(torch.tensor(0.2), 4)  # the 5th step reads the flag
    eager = FiniteLossGuard(defer=False)  # as on the CPU: read at once
    eager.update(torch.tensor(1.0), 0)
    with pytest.raises(NonFiniteLossError, match="step 1"):
        eager.update(torch.tensor(float("inf")), 1)
    end = FiniteLossGuard(check_every=50, defer=True)
    end.update(torch.tensor(float("nan")), 7)
    with pytest.raises(NonFiniteLossError, match="step 7"):
        end.check()  # the epoch-end read catches what the interval did not


def test_nonfinite_loss_fails_the_run_with_the_step(make_cfg):
    cfg = make_cfg(["model=bccnn", *FAST, "task.optimizer.lr=1e6", "trainer.max_epochs=3"])
    record = run(cfg)
    assert record.status == "failed"
    assert "non-finite loss at step" in record.error


def test_missing_npz_is_a_one_line_error(tmp_path):
    proc = run_cli(
        ["bench-train", "data=breastmnist", "data.download=false", "logger=none"], tmp_path
    )
    assert proc.returncode == 2  # a user mistake (docs/troubleshooting.md)
    err = proc.stderr.strip().splitlines()[-1]
    assert proc.stderr.count("DatasetNotFoundError") == 1  # said once
    assert "DatasetNotFoundError: breastmnist.npz not found in" in err and "copy the file" in err
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@needs_pneumonia()
def test_real_pneumoniamnist_training_beats_chance(make_cfg):
    cfg = make_cfg(
        [
            "data=pneumoniamnist",
            f"data.root={PNEUMONIA.parent}",
            "data.download=false",
            "model=bccnn",
            "model.batch_norm=true",
            "logger=none",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
        ]
    )
    record = run(cfg)
    assert record.status == "done", record.error
    assert record.test["auc"] > 0.85, record.test
    assert record.spec["name"] == "pneumoniamnist"
    preds = RunStore(cfg.paths.runs_dir).run_dir(record.run_id) / "predictions_test.csv"
    assert sum(1 for _ in preds.open()) == 624 + 1
    assert json.loads((preds.parent / "record.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_record(tmp_path):
    proc = run_cli(
        [
            "bench-train",
            "model=bccnn",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "data.n_train=128",
            "data.n_val=64",
            "data.n_test=64",
            "logger=none",
        ],
        tmp_path,
        check=True,
    )
    recs = list((tmp_path / "runs").glob("*/record.json"))
    assert len(recs) == 1, proc.stderr[-2000:]
    rec = json.loads(recs[0].read_text())
    assert rec["status"] == "done"
    # validation/test predictions were gathered from both ranks: every sample once
    preds = (recs[0].parent / "predictions_test.csv").read_text().splitlines()
    assert len(preds) == 64 + 1


def test_an_interrupted_run_under_an_older_run_id_is_resumed_not_restarted(make_cfg):
    import shutil

    cfg = make_cfg(
        [
            "model=bccnn",
            *FAST,
            "trainer.max_epochs=2",
            "checkpoint.every_minutes=0",
            "checkpoint.keep=all",
        ]
    )
    first = run(cfg)
    store = RunStore(cfg.paths.runs_dir)
    # as if the run-id rules had changed while it was interrupted
    old = store.run_dir("synthetic_28_bccnn-s0-olderid000")
    shutil.move(first.dir, old)
    rec = load_record(old)
    rec.run_id, rec.status = old.name, "interrupted"
    store.write(rec)
    again = run(cfg)
    assert again.run_id == old.name and again.status == "done"
    assert again.resumed_from.endswith("last.ckpt") and again.attempt == 2


def test_a_run_finished_under_an_older_run_id_is_skipped_not_retrained(make_cfg):
    import shutil

    cfg = make_cfg(["model=bccnn", *FAST, "trainer.max_epochs=1"])
    first = run(cfg)
    store = RunStore(cfg.paths.runs_dir)
    old = store.run_dir("synthetic_28_bccnn-s0-olderid000")  # as if the run-id rules changed
    shutil.move(first.dir, old)
    rec = load_record(old)
    rec.run_id = old.name
    store.write(rec)
    again = run(cfg)
    assert again.outcome == "skipped" and again.run_id == old.name
    assert [r.run_id for r in store.iter_records()[0]] == [old.name]  # nothing trained again
