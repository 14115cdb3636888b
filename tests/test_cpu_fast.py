"""``trainer=cpu_fast``: per architecture the precision and memory layout the CPU roofline
measured fastest, bf16 only on a CPU that has it, resolved into the run's config and id."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

import pandas as pd
import pytest
import torch

import bench.job.cpu_fast as cpu_fast
import bench.speed.roofline as roofline
from bench.hardware import cpu_bf16_native
from bench.job.instantiate import compose_train
from bench.records import Cost, RunRecord, RunStore, compute_config_id, load_record
from bench.speed.cpu_page import cpu_page, fp32_layout_readings
from bench.speed.parity import parity_table

from conftest import FAST, ROOT, run_cli, train_run

ROOFLINE = ROOT / "results" / "speed" / "cpu_roofline.csv"


def _resolved(overrides, bf16: bool, monkeypatch, capability: str = "AVX512"):
    monkeypatch.setattr(cpu_fast, "cpu_bf16_native", lambda: bf16)
    monkeypatch.setattr(cpu_fast, "cpu_capability", lambda: capability)
    cfg = compose_train(["trainer=cpu_fast", *overrides])
    cpu_fast.resolve_auto_settings(cfg)
    return cfg


def _setting(cfg) -> tuple[str, bool]:
    return cfg.trainer.precision, cfg.task.channels_last


def test_bf16_is_chosen_where_the_cpu_has_it_and_never_elsewhere(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="bench.train")
    cfg = _resolved(["model=paper_resnet18"], True, monkeypatch)
    assert _setting(cfg) == ("bf16-mixed", True)
    assert "trainer=cpu_fast: bf16-mixed with channels-last" in caplog.text
    cfg = _resolved(["model=paper_resnet18"], False, monkeypatch)
    assert _setting(cfg) == ("32-true", True)
    assert "no native bf16" in caplog.text
    # without bf16 the 3D ResNet takes its fastest fp32 layout, not its bf16 one (NCDHW)
    assert _setting(_resolved(["model=resnet18_3d"], True, monkeypatch)) == ("bf16-mixed", False)
    assert _setting(_resolved(["model=resnet18_3d"], False, monkeypatch)) == ("32-true", True)
    # a depthwise network gains from the layout only: fp32 even where bf16 exists
    assert _setting(_resolved(["model=mobilenet"], True, monkeypatch)) == ("32-true", True)
    # a model the roofline did not measure gets the table's default
    cfg = _resolved(["model=vgg16"], True, monkeypatch)
    assert cfg.trainer.precision == cfg.execution.cpu_fast.AVX512.default.precision


def test_each_cpu_capability_gets_its_own_roofline_and_an_unmeasured_one_the_baseline(
    monkeypatch, caplog
):
    """On AVX2 channels-last slows MobileNetV2 (its roofline), on AVX512 it is its best
    setting; a capability no roofline measured trains fp32 NCHW and the log says why."""
    caplog.set_level(logging.INFO, logger="bench.train")
    assert _setting(_resolved(["model=mobilenet"], False, monkeypatch, "AVX2")) == (
        "32-true",
        False,
    )
    assert _setting(_resolved(["model=bccnn"], False, monkeypatch, "AVX2")) == ("32-true", True)
    assert "the AVX2 roofline's choice for bccnn" in caplog.text
    cfg = _resolved(["model=bccnn"], True, monkeypatch, "SVE256")
    assert _setting(cfg) == ("32-true", False)
    assert "no roofline was measured on a CPU like this one (SVE256)" in caplog.text


def test_the_choice_is_in_the_record_and_the_config_id(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_fast, "cpu_bf16_native", lambda: True)
    monkeypatch.setattr(cpu_fast, "cpu_capability", lambda: "AVX512")
    base = ["model=bccnn", "model.width=4", *FAST]
    fast = train_run(tmp_path, ["trainer=cpu_fast", *base])
    plain = train_run(tmp_path, base)
    assert fast.status == plain.status == "done"
    a, b = load_record(fast.record_path), load_record(plain.record_path)
    assert a.precision == "bf16-mixed" and a.config["task"]["channels_last"] is True
    assert b.precision == "32-true" and b.config["task"]["channels_last"] is False
    assert a.config_id != b.config_id  # never pooled into one leaderboard row
    assert compute_config_id(a.config) == a.config_id


def test_a_setting_left_at_auto_without_the_table_is_a_one_line_error(tmp_path):
    out = train_run(tmp_path, ["model=bccnn", *FAST, "trainer.precision=auto"])
    assert out.status == "failed" and out.exit_code == 2
    assert "execution.cpu_fast" in out.error


@pytest.mark.skipif(not ROOFLINE.exists(), reason="results/speed/cpu_roofline.csv not measured")
def test_the_preset_table_is_the_roofline_measurement():
    """Each model's AVX512 preset is the fastest training setting without compile at 2 threads
    (or within 5 % of it), and its fp32 layout the fastest fp32 one, as
    results/speed/cpu_roofline.csv (a CPU with native bf16) measured."""
    table = pd.read_csv(ROOFLINE)
    table = table[table["error"].isna() & ~table["setting"].str.contains("compile")]
    table = table[table["threads"] == table["threads"].max()]
    preset = compose_train(["trainer=cpu_fast"]).execution.cpu_fast.AVX512
    names = {"resnet18_28": "resnet18_smallstem", "resnet50_28": "resnet50_smallstem",
             "mobilenetv2": "mobilenet"}  # fmt: skip
    for model, rows in table.groupby("model"):
        choice = preset[names.get(model, model)]
        setting = ("bf16" if choice.precision.startswith("bf16") else "fp32") + (
            "_cl" if choice.channels_last else ""
        )
        speed = rows.set_index("setting")["train_samples_per_sec"]
        assert speed[setting] >= 0.95 * speed.max(), (model, setting, speed.to_dict())
        fp32 = "fp32_cl" if choice.get("fp32_channels_last", choice.channels_last) else "fp32"
        assert speed[fp32] >= 0.95 * speed[["fp32", "fp32_cl"]].max(), (model, fp32)


def _parity_record(store, model, seed, precision, auc, acc):
    config = {"model": {"name": model}, "data": {"name": "breastmnist"}, "seed": seed,
              "trainer": {"precision": precision}, "task": {"channels_last": True}}  # fmt: skip
    rec = RunRecord(
        run_id=f"{model}-{precision}-s{seed}",
        status="done",
        config=config,
        dataset="breastmnist",
        model=model,
        seed=seed,
        epochs=100,
        precision=precision,
        test={"auc": auc, "acc": acc},
        cost=Cost(train_time_s=60.0),
    )
    store.write(rec)
    return rec


def test_parity_is_the_difference_of_means_against_the_seed_spread(tmp_path):
    """fp32 AUCs 0.80/0.82/0.84 (std 0.02) vs bf16 0.81/0.83/0.85: Δ +0.01 within 0.02 → parity;
    ACC 0.70/0.70/0.70 vs 0.80/0.80/0.80 (both std 0): Δ +0.10 outside → no parity. A seed
    without its fp32 twin is left out."""
    store = RunStore(tmp_path)
    for seed, (a32, a16) in enumerate([(0.80, 0.81), (0.82, 0.83), (0.84, 0.85)]):
        _parity_record(store, "bccnn", seed, "32-true", a32, 0.70)
        _parity_record(store, "bccnn", seed, "bf16-mixed", a16, 0.80)
    _parity_record(store, "bccnn", 7, "bf16-mixed", 0.10, 0.10)
    table = parity_table(store.iter_records()[0], ["bccnn"], ["breastmnist"])
    row = table.iloc[0]
    assert row["seeds"] == "0;1;2" and row["fast_setting"] == "bf16-mixed channels-last"
    assert row["diff_auc"] == pytest.approx(0.01) and row["seed_spread_auc"] == pytest.approx(0.02)
    assert row["diff_acc"] == pytest.approx(0.10)
    assert row["seed_spread_acc"] == pytest.approx(0, abs=1e-12)
    assert row["parity"] == "no"
    assert row["fp32_train_min"] == pytest.approx(1.0)


def test_a_pair_short_of_its_seeds_is_listed_as_pending_not_dropped(tmp_path):
    """Two seeds under both settings: means over those two, but no verdict yet; a pair with no
    run at all is still a row (pending), and the page names both with the seeds each side has."""
    store = RunStore(tmp_path / "runs")
    for seed in (0, 1):
        _parity_record(store, "bccnn", seed, "32-true", 0.80 + seed / 100, 0.70)
        _parity_record(store, "bccnn", seed, "bf16-mixed", 0.80 + seed / 100, 0.70)
    _parity_record(store, "bccnn", 2, "32-true", 0.82, 0.70)
    table = parity_table(store.iter_records()[0], ["bccnn", "resnet18"], ["breastmnist"])
    rows = table.set_index("model")
    assert rows.loc["bccnn", "parity"] == "pending" and rows.loc["bccnn", "seeds"] == "0;1"
    assert rows.loc["bccnn", "fp32_seeds_done"] == "0;1;2"
    assert rows.loc["bccnn", "fast_seeds_done"] == "0;1"
    assert rows.loc["bccnn", "diff_auc"] == pytest.approx(0.0)
    assert rows.loc["resnet18", "parity"] == "pending" and rows.loc["resnet18", "seeds"] == ""
    assert pd.isna(rows.loc["resnet18", "fp32_auc_mean"])
    out = tmp_path / "speed"
    out.mkdir()
    shutil.copy(ROOT / "results" / "speed" / "cpu_roofline.csv", out / "cpu_roofline.csv")
    table.to_csv(out / "precision_parity.csv", index=False)
    page = cpu_page(out).read_text()
    assert "- breastmnist × bccnn: fp32 seeds done: 0, 1, 2; cpu_fast seeds done: 0, 1" in page
    assert "- breastmnist × resnet18: fp32 seeds done: none; cpu_fast seeds done: none" in page
    assert "Parity holds for 0 of the 2 pairs (0 fail, 2 pending)." in page


def test_the_published_cpu_page_and_parity_csv_are_rebuilt_from_the_committed_runs(tmp_path):
    """precision_parity.csv from the committed run stores, cpu_fast.md from the committed CSVs:
    both equal to what is committed (no figure typed)."""
    speed = ROOT / "results" / "speed"
    committed = pd.read_csv(speed / "precision_parity.csv")
    stores = [
        ROOT / "results" / s / "runs" for s in ("breastmnist", "pneumoniamnist", "speed/parity")
    ]
    records = [r for s in stores if s.is_dir() for r in RunStore(s).iter_records()[0]]
    rebuilt = parity_table(records, ["bccnn", "resnet18"], ["breastmnist", "pneumoniamnist"])
    rebuilt.to_csv(tmp_path / "rebuilt.csv", index=False, float_format="%.6g")
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "rebuilt.csv"), committed, check_dtype=False, rtol=1e-5
    )
    for name in ("cpu_roofline.csv", "cpu_peak.csv", "precision_parity.csv", "cpu_datapath.csv"):
        if (speed / name).exists():
            shutil.copy(speed / name, tmp_path / name)
    (tmp_path / "cpu_fast").mkdir()
    shutil.copy(speed / "cpu_fast" / "speed.csv", tmp_path / "cpu_fast" / "speed.csv")
    if (speed / "cpu_avx2").is_dir():
        shutil.copytree(speed / "cpu_avx2", tmp_path / "cpu_avx2")
    assert cpu_page(tmp_path).read_text() == (speed / "cpu_fast.md").read_text()


@pytest.mark.parametrize(
    "folder, directions",
    [
        ("compile", ("train_samples_per_sec", "infer_samples_per_sec")),
        # the AVX2 CPU: compiled inference beats eager for MobileNetV2, but the harness
        # compiles the training step only
        ("cpu_avx2/compile", ("train_samples_per_sec",)),
    ],
)
def test_compiling_never_beats_the_best_eager_setting_in_the_committed_cells(folder, directions):
    """The speed page's reading of each CPU's compile cells: cpu_fast leaves task.compile off."""
    path = ROOT / "results" / "speed" / folder / "cpu_roofline.csv"
    if not path.exists():
        pytest.skip(f"{path} not committed")
    cells = pd.read_csv(path)
    cells = cells[cells["error"].isna()]
    compiled = cells["setting"].str.endswith("+compile")
    assert compiled.any() and (~compiled).any()
    for model, rows in cells.groupby("model"):
        for col in directions:
            best_eager = rows.loc[~compiled.loc[rows.index], col].max()
            best_compiled = rows.loc[compiled.loc[rows.index], col].max()
            assert best_compiled < best_eager, (model, col)
    assert compose_train(["trainer=cpu_fast"]).task.compile is False


def test_the_data_path_benchmark_times_what_the_harness_computes(tmp_path, monkeypatch):
    """Every prep path of ``bench-speed datapath`` yields the input the harness's own
    preprocess + forward layout give (bf16 to its rounding), and the mode writes its table."""
    from bench.data.synthetic import SyntheticDataModule
    from bench.speed.datapath import _prep_paths, fast_setting

    dm = SyntheticDataModule(size=8, n_train=4, n_val=4, n_test=4, cache_dir=str(tmp_path / "s"))
    x8 = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    harness, _ = dm.preprocess(x8, torch.zeros(4, dtype=torch.long))
    harness = harness.contiguous(memory_format=torch.channels_last)
    for name, fn in _prep_paths(torch.channels_last, torch.bfloat16).items():
        got = fn(x8)
        assert got.is_contiguous(memory_format=torch.channels_last), name
        tol = 1e-2 if got.dtype == torch.bfloat16 else 1e-6
        torch.testing.assert_close(got.float(), harness, atol=tol, rtol=0)
    for capability, setting in (("AVX512", "fp32_cl"), ("AVX2", "fp32")):  # as cpu_fast.yaml lists
        monkeypatch.setattr(cpu_fast, "cpu_capability", lambda c=capability: c)
        assert fast_setting("mobilenetv2") == setting
    proc = run_cli(
        ["bench-speed", "datapath", "--threads", "1", "--reps", "1", "--min-seconds", "0.01",
         "--roofline-models", "bccnn", "--interop-models", "bccnn", "--out", str(tmp_path)],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "cpu_datapath.csv")
    prep = table[table["kind"] == "prep"]
    expected = {"fp32", "fp32_fused"} | ({"bf16_fused"} if cpu_bf16_native() else set())
    assert set(prep["variant"]) == expected
    assert (prep["share_of_step"] < 0.5).all() and (prep["train_step_ms"] > 0).all()
    pools = set(table.loc[table["kind"] == "interop", "variant"])
    assert pools == {"interop_1", f"interop_{os.cpu_count()}"}
    assert (tmp_path / "cpu_datapath.md").read_text().startswith("# Outside the network")


def test_the_parity_script_stops_on_a_cpu_without_native_bf16(tmp_path):
    """There, cpu_fast trains fp32: the script says so in one line (exit 2) and trains nothing."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    trained = tmp_path / "trained"
    (fake_bin / "python").write_text("#!/bin/sh\nexit 1\n")  # cpu_bf16_native() is False
    (fake_bin / "bench-train").write_text(f"#!/bin/sh\ntouch {trained}\n")
    for f in fake_bin.iterdir():
        f.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cpu_parity.sh")],
        cwd=tmp_path, env={**os.environ, "BIN": str(fake_bin)}, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and not trained.exists()
    assert proc.stderr.strip().count("\n") == 0 and "no native bf16" in proc.stderr


