"""Off the demo path: every input does the right thing or stops with one named line.

One case per item of the "never silently wrong" list: data identity, undefined metrics, 16-bit
images, fractional labels, files that contradict their config, configs that cannot train, the
exit codes and one-line errors of bench-train, unusable run stores and corrupt checkpoints.
"""

from __future__ import annotations

import math
import os
import stat

import numpy as np
import pytest
from PIL import Image

from bench.data.images import read_image, to_uint8
from bench.errors import ConfigError
from bench.job.entry import train
from bench.metrics import classification_metrics
from bench.records import load_record

from conftest import FAST, run_cli
from helpers import write_medmnist_npz

FOLDER_FAST = [
    "data=folder",
    "model=bccnn",
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "data.size=28",
    "data.batch_size=8",
]


def image_folder(root, classes: dict[str, int], seed: int = 0, size: int = 20):
    """root/<class>/<i>.png with a class-dependent mean so a model can tell them apart."""
    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(classes.items()):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(rng.normal(60 + 60 * k, 20, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(d / f"{name}_{i}.png")
    return root


def outcome_of(make_cfg, overrides):
    return train(make_cfg(overrides))


# -- 1. data identity -------------------------------------------------------------------------
def test_another_folder_under_the_same_config_words_is_a_new_run(make_cfg, tmp_path):
    a = image_folder(tmp_path / "A" / "scans", {"benign": 12, "malignant": 12})
    b = image_folder(tmp_path / "B" / "scans", {"x": 10, "y": 10, "z": 10}, seed=1)
    first = outcome_of(make_cfg, [*FOLDER_FAST, f"data.root={a}"])
    second = outcome_of(make_cfg, [*FOLDER_FAST, f"data.root={b}"])
    assert first.status == "done" and second.status == "done", (first, second)
    assert first.run_id != second.run_id
    rec_a, rec_b = load_record(first.record_path), load_record(second.record_path)
    assert rec_a.spec["num_classes"] == 2 and rec_b.spec["num_classes"] == 3
    assert rec_a.config_id != rec_b.config_id
    # labelled by the folder's name, never the bare word "data"
    assert first.run_id.startswith("scans_28_bccnn") and rec_a.dataset == "scans"
    assert rec_a.config["data"]["fingerprint"].startswith("sha256:")
    # the same folder moved elsewhere keeps its identity (root is not part of the id)
    moved = tmp_path / "moved" / "scans"
    moved.parent.mkdir()
    os.rename(a, moved)
    again = outcome_of(make_cfg, [*FOLDER_FAST, f"data.root={moved}"])
    assert again.status == "skipped" and again.run_id == first.run_id


def test_a_replaced_medmnist_file_is_trained_again(make_cfg, tmp_path):
    root = tmp_path / "mm"
    path = write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2, seed=0)
    args = ["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]]
    first = outcome_of(make_cfg, args)
    write_medmnist_npz(path, (28, 28), 2, seed=1)  # a corrected file under the same name
    second = outcome_of(make_cfg, args)
    assert first.status == second.status == "done"
    assert first.run_id != second.run_id


# -- 2. undefined metrics -----------------------------------------------------------------------
def test_one_class_metrics_are_nan_not_numbers():
    y = np.array([1, 1, 1])
    scores = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    m = classification_metrics(y, scores, "binary-class")
    assert math.isnan(m["auc"]) and math.isnan(m["mcc"])
    assert m["acc"] == pytest.approx(2 / 3)


def test_absent_class_is_left_out_of_macro_auc_not_scored_zero():
    y = np.array([0, 1, 0, 1])
    scores = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, scores, "multi-class")
    assert m["auc"] == pytest.approx(1.0)  # classes 0 and 1 separate perfectly; 2 is absent


def test_one_class_val_split_stops_before_training(make_cfg, tmp_path):
    counts = {"train": 20, "val": 4, "test": 6}
    labels = {"val_labels": np.zeros((4, 1), int)}
    root = tmp_path / "mm"
    write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2, counts=counts, **labels)
    out = outcome_of(make_cfg, ["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]])
    assert out.status == "failed" and load_record(out.record_path).epochs_run is None
    assert "val split" in out.error and "undefined" in out.error, out.error


def test_one_class_test_split_records_nan_with_a_note(make_cfg, tmp_path, capsys):
    counts = {"train": 20, "val": 6, "test": 4}
    labels = {"test_labels": np.ones((4, 1), int)}
    root = tmp_path / "mm"
    write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2, counts=counts, **labels)
    out = outcome_of(make_cfg, ["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]])
    rec = load_record(out.record_path)
    assert rec.status == "done"
    assert math.isnan(rec.test["auc"]) and math.isnan(rec.test["mcc"])
    assert any("test split" in n and "NaN" in n for n in rec.notes), rec.notes
    from bench.commands.leaderboard import main

    out_dir = tmp_path / "lb"
    assert main(["--runs-dir", str(rec.dir.parent), "--out", str(out_dir), "--n-boot", "20"]) == 0
    assert "note: the test split of breastmnist holds only class" in capsys.readouterr().out


# -- 3. 16-bit images ---------------------------------------------------------------------------
def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 4095, 32 * 32).reshape(32, 32).astype(np.uint16)  # 12-bit data
    path = tmp_path / "xray.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels, _ = read_image(path, 32, "gray", "minmax")
    assert pixels.min() == 0 and pixels.max() == 255
    assert (pixels == 255).mean() < 0.01  # convert("L") saturated ~94% here
    container, _ = read_image(path, 32, "gray", "dtype")
    assert container.max() == round(4095 / 65535 * 255)
    assert to_uint8(np.array([[0.0, 0.5, 1.0]]), "dtype").tolist() == [[0, 128, 255]]


# -- 4. fractional labels -----------------------------------------------------------------------
def test_fractional_float_labels_are_a_format_error(make_cfg, tmp_path):
    root = tmp_path / "mm"
    frac = {f"{s}_labels": np.full((n, 1), 0.3) for s, n in (("train", 40), ("val", 12))}
    frac["train_labels"][::2] = 0.9
    write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2, **frac)
    out = outcome_of(make_cfg, ["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]])
    assert out.status == "failed"
    assert "non-integral label" in out.error and "train_labels" in out.error, out.error


def test_integral_float_labels_are_accepted(make_cfg, tmp_path):
    root = tmp_path / "mm"
    floats = {
        f"{s}_labels": (np.arange(n) % 2).reshape(n, 1).astype(np.float32)
        for s, n in (("train", 40), ("val", 12), ("test", 12))
    }
    write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2, **floats)
    out = outcome_of(make_cfg, ["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]])
    assert out.status == "done", out.error


# -- 5. files that contradict their config --------------------------------------------------------
def test_a_64px_file_under_the_28px_name_names_the_fitting_config(make_cfg, tmp_path):
    root = tmp_path / "mm"
    write_medmnist_npz(root / "pneumoniamnist.npz", (64, 64), 2)
    out = outcome_of(
        make_cfg, ["data=pneumoniamnist", f"data.root={root}", "model=bccnn", *FAST[:3]]
    )
    assert out.status == "failed"
    assert "64x64" in out.error and "data.size=64" in out.error, out.error


def test_2d_rgb_file_under_a_3d_config_is_refused(make_cfg, tmp_path):
    root = tmp_path / "mm"
    write_medmnist_npz(root / "adrenalmnist3d.npz", (28, 28, 3), 2)
    out = outcome_of(
        make_cfg, ["data=adrenalmnist3d", f"data.root={root}", "model=cnn3d", *FAST[:3]]
    )
    assert out.status == "failed"
    assert "2D images of 28x28 with 3 channels" in out.error, out.error


# -- 6. configs that cannot train ---------------------------------------------------------------
@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("+trainer.max_steps=0", "trainer.max_steps"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
        ("task.optimizer.lr=-0.1", "task.optimizer.lr"),
        ("+trainer.max_epoch=3", "trainer.max_epochs"),
    ],
)
def test_configs_that_cannot_train_are_refused_before_the_run(make_cfg, override, key):
    out = outcome_of(make_cfg, ["data=synthetic", "model=bccnn", *FAST, override])
    assert out.status == "failed" and out.record_path is None, out
    assert key in out.error and "ConfigError" in out.error, out.error


# -- 10. exit codes and one line -------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["model.widht=3"], "model.widht is not a key"),
        (["trainer.max_epoch=1"], "trainer.max_epoch is not a key"),
        (["+trainer.max_epoch=1"], "did you mean trainer.max_epochs"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0"),
        (["data=pneumoniamnist", "data.root=nowhere", "data.download=false"], "not found"),
        (["data=synthetic3d", "model=bccnn"], "ModelDataMismatchError"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, args, needle):
    proc = run_cli(["bench-train", "logger=none", "model=bccnn", *args], tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.count(needle) == 1


# -- 11. run stores, checkpoints, empty splits -----------------------------------------------------
def test_unusable_runs_dir_is_named(make_cfg, tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cfg = make_cfg(["data=synthetic", "model=bccnn", *FAST])
    cfg.paths.runs_dir = str(a_file)
    out = train(cfg)
    assert out.status == "failed" and "is a file, not a folder" in out.error
    cfg.paths.runs_dir = "/proc/medbench/runs"
    out = train(cfg)
    assert out.status == "failed" and "OutputPathError" in out.error


def test_empty_split_is_named(make_cfg, tmp_path):
    root = tmp_path / "mm"
    write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2, counts={"train": 20, "val": 8})
    np.savez(
        root / "breastmnist.npz",
        **dict(np.load(root / "breastmnist.npz")),
        test_images=np.zeros((0, 28, 28), np.uint8),
        test_labels=np.zeros((0, 1), int),
    )
    out = outcome_of(make_cfg, ["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]])
    assert out.status == "failed" and "test_images is empty" in out.error, out.error


def test_truncated_last_checkpoint_is_set_aside_and_the_run_restarts(make_cfg, tmp_path, caplog):
    cfg = make_cfg(["data=synthetic", "model=bccnn", *FAST])
    first = train(cfg)
    run_dir = load_record(first.record_path).dir
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    rec = load_record(first.record_path)
    rec.status = "interrupted"
    from bench.records import RunStore

    RunStore(cfg.paths.runs_dir).write(rec)
    again = train(cfg)
    assert again.status == "done", again.error
    assert not ckpt.exists() and list(ckpt.parent.glob("last.ckpt.corrupt*"))
    assert "corrupt" in caplog.text and str(ckpt) in caplog.text


# -- 8. outputs follow the umask ------------------------------------------------------------------
def test_outputs_follow_the_umask(make_cfg):
    old = os.umask(0o022)
    try:
        out = train(make_cfg(["data=synthetic", "model=bccnn", *FAST]))
    finally:
        os.umask(old)
    run_dir = load_record(out.record_path).dir
    for name in ("record.json", "history.csv", "predictions_test.csv"):
        mode = stat.S_IMODE((run_dir / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


# -- 7, 9. leaderboard commands on a store with more than one dataset -------------------------
def _two_dataset_store(make_cfg):
    for model in ("bccnn", "resnet18"):
        assert train(make_cfg(["data=synthetic", f"model={model}", *FAST])).status == "done"
    small3d = ["data.n_train=32", "data.n_val=16", "data.n_test=16", "data.batch_size=8"]
    cfg = make_cfg(["data=synthetic3d", "model=cnn3d", *FAST[:3], *small3d])
    assert train(cfg).status == "done"
    return cfg.paths.runs_dir


def _board(args, capsys):
    from bench.commands.leaderboard import main

    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_leaderboard_compare_filters_and_metrics_off_the_demo_path(make_cfg, tmp_path, capsys):
    runs = _two_dataset_store(make_cfg)
    base = ["--runs-dir", runs, "--out", str(tmp_path / "lb"), "--n-boot", "50"]
    # 7. --compare on a store with two datasets compares where both models ran
    code, out, err = _board([*base, "--compare", "bccnn", "resnet18"], capsys)
    assert code == 0 and "synthetic: auc(bccnn) - auc(resnet18)" in out, err
    assert "synthetic3d" not in out.split("synthetic: auc(bccnn)")[1]  # only the shared one
    code, out, err = _board(
        [*base, "--compare", "bccnn", "resnet18", "--dataset", "synthetic"], capsys
    )
    assert code == 0 and "paired bootstrap" in out, err
    code, _, err = _board([*base, "--compare", "bccnn", "cnn3d"], capsys)
    assert code == 2 and "share no dataset" in err
    # 9. filters and names that match nothing say so and list what is there
    code, out, err = _board([*base, "--where", "model.name=bccnn"], capsys)
    assert code == 0 and "(1 rows)" in out
    code, out, err = _board([*base, "--where", "eval.tta=none"], capsys)
    assert code == 0 and "(3 rows)" in out, err
    code, out, err = _board([*base, "--where", "model.pretrained=False"], capsys)
    assert code == 0, err  # Python's spelling and Hydra's (false) both match
    code, _, err = _board([*base, "--where", "model.name=foo"], capsys)
    assert code == 2 and "values of model.name in the store: bccnn, cnn3d, resnet18" in err
    code, _, err = _board([*base, "--dataset", "synthtic"], capsys)
    assert code == 2 and "datasets in the store: synthetic, synthetic3d" in err
    code, _, err = _board(["--runs-dir", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no such folder" in err
    code, _, err = _board([*base, "--metric", "test_foo"], capsys)
    assert code == 2 and "available:" in err and "test_auc" in err
    code, out, _ = _board([*base, "--rank-test"], capsys)
    assert "the store has 2 dataset(s)" in out and "synthetic: 2" in out


# -- 12. tools that used to do nothing and exit 0 -------------------------------------------------
def test_robust_on_a_non_medmnist_run_uses_the_generic_set(make_cfg, tmp_path):
    from bench.evaluate.robust import evaluate_run

    out = train(make_cfg(["data=synthetic", "model=bccnn", *FAST]))
    rob = evaluate_run(load_record(out.record_path), severities=(1,))
    assert rob["set"] == "generic" and len(rob["corruptions"]) == 13
    assert 0 <= rob["mean_be"] <= 1


# -- 13. one computation behind the leaderboard and the report -------------------------------------
def test_report_and_leaderboard_share_one_bootstrap_and_unit(tmp_path, monkeypatch):
    import bench.report.page as report
    from bench.board import BOOTSTRAP_RESAMPLES
    from bench.commands.leaderboard import parser
    from bench.toolkit import BOOTSTRAP_RESAMPLES as CLI_DEFAULT

    assert BOOTSTRAP_RESAMPLES == CLI_DEFAULT == parser().parse_args([]).n_boot == 1000
    seen = {}
    real = report.board_from_records

    def spy(records, *args, **kwargs):
        seen.update(kwargs)
        return real(records, *args, **kwargs)

    monkeypatch.setattr(report, "board_from_records", spy)
    (tmp_path / "runs").mkdir()
    report.build_report(str(tmp_path / "runs"), str(tmp_path / "r.html"))
    assert seen["n_boot"] == BOOTSTRAP_RESAMPLES


# -- 15. published pages read their figures from their CSVs ------------------------------------
def test_study_notes_render_into_their_readmes_from_the_csvs():
    from pathlib import Path

    from bench.board.notes import render_notes

    root = Path(__file__).resolve().parent.parent
    notes = sorted((root / "scripts" / "study_notes").glob("*.md"))
    assert len(notes) >= 4
    for template in notes:
        readme = root / "results" / template.stem / "README.md"
        rendered = render_notes(template.read_text(), readme.parent).strip()
        assert rendered in readme.read_text(), f"{readme} drifted from {template}"
    retina = (root / "results" / "retinamnist" / "README.md").read_text()
    assert "| -0.004 |" in retina and "| -0.005 |" not in retina


def test_a_placeholder_that_matches_no_single_row_is_an_error(tmp_path):
    from bench.board.notes import render_notes

    (tmp_path / "t.csv").write_text("model,auc\na,0.5\nb,0.7\n")
    assert render_notes("{{t.csv | model=b | auc | .2f}}", tmp_path) == "0.70"
    with pytest.raises(ConfigError, match="2 rows of t.csv match"):
        render_notes("{{t.csv | | auc | .2f}}", tmp_path)


# -- 12. each note once ---------------------------------------------------------------------
def test_md5_and_wandb_offline_notes_are_said_once(make_cfg, tmp_path, caplog, monkeypatch):
    import logging

    from bench.tracking import resolve_wandb_mode

    root = tmp_path / "mm"
    write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2)  # not the official bytes
    args = ["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]]
    with caplog.at_level(logging.WARNING):
        train(make_cfg(args))
        train(make_cfg([*args, "seed=1"]))
    assert caplog.text.count("differs from medmnist's") == 1, caplog.text
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MEDBENCH_WANDB_OFFLINE_HINT_SAID", raising=False)
    monkeypatch.setattr("bench.tracking.wandb_credentials_present", lambda: False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bench.tracking"):
        assert [resolve_wandb_mode("auto") for _ in range(3)] == ["offline"] * 3
    assert caplog.text.count("no API key found") == 1


def test_tta_and_torchscript_export_print_no_lightning_or_deprecation_noise(make_cfg, tmp_path):
    out = train(make_cfg(["data=synthetic", "model=bccnn", *FAST]))
    run_dir = str(load_record(out.record_path).dir)
    for args in (
        ["bench-tta", "--run-dir", run_dir],
        ["bench-export", run_dir, "--format", "torchscript"],
    ):
        proc = run_cli(args, tmp_path, check=True)
        text = proc.stdout + proc.stderr
        for noise in ("GPU available", "litlogger", "FutureWarning", "LeafSpec", "TPU available"):
            assert noise not in text, (args[0], noise, text[-1500:])


def test_a_finished_run_says_when_its_data_changed_since(make_cfg, tmp_path, caplog):
    import logging

    import bench

    root = tmp_path / "mm"
    path = write_medmnist_npz(root / "breastmnist.npz", (28, 28), 2, seed=0)
    out = train(make_cfg(["data=breastmnist", f"data.root={root}", "model=bccnn", *FAST[:3]]))
    run = bench.load_run(load_record(out.record_path).dir)
    run.test_arrays()  # the same bytes: quiet
    assert "not reproducible" not in caplog.text
    write_medmnist_npz(path, (28, 28), 2, seed=5)
    with caplog.at_level(logging.WARNING):
        bench.load_run(run.dir).test_arrays()
    assert "replaced or edited since" in caplog.text
