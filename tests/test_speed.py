"""The speed benchmark: its summary arithmetic, the projection, the packing launcher, a tiny
measured run of every method."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.launch.colocate import SoloJobMeasurement, jobs_per_gpu
from bench.speed.grid import scaled_lr
from bench.speed.projection import Rates, project, split_sizes, totals
from bench.speed.tables import summarise

from conftest import PNEUMONIA, ROOT, needs_pneumonia, run_cli

SPEED = [sys.executable, "-m", "bench.commands.speed"]


def test_summary_drops_warmup_takes_medians_and_ratios():
    rows = []
    for rep, (h, r, ref) in enumerate(
        [(9.0, 9.0, 9.0), (2.0, 1.0, 6.0), (4.0, 2.0, 8.0), (3.0, 2.0, 7.0)]
    ):
        for method, t in (("harness", h), ("raw", r), ("reference", ref)):
            rows.append(
                {
                    "model": "m",
                    "method": method,
                    "precision": "32",
                    "rep": rep,
                    "epoch_time_s": t,
                    "train_samples_per_sec": 100.0 / t,
                }
            )
    summary = summarise(pd.DataFrame(rows), warmup=1).set_index("method")
    assert summary.loc["harness", "epoch_time_s"] == 3.0  # median of 2, 4, 3 (rep 0 dropped)
    assert summary.loc["harness", "epoch_time_s_min"] == 2.0
    # paired per repetition: 2/1, 4/2, 3/2 -> median 2.0 (the ratio of medians, 3/2, mixes reps)
    assert summary.loc["harness", "harness_over_raw"] == pytest.approx(2.0, abs=1e-3)
    assert summary.loc["harness", "harness_over_raw_min"] == pytest.approx(1.5)
    assert summary.loc["harness", "harness_over_raw_max"] == pytest.approx(2.0)
    assert summary.loc["harness", "reference_over_harness"] == pytest.approx(7.0 / 3.0, abs=1e-3)
    assert summary.loc["harness", "reps"] == 3


def test_harness_over_raw_pairs_repetitions_so_machine_drift_cancels():
    # rep 1 ran on a machine at half speed: per repetition the harness is 1.00x, 1.05x, 1.20x raw
    times = [(1.0, 1.0), (2.1, 2.0), (1.2, 1.0)]
    rows = [
        {"model": "m", "method": method, "precision": "bf16_cl", "rep": rep, "epoch_time_s": t}
        for rep, pair in enumerate(times)
        for method, t in zip(("harness", "raw"), pair, strict=True)
    ]
    summary = summarise(pd.DataFrame(rows)).set_index("method")
    # the ratio of the medians would be 1.2 / 1.0: it pairs rep 2's harness with rep 0's raw loop
    assert summary.loc["harness", "harness_over_raw"] == pytest.approx(1.05)
    assert summary.loc["harness", "harness_over_raw_min"] == pytest.approx(1.0)
    assert summary.loc["harness", "harness_over_raw_max"] == pytest.approx(1.2)
    assert pd.isna(summary.loc["raw", "harness_over_raw"])


@pytest.mark.parametrize("content", [None, "", "not json\n"])
def test_aggregate_from_a_missing_or_empty_log_is_one_line(tmp_path, content):
    src = tmp_path / "log.jsonl"
    if content is not None:
        src.write_text(content)
    proc = subprocess.run(
        [*SPEED, "aggregate", str(src), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ConfigError: bench-speed aggregate")


def test_projection_arithmetic_by_hand():
    row = {"epoch_time_s": 3.0, "train_samples_per_sec": 1000.0, "infer_samples_per_sec": 4000.0}
    r = Rates.from_row(row, n_train=2000, n_eval=400)  # 2 s + 0.1 s of the 3 s: fixed 0.9 s
    assert r.fixed_s == pytest.approx(0.9)
    sizes = split_sizes("retinamnist")  # 1080 / 120 / 400
    assert r.epoch_seconds(sizes) == pytest.approx(0.9 + 1080 / 1000 + 120 / 4000)
    ref = Rates(1000.0, 4000.0, 0.9, evaluates="all")  # the official script scores all splits
    assert ref.epoch_seconds(sizes) == pytest.approx(0.9 + 1.08 + (120 + 1080 + 400) / 4000)
    table = project(
        {("harness", "m"): r},
        epochs=100,
        seeds=3,
        datasets=("retinamnist",),
        packing={"harness": 2.0},
    )
    one = 3 * (100 * r.epoch_seconds(sizes) + 400 / 4000) / 3600
    assert table.loc[0, "hours_one_at_a_time"] == pytest.approx(one, abs=1e-4)
    assert table.loc[0, "hours"] == pytest.approx(one / 2, abs=1e-4)
    assert totals(table).loc[0, "hours"] == pytest.approx(one / 2, abs=1e-3)


def test_projection_packed_seeds_column_from_packed_csv():
    import pandas as pd

    from bench.speed.projection import packed_seed_speedups

    packed = pd.DataFrame(
        {
            "model": ["resnet18_28", "resnet18_28", "resnet18_28", "bccnn"],
            "k": [3, 3, 3, 3],
            "implementation": ["torch.func vmap", "grouped conv", "torch.func vmap", "x"],
            "device": ["cuda", "cuda", "cpu", "cuda"],
            "speedup_vs_separate": [1.5, 2.5, 0.5, 4.0],
        }
    )
    # the faster exact implementation on the projection's device, under the projection's name
    assert packed_seed_speedups(packed, "cuda", 3) == {
        "resnet18_28": 2.5,
        "bccnn": 4.0,
        "resnet18_ss": 2.5,
    }
    r = Rates(1000.0, 4000.0, 0.9)
    rates = {("harness", "resnet18_ss"): r, ("harness", "resnet50_ss"): r, ("raw", "bccnn"): r}
    table = project(rates, datasets=("retinamnist",), packed_seeds={"resnet18_ss": 2.5})
    by = table.set_index(["method", "model"])
    one = by.loc[("harness", "resnet18_ss"), "hours_one_at_a_time"]
    assert by.loc[("harness", "resnet18_ss"), "hours_packed_seeds"] == pytest.approx(
        one / 2.5, abs=1e-4
    )
    assert pd.isna(by.loc[("harness", "resnet50_ss"), "hours_packed_seeds"])  # unmeasured
    assert pd.isna(by.loc[("raw", "bccnn"), "packed_seeds_speedup"])  # the raw loop never packs
    # a total with an unmeasured model is no total
    assert pd.isna(totals(table).set_index("method").loc["harness", "hours_packed_seeds"])


def test_jobs_per_gpu_from_a_solo_measurement():
    solo = SoloJobMeasurement(
        peak_mem_mb=2000, util_pct=20, step_ms=5, free_mem_mb=80000, total_mem_mb=81000
    )
    k, why = jobs_per_gpu(solo, max_jobs=8, cpus=16)
    assert k == 5 and "by utilisation" in why  # ceil(90 / 20): the GPU is busy at five
    tight = SoloJobMeasurement(
        peak_mem_mb=20000, util_pct=5, step_ms=5, free_mem_mb=50000, total_mem_mb=81000
    )
    assert jobs_per_gpu(tight, max_jobs=8, cpus=16)[0] == 2  # 0.85 * 50000 / 20600 -> 2 by memory
    assert jobs_per_gpu(solo, max_jobs=8, cpus=2)[0] == 2  # never more jobs than cores


def test_old_pack_names_are_deprecated_aliases_of_colocate():
    """Processes sharing a GPU were "pack" before "pack" meant packed seeds; the old names
    keep working for one release and say they are renamed."""
    import importlib
    import sys

    sys.modules.pop("bench.launch.pack", None)
    with pytest.warns(DeprecationWarning, match="renamed bench.launch.colocate"):
        old = importlib.import_module("bench.launch.pack")
    assert old.pack_size is jobs_per_gpu
    from hydra_plugins.medbench_launcher.colocate_launcher import ColocateLauncher
    from hydra_plugins.medbench_launcher.pack_launcher import PackLauncher

    assert issubclass(PackLauncher, ColocateLauncher)
    from bench.commands.speed import parser

    assert parser().parse_args(["pack", "1", "2", "--pack-jobs", "4"]).jobs == 4
    assert parser().parse_args(["colocate", "1", "--jobs", "3"]).k == [1]


@pytest.mark.slow
def test_colocate_launcher_runs_k_jobs_at_once_on_cpu(tmp_path):
    from bench.records import RunStore

    args = [
        "bench-train",
        "-m",
        "hydra/launcher=colocate",
        "hydra.launcher.n_jobs=2",
        "model=bccnn",
        "model.hidden=[16]",
        "model.width=8,16",
        "logger=none",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "data.n_train=256",
        "data.n_val=64",
        "data.n_test=64",
        "data.batch_size=32",
    ]
    meet = tmp_path / "meet"
    rendezvous = [
        "+callbacks.meet._target_=rendezvous.Rendezvous",
        f"+callbacks.meet.folder={meet}",
        "+callbacks.meet.timeout=60",
    ]
    tests_dir = str(Path(__file__).parent)
    proc = run_cli([*args, *rendezvous], tmp_path, env={"PYTHONPATH": tests_dir}, check=True)
    recs = [r for r in RunStore(tmp_path / "runs").iter_records()[0] if r.done]
    assert len(recs) == 2, proc.stderr[-2000:]
    # two processes at once: each job saw the other one running (one after the other: 1 each)
    saw = sorted(int(f.read_text()) for f in meet.glob("*.saw"))
    assert saw == [2, 2], saw
    assert "2 jobs, 2 done" in proc.stderr
    # the launcher on a machine without a GPU and n_jobs=auto runs one at a time; its old
    # name still works and says it was renamed
    auto = run_cli(
        [
            *args[:2],
            "hydra/launcher=gpu_pack",
            "model=bccnn",
            "model.hidden=[16]",
            "model.width=4",
            *args[7:],
        ],
        tmp_path,
        check=True,
    )
    assert "no GPU; running one job at a time" in auto.stdout + auto.stderr
    assert "hydra/launcher=gpu_pack is renamed hydra/launcher=colocate" in auto.stdout + auto.stderr


@pytest.mark.slow
@needs_pneumonia()
def test_tiny_measured_run_writes_every_method(tmp_path):
    out = tmp_path / "speed"
    proc = subprocess.run(
        [
            *SPEED,
            "grid",
            "--data-dir",
            str(PNEUMONIA.parent),
            "--models",
            "bccnn",
            "--precisions",
            "32",
            "--reps",
            "1",
            "--train-limit",
            "256",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--torch-profile",
            str(out / "profile.txt"),
            "--batch-scales",
            "1",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(out / "speed.csv")
    assert set(summary.method) == {"harness", "raw", "reference"}
    # batch x2 (LR x sqrt 2) for harness and raw loop; the official pipeline only as it ships
    cells = set(zip(summary.method, summary.batch_size, strict=True))
    assert cells == {
        ("harness", 128),
        ("harness", 256),
        ("raw", 128),
        ("raw", 256),
        ("reference", 128),
    }
    big = summary[(summary.method == "harness") & (summary.batch_size == 256)].iloc[0]
    assert big.val_auc_vs_fp32 == pytest.approx(
        big.val_auc
        - summary[(summary.method == "harness") & (summary.batch_size == 128)].val_auc.iloc[0],
        abs=1e-4,
    )
    reps = pd.read_csv(out / "speed_reps.csv")
    assert sorted(reps[reps.method == "raw"].lr.round(6)) == [0.001, round(0.001 * 2**0.5, 6)]
    assert (summary.epoch_time_s > 0).all() and summary.harness_over_raw.notna().any()
    assert json.loads((out / "machine.txt").read_text())["device"] == "cpu"
    assert "aten::" in (out / "profile.txt").read_text()


def test_batch_scaling_rules_and_the_accuracy_check_by_hand():
    assert scaled_lr(1e-3, 4, "sqrt") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 8, "linear") == pytest.approx(8e-3)
    rows = [
        {
            "model": "m",
            "method": meth,
            "precision": prec,
            "batch_size": bs,
            "rep": 0,
            "epoch_time_s": t,
            "val_auc": auc,
        }
        for meth, prec, bs, t, auc in [
            ("harness", "32", 128, 4.0, 0.90),
            ("raw", "32", 128, 2.0, 0.91),
            ("harness", "32", 512, 1.5, 0.87),
            ("raw", "32", 512, 1.0, 0.86),
        ]
    ]
    summary = summarise(pd.DataFrame(rows)).set_index(["method", "batch_size"])
    assert summary.loc[("harness", 512), "harness_over_raw"] == pytest.approx(1.5)
    assert summary.loc[("harness", 128), "harness_over_raw"] == pytest.approx(2.0)
    assert summary.loc[("harness", 512), "val_auc_vs_fp32"] == pytest.approx(-0.03)
    assert summary.loc[("raw", 512), "val_auc_vs_fp32"] == pytest.approx(-0.05)
    assert pd.isna(summary.loc[("harness", 128), "val_auc_vs_fp32"])  # the baseline itself
    # a table measured before batch scaling: every row at the base batch
    old = pd.DataFrame([{k: v for k, v in r.items() if k != "batch_size"} for r in rows[:2]])
    assert list(summarise(old).batch_size) == [128, 128]


def test_every_bench_speed_command_in_the_makefile_parses():
    import shlex

    from bench.commands.speed import MODES, parser

    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    commands = [
        line.split("bench-speed", 1)[1] for line in text.splitlines() if "bench-speed " in line
    ]
    assert len(commands) >= 5
    for args in commands:
        speed = parser().parse_args(shlex.split(args.replace("$(BIN)", "")))
        assert speed.mode in MODES, args
        if speed.mode in ("grid", "colocate", "project"):
            assert speed.models, args


def test_a_training_rate_that_counted_warmup_is_capped_by_the_steady_epoch():
    row = {"epoch_time_s": 1.2, "train_samples_per_sec": 3000.0, "infer_samples_per_sec": 10000.0}
    r = Rates.from_row(row, n_train=12000, n_eval=2000)  # 4 s of training in a 1.2 s epoch?
    assert r.fixed_s == 0 and r.train_rate == pytest.approx(12000 / (1.2 - 0.2))


def test_the_committed_cpu_fast_table_is_its_repetitions_summarised():
    folder = ROOT / "results" / "speed" / "cpu_fast"
    reps = pd.read_csv(folder / "speed_reps.csv", dtype={"precision": str})
    again = summarise(reps, warmup=1).set_index(["model", "method", "precision"])
    table = pd.read_csv(folder / "speed.csv", dtype={"precision": str})
    table = table.set_index(["model", "method", "precision"])
    cols = ["epoch_time_s", "harness_over_raw", "harness_over_raw_min", "harness_over_raw_max"]
    pd.testing.assert_frame_equal(table[cols], again.loc[table.index, cols], check_dtype=False)
    # BCCNN at the fast setting: seven paired repetitions behind its harness/raw
    assert again.loc[("bccnn", "harness", "bf16_cl"), "reps"] >= 7


@pytest.mark.parametrize("mode", ["roofline", "datapath"])
@pytest.mark.parametrize("threads", ["0", "-1", "two"])
def test_a_thread_count_below_one_is_a_one_line_usage_error(mode, threads):
    proc = subprocess.run(
        [*SPEED, mode, "--threads", threads], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(f"argument --threads: '{threads}' is not a whole number of at least 1")
    )
