"""bench-predict, bench-data check, the Python API and the front doors every tool shares."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bench

from conftest import PNEUMONIA, needs_pneumonia, run_cli

COMMANDS = [
    ("bench-leaderboard", "bench.commands.leaderboard"),
    ("bench-report", "bench.commands.report"),
    ("bench-explain", "bench.commands.explain"),
    ("bench-robust", "bench.commands.robust"),
    ("bench-tta", "bench.commands.tta"),
    ("bench-uncertainty", "bench.commands.uncertainty"),
    ("bench-export", "bench.commands.export"),
    ("bench-predict", "bench.commands.predict"),
    ("bench-data", "bench.commands.data"),
    ("bench-speed", "bench.commands.speed"),
]


@pytest.fixture
def trained(bccnn_run):
    return None, bccnn_run


def _test_images_as_pngs(record, folder, n=12):
    run = bench.load_run(record.dir)
    images, _ = run.test_arrays()
    folder.mkdir()
    for i in range(n):
        Image.fromarray(images[i, 0]).save(folder / f"{i:03d}.png")
    return images[:n]


# -- front doors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, module", COMMANDS)
def test_help_and_version_import_no_torch(name, module):
    code = (
        "import sys\n"
        f"from {module} import main\n"
        "for flag in ('--help', '--version'):\n"
        "    try:\n"
        "        main([flag])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'lightning', 'pandas', 'timm') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    assert f"{name} (medbench " in proc.stdout


def test_bench_train_version(tmp_path):
    proc = run_cli(["bench-train", "--version"], tmp_path, check=True)
    assert proc.stdout.startswith("bench-train (medbench ")


# -- bench-predict --------------------------------------------------------------------------------
def test_predict_equals_the_runs_saved_test_predictions(trained, tmp_path):
    _, record = trained
    _test_images_as_pngs(record, tmp_path / "imgs")
    out = tmp_path / "p.csv"
    from bench.commands.predict import main

    assert main([str(record.dir), str(tmp_path / "imgs"), "--out", str(out)]) == 0
    got = pd.read_csv(out)
    saved = pd.read_csv(record.dir / "predictions_test.csv").sort_values("index").head(len(got))
    names = list(record.spec["label_names"])
    mine = got[[f"p_{n}" for n in names]].to_numpy()
    theirs = saved[[f"score_{i}" for i in range(len(names))]].to_numpy()
    np.testing.assert_allclose(mine, theirs, atol=1e-5)
    assert got["adjusted"].isna().all()  # nothing resized or converted
    # calibrated with the run's validation temperature: the same argmax, other probabilities
    assert record.evaluations["calibration"]["temperature"] > 0
    cal = got[[f"p_cal_{n}" for n in names]].to_numpy()
    assert np.allclose(cal.sum(1), 1, atol=1e-5)
    assert list(got["predicted"]) == [names[i] for i in cal.argmax(1)]


def test_predict_through_onnx_export_and_abstain_at_a_coverage(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from bench.commands.predict import main
    from bench.export import export

    _, record = trained
    _test_images_as_pngs(record, tmp_path / "imgs")
    export(record.dir, "onnx")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert (
        main([str(record.dir), str(tmp_path / "imgs"), "--out", str(a), "--coverage", "0.5"]) == 0
    )
    assert main([str(record.dir / "export"), str(tmp_path / "imgs"), "--out", str(b)]) == 0
    pa, pb = pd.read_csv(a), pd.read_csv(b)
    cols = [c for c in pa if c.startswith("p_") and not c.startswith("p_cal_")]
    np.testing.assert_allclose(pa[cols].to_numpy(), pb[cols].to_numpy(), atol=1e-5)
    # the threshold keeps half of the validation cases: some test cases abstain, not all
    assert 0 < pa["abstain"].sum() < len(pa)


def test_predict_adjusts_size_and_16_bit_and_says_so(trained, tmp_path):
    _, record = trained
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "rgb64.png")
    ramp = np.linspace(0, 4095, 28 * 28).reshape(28, 28).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sixteen.png")
    from bench.predict import predict_table

    df = predict_table(record.dir, [str(folder)]).set_index("path")
    assert df.loc[str(folder / "rgb64.png"), "adjusted"] == "rgb->gray; resized 64x64->28x28"
    # 16-bit pixels are scaled, and the row says how (the training reader's note)
    assert df.loc[str(folder / "sixteen.png"), "adjusted"] == "I;16 scaled to 0-255 (minmax)"


def test_predict_on_a_missing_input_is_one_line(trained, tmp_path):
    _, record = trained
    proc = run_cli(["bench-predict", str(record.dir), "nowhere/"], tmp_path)
    assert proc.returncode == 2 and "input nowhere does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- bench-data check -----------------------------------------------------------------------------
def test_data_check_finds_leakage_and_one_class_val(tmp_path):
    from bench.datacheck import check

    from helpers import write_medmnist_npz

    path = write_medmnist_npz(tmp_path / "x.npz", (8, 8), 2)
    clean = check([str(path)])
    assert not clean.problems and clean.fingerprint.startswith("sha256:")
    arrays = dict(np.load(path))
    arrays["test_images"][0] = arrays["train_images"][3]  # a test image that is also in train
    arrays["val_labels"][:] = 0
    np.savez(path, **arrays)
    report = check([str(path)])
    text = report.text()
    assert any("appear in test and train" in p for p in report.problems), text
    assert any("validation AUC" in p for p in report.problems), text


def test_data_check_command_exit_codes(tmp_path):
    from helpers import write_medmnist_npz

    path = write_medmnist_npz(tmp_path / "x.npz", (8, 8), 2)
    ok = run_cli(["bench-data", "check", str(path)], tmp_path)
    assert ok.returncode == 0 and "no problems found" in ok.stdout
    arrays = dict(np.load(path))
    arrays["train_labels"] = arrays["train_labels"].astype(float) + 0.3
    np.savez(path, **arrays)
    bad = run_cli(["bench-data", "check", str(path)], tmp_path)
    assert bad.returncode == 1 and "non-integral" in bad.stdout
    missing = run_cli(["bench-data", "check", str(tmp_path / "nope")], tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: DatasetNotFoundError")


@needs_pneumonia()
def test_data_check_on_real_pneumoniamnist(tmp_path):
    from bench.datacheck import check

    report = check([str(PNEUMONIA)])
    assert "train classes: 0: 1214, 1: 3494" in report.text()
    assert not report.problems  # 8 train/val duplicates are a warning: the test split is clean
    assert any("train and val" in w for w in report.warnings)


# -- the Python API -------------------------------------------------------------------------------
def test_python_api_as_documented(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDBENCH_DATA_DIR", str(tmp_path / "data"))
    overrides = [
        "data=synthetic",
        "model=bccnn",
        "trainer.max_epochs=1",
        "logger=none",
        "data.n_train=96",
        "data.n_val=48",
        "data.n_test=48",
        "trainer.enable_progress_bar=false",
    ]
    record = bench.train(overrides)
    assert record.status == "done"
    table = bench.leaderboard("runs")
    assert list(table["model"]) == ["bccnn"] and "test_auc_mean" in table
    run = bench.load_run(record.dir)
    images, _ = run.test_arrays()
    probs = run.predict(images)
    assert probs.shape == (len(images), run.spec.num_classes)
    saved = pd.read_csv(record.dir / "predictions_test.csv").sort_values("index")
    np.testing.assert_allclose(probs, saved.filter(like="score_").to_numpy(), atol=1e-5)
    again = bench.train(overrides)  # finished: the record it matched, nothing retrained
    assert again.run_id == record.run_id
    with pytest.raises(bench.errors.ConfigError, match="model.widht is not a key"):
        bench.train([*overrides, "model.widht=3"])
