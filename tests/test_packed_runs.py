"""``execution.pack_seeds``: K seeds of one configuration trained as one packed network through
the harness, K ordinary records out.

Exactness is checked in float64 (``trainer.precision=64-true``, no dropout): after training,
each member's weights (BatchNorm running statistics included) equal those of the unpacked run of
its seed, which has the same initialisation, data order and augmentation draws."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from bench.api import leaderboard
from bench.job.entry import train
from bench.records import RunStore, load_record
from bench.tasks.packed import PackedTask

from conftest import FAST, run_cli

EXACT = [
    "trainer.precision=64-true",
    "trainer.max_epochs=2",
    "checkpoint.every_minutes=0",
    "checkpoint.keep=all",
    "threads=1",
]
CASES = {
    "bccnn": ["model=bccnn", "model.dropout=0.0", "model.width=8", "data.augment=light"],
    "resnet18_28": ["model=paper_resnet18", "data.n_train=16", "data.n_val=12", "data.n_test=12"],
    "cnn3d": [
        "data=synthetic3d",
        "model=cnn3d",
        "model.dropout=0.0",
        "model.width=4",
        "data.n_train=24",
        "data.n_val=12",
        "data.n_test=12",
        "data.batch_size=8",
    ],
}


def _store(cfg, name: str, tmp_path: Path):
    with open_dict(cfg):
        cfg.paths.runs_dir = str(tmp_path / name)
    return cfg


def _records(runs_dir: Path) -> dict[int, dict]:
    return {
        r.seed: r
        for r in RunStore(runs_dir).iter_records()[0]
        if r.status in ("done", "interrupted", "running", "failed")
    }


def _state(run_dir: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=False)[
        "state_dict"
    ]


def _assert_close_states(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key].double(), b[key].double()
        scale = max(float(y.abs().max()), 1e-12)
        assert float((x - y).abs().max()) / scale <= rtol, key


@pytest.mark.parametrize("case", list(CASES))
def test_each_member_equals_the_unpacked_run_of_its_seed(make_cfg, tmp_path, case):
    overrides = [*FAST, *EXACT, *CASES[case]]
    separate = tmp_path / "separate"
    for seed in (0, 1):
        cfg = _store(make_cfg([*overrides, f"seed={seed}"]), "separate", tmp_path)
        assert train(cfg).status == "done"
    cfg = _store(make_cfg([*overrides, "seed=0", "execution.pack_seeds=2"]), "packed", tmp_path)
    assert train(cfg).status == "done"
    alone, packed = _records(separate), _records(tmp_path / "packed")
    assert sorted(packed) == [0, 1]
    for seed in (0, 1):
        a, p = alone[seed], packed[seed]
        # packing is an execution detail: same run id, same record fields, the pack in env
        assert p.run_id == a.run_id and p.config_id == a.config_id
        assert p.env.packed == {"k": 2, "seeds": [0, 1], "implementation": "torch.func.vmap"}
        assert a.env.packed is None
        assert set(vars(p)) == set(vars(a)) and p.test.keys() == a.test.keys()
        assert p.best_epoch == a.best_epoch and p.epochs_run == a.epochs_run == 2
        for name in ("last.ckpt", "best.ckpt"):
            _assert_close_states(_state(p.dir, name), _state(a.dir, name), rtol=1e-5)
        assert p.test["auc"] == pytest.approx(a.test["auc"], abs=1e-6)
        assert len(list(p.dir.glob("history.csv"))) == 1
        lines = (p.dir / "predictions_test.csv").read_text().count("\n")
        assert lines == (a.dir / "predictions_test.csv").read_text().count("\n") > 10
    running = [k for k in _state(packed[0].dir) if "running_mean" in k]
    if case != "bccnn":  # BatchNorm statistics per member: equal to their own run, not shared
        assert running
        k = running[0]
        assert not torch.equal(_state(packed[0].dir)[k], _state(packed[1].dir)[k])


def test_a_pack_is_pooled_as_seeds_of_one_leaderboard_row(make_cfg, tmp_path):
    cfg = make_cfg([*FAST, "model=bccnn", "model.width=8", "execution.pack_seeds=3"])
    assert train(cfg).status == "done"
    board = leaderboard(cfg.paths.runs_dir, full=True)
    assert len(board) == 1 and int(board["n_runs"].iloc[0]) == 3
    assert int(board["n_seeds"].iloc[0]) == 3


def test_a_killed_pack_resumes_every_member_to_the_uninterrupted_weights(
    make_cfg, tmp_path, monkeypatch
):
    overrides = [
        *FAST,
        "model=bccnn",
        "model.width=8",
        "model.dropout=0.0",
        "trainer.max_epochs=3",
        "checkpoint.every_minutes=0",
        "checkpoint.keep=all",
        "execution.pack_seeds=2",
        "threads=1",
    ]
    assert train(_store(make_cfg(overrides), "whole", tmp_path)).status == "done"

    start = PackedTask.on_train_epoch_start

    def killed_at_epoch_2(self):
        if self.current_epoch == 2:
            raise KeyboardInterrupt
        start(self)

    monkeypatch.setattr(PackedTask, "on_train_epoch_start", killed_at_epoch_2)
    with pytest.raises(SystemExit):
        train(_store(make_cfg(overrides), "killed", tmp_path))
    cut = _records(tmp_path / "killed")
    assert {r.status for r in cut.values()} == {"interrupted"}
    for r in cut.values():  # each member's own, ordinary resume checkpoint, at epoch 2
        ck = torch.load(r.dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ck["epoch"] == 1 and all(k.startswith("model.") for k in ck["state_dict"])
    monkeypatch.setattr(PackedTask, "on_train_epoch_start", start)
    assert train(_store(make_cfg(overrides), "killed", tmp_path)).status == "done"
    whole, resumed = _records(tmp_path / "whole"), _records(tmp_path / "killed")
    for seed in (0, 1):
        r = resumed[seed]
        assert r.status == "done" and r.resumed_from.endswith("last.ckpt") and r.attempt == 2
        assert r.test == whole[seed].test
        for name in ("last.ckpt", "best.ckpt"):
            a, b = _state(whole[seed].dir, name), _state(r.dir, name)
            assert all(torch.equal(a[k], b[k]) for k in a), name
        hist = (r.dir / "history.csv").read_text().splitlines()
        assert len(hist) == 4  # header + 3 epochs: the curve before the kill travelled along


def test_a_killed_pack_member_resumes_unpacked_from_its_own_checkpoint(
    make_cfg, tmp_path, monkeypatch
):
    overrides = [*FAST, "model=bccnn", "model.width=8", "trainer.max_epochs=2",
                 "checkpoint.every_minutes=0", "threads=1"]  # fmt: skip
    start = PackedTask.on_train_epoch_start

    def killed_at_epoch_1(self):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        start(self)

    monkeypatch.setattr(PackedTask, "on_train_epoch_start", killed_at_epoch_1)
    with pytest.raises(SystemExit):
        train(make_cfg([*overrides, "execution.pack_seeds=2"]))
    monkeypatch.setattr(PackedTask, "on_train_epoch_start", start)
    outcome = train(make_cfg([*overrides, "seed=1"]))  # seed 1 alone, not packed
    rec = load_record(outcome.record_path)
    assert rec.status == "done" and rec.resumed_from.endswith("last.ckpt")
    assert rec.epochs_run == 2 and rec.env.packed is None


def test_a_pack_skips_done_seeds_and_trains_a_lone_rest_unpacked(make_cfg, tmp_path):
    base = [*FAST, "model=bccnn", "model.width=8"]
    assert train(make_cfg([*base, "seed=0"])).status == "done"
    outcome = train(make_cfg([*base, "seed=0", "execution.pack_seeds=2"]))
    assert outcome.status == "skipped"
    recs = _records(Path(make_cfg(base).paths.runs_dir))
    assert sorted(recs) == [0, 1] and recs[1].status == "done" and recs[1].env.packed is None


def test_an_unpackable_configuration_trains_one_at_a_time_and_says_why(make_cfg, caplog):
    cfg = make_cfg([*FAST, "model=bccnn", "model.width=8", "trainer.gradient_clip_val=1.0",
                    "execution.pack_seeds=2"])  # fmt: skip
    with caplog.at_level("INFO", logger="bench.train"):
        assert train(cfg).status == "done"
    said = [r.getMessage() for r in caplog.records if "one at a time" in r.getMessage()]
    assert said == [
        "execution.pack_seeds=2: seeds [0, 1] train one at a time: gradient clipping by norm "
        "would mix the members' gradients"
    ]
    recs = _records(Path(cfg.paths.runs_dir))
    assert sorted(recs) == [0, 1] and all(r.env.packed is None for r in recs.values())


def test_overlapping_packs_in_a_seed_sweep_are_refused_in_one_line(tmp_path):
    proc = run_cli(
        ["bench-train", "-m", *FAST, "model=bccnn", "seed=0,1", "execution.pack_seeds=2"],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert err == [
        "error: ConfigError: seed=0,1 with execution.pack_seeds=2: each job trains seeds s..s+1, "
        "so packs overlap; sweep the first seed of each pack (seed=0)"
    ], proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/record.json"))


def test_a_packed_sweep_counts_every_member(tmp_path):
    proc = run_cli(
        [
            "bench-train",
            "-m",
            *FAST,
            "model=bccnn",
            "model.width=8",
            "seed=0,2",
            "execution.pack_seeds=2",
        ],  # fmt: skip
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep finished: 4 jobs, 4 done, 0 failed" in proc.stdout + proc.stderr
    recs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/record.json")]
    assert sorted(r["seed"] for r in recs) == [0, 1, 2, 3]
    assert sorted(tuple(r["env"]["packed"]["seeds"]) for r in recs) == [(0, 1)] * 2 + [(2, 3)] * 2


@pytest.mark.parametrize(
    "model",
    [
        ["model=mobilenet"],
        ["data=synthetic3d", "data.size=16", "model=resnet18_3d", "data.n_train=16",
         "data.n_val=8", "data.n_test=8", "data.batch_size=8"],
    ],
    ids=["mobilenetv2", "resnet18_3d"],
)  # fmt: skip
def test_the_card_and_paper_networks_pack_with_their_own_batchnorm(make_cfg, model):
    """MobileNetV2 (timm's BatchNormAct2d) and the paper's 3D ResNet train packed: K records,
    each member with BatchNorm statistics of its own."""
    cfg = make_cfg([*FAST, *model, "execution.pack_seeds=2", "checkpoint.keep=all"])
    assert train(cfg).status == "done"
    recs = _records(Path(cfg.paths.runs_dir))
    assert sorted(recs) == [0, 1] and all(r.env.packed["k"] == 2 for r in recs.values())
    a, b = (_state(recs[s].dir, "best.ckpt") for s in (0, 1))
    stats = [k for k in a if k.endswith("running_mean")]
    assert stats and not torch.equal(a[stats[-1]], b[stats[-1]])


@pytest.mark.parametrize(
    "override, said",
    [
        ("execution.pack_seeds=0", "execution.pack_seeds must be a whole number >= 1, got 0"),
        ("seed=null", "execution.pack_seeds needs seed=N (the first seed of the pack)"),
    ],
)
def test_a_bad_pack_is_one_line_and_nothing_runs(tmp_path, override, said):
    extra = [] if override.startswith("execution") else ["execution.pack_seeds=2"]
    proc = run_cli(["bench-train", *FAST, "model=bccnn", override, *extra], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"error: ConfigError: {said}"]
    assert not list((tmp_path / "runs").glob("*/record.json"))


def test_a_frozen_backbone_trains_one_at_a_time_and_says_why(make_cfg, caplog):
    cfg = make_cfg([*FAST, "model=bccnn", "model.width=8", "model.freeze=backbone",
                    "execution.pack_seeds=2"])  # fmt: skip
    with caplog.at_level("INFO", logger="bench.train"):
        assert train(cfg).status == "done"
    said = [r.getMessage() for r in caplog.records if "one at a time" in r.getMessage()]
    assert said == [
        "seeds [0, 1] train one at a time: a frozen backbone (parameters without gradients) "
        "is not packable"
    ]
    recs = _records(Path(cfg.paths.runs_dir))
    assert sorted(recs) == [0, 1] and all(r.env.packed is None for r in recs.values())


def test_a_corrupt_member_checkpoint_sends_the_pack_one_at_a_time(make_cfg, monkeypatch):
    overrides = [*FAST, "model=bccnn", "model.width=8", "trainer.max_epochs=2",
                 "checkpoint.every_minutes=0", "execution.pack_seeds=2"]  # fmt: skip
    start = PackedTask.on_train_epoch_start

    def killed_at_epoch_1(self):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        start(self)

    monkeypatch.setattr(PackedTask, "on_train_epoch_start", killed_at_epoch_1)
    with pytest.raises(SystemExit):
        train(make_cfg(overrides))
    monkeypatch.setattr(PackedTask, "on_train_epoch_start", start)
    recs = _records(Path(make_cfg(overrides).paths.runs_dir))
    last = recs[1].dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk
    assert train(make_cfg(overrides)).status == "done"
    recs = _records(Path(make_cfg(overrides).paths.runs_dir))
    assert recs[0].resumed_from.endswith("last.ckpt") and recs[1].resumed_from is None
    assert list((recs[1].dir / "checkpoints").glob("last.ckpt.corrupt-*"))
    assert {r.status for r in recs.values()} == {"done"}