def test_a_peak_is_timed_at_the_first_size_that_takes_long_enough():
    """An emulated dtype stops growing the problem once one call takes ``min_call_s``: here the
    call of size s sleeps s × 10 ms, so sizes 1 and 2 are too short and 4 is timed (40 ms)."""
    made = []

    def make(size):
        made.append(size)
        return lambda: time.sleep(size * 0.01)

    rate = roofline.sized_rate(make, [1, 2, 4, 8], lambda size: size * 1e9, reps=2, min_call_s=0.03)
    assert made == [1, 2, 4]
    assert rate == pytest.approx(4 / 0.04, rel=0.3)


def test_the_roofline_names_the_cpu_it_measured(tmp_path):
    proc = run_cli(
        ["bench-speed", "roofline", "--threads", "1", "--reps", "1", "--min-seconds", "0.01",
         "--roofline-models", "bccnn", "--settings", "fp32", "fp32_cl", "--out", str(tmp_path)],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    peaks = pd.read_csv(tmp_path / "cpu_peak.csv")
    assert set(peaks["dtype"]) == {"fp32", "bf16"} and (peaks["gflops"] > 0).all()
    assert set(peaks["bf16_native"]) == {cpu_bf16_native()}
    cells = pd.read_csv(tmp_path / "cpu_roofline.csv").set_index("setting")
    assert cells.loc["fp32", "train_speedup"] == 1.0 and 0 < cells.loc["fp32_cl", "train_frac_peak"]
    capability = torch.backends.cpu.get_cpu_capability()
    assert set(cells["cpu_capability"]) == {capability}
    assert f"torch's CPU capability: {capability}" in (tmp_path / "cpu_roofline.md").read_text()


NO_BF16_ROOFLINE = ROOT / "results" / "speed" / "cpu_avx2" / "cpu_roofline.csv"


@pytest.mark.skipif(not NO_BF16_ROOFLINE.exists(), reason=f"{NO_BF16_ROOFLINE} not measured")
def test_without_native_bf16_the_preset_trains_the_fastest_fp32_layout(monkeypatch):
    """On the CPU without native bf16 (AVX2) that results/speed/cpu_avx2 measured, every model's
    fallback is fp32 in the layout that trained fastest there (or within 5 % of it)."""
    table = pd.read_csv(NO_BF16_ROOFLINE)
    table = table[table["error"].isna() & table["setting"].isin(["fp32", "fp32_cl"])]
    assert len(set(table["model"])) == len(roofline.MODELS)  # the whole zoo measured
    for model, rows in table.groupby("model"):
        cfg = _resolved([f"model={roofline.MODELS[model][0]}"], False, monkeypatch, "AVX2")
        assert cfg.trainer.precision == "32-true", model
        setting = "fp32_cl" if cfg.task.channels_last else "fp32"
        speed = rows.set_index("setting")["train_samples_per_sec"]
        assert speed[setting] >= 0.95 * speed.max(), (model, setting, speed.to_dict())


def test_without_native_bf16_channels_last_only_where_every_process_measured_it_faster(
    monkeypatch,
):
    """The AVX2 table departs from the baseline layout only where each roofline process of
    results/speed/cpu_avx2 (the main one and those in its subfolders) had channels-last faster:
    a layout whose readings fall on both sides of 1 is noise; NCHW is never slower than NCHW."""
    readings = fp32_layout_readings(NO_BF16_ROOFLINE.parent)
    assert readings.groupby("model").size().max() > 1  # some model was measured again
    for model, g in readings.groupby("model"):
        cfg = _resolved([f"model={roofline.MODELS[model][0]}"], False, monkeypatch, "AVX2")
        faster_everywhere = bool((g["cl_over_nchw"] > 1).all())
        assert cfg.task.channels_last is faster_everywhere, (model, g.to_dict("records"))


def test_the_layout_readings_name_each_process_and_its_ratio(tmp_path):
    """fp32_layout_readings: one row per model and process at its largest thread count."""
    cols = ["model", "setting", "threads", "train_speedup", "peak_gflops", "error"]
    main = pd.DataFrame(
        [["m", "fp32", 2, 1.0, 190.0, None], ["m", "fp32_cl", 2, 0.8, 190.0, None],
         ["m", "fp32", 1, 1.0, 95.0, None], ["m", "fp32_cl", 1, 9.9, 95.0, None]],
        columns=cols,
    )  # fmt: skip
    again = pd.DataFrame(
        [["m", "fp32", 2, 1.0, 140.0, None], ["m", "fp32_cl", 2, 1.2, 140.0, None],
         ["n", "fp32", 2, 1.0, 140.0, None], ["n", "fp32_cl", 2, None, 140.0, "OOM"]],
        columns=cols,
    )  # fmt: skip
    main.to_csv(tmp_path / "cpu_roofline.csv", index=False)
    (tmp_path / "again").mkdir()
    again.to_csv(tmp_path / "again" / "cpu_roofline.csv", index=False)
    got = fp32_layout_readings(tmp_path)
    assert got.to_dict("records") == [
        {"model": "m", "source": ".", "peak": 190.0, "cl_over_nchw": 0.8},
        {"model": "m", "source": "again/", "peak": 140.0, "cl_over_nchw": 1.2},
    ]
