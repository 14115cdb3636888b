"""Published pages: every figure comes from a CSV; the cross-data-set page; adding rows to a
study trained elsewhere; a study row's measured cost."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.board.cross import publish_cross, study_rows
from bench.board.outputs import markdown
from bench.board.publish import legacy_comparison, merge_legacy
from bench.speed.eta import parse_row
from bench.stats import friedman_min_p, friedman_nemenyi

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
FIGURE = re.compile(r"(?<![\w.])[-+−]?\d+\.\d+(?![\w.%])")
# stated criteria and recipe constants, not measurements: "within 0.02 of the paper", LR x0.1, ...
CRITERIA = {"0.02", "0.05", "0.1", "0.25", "0.5", "1.5"}
# generated from the run records by bench/board/outputs.py (the store, not a CSV)
GENERATED_LINES = ("- compute:", "Produced ", "- commit(s)", "- hardware:")


def _cells(paths: list[Path]) -> set[str]:
    """Every numeric cell of ``paths`` as it could be printed: 1-4 decimals, also /60 (min)."""
    out: set[str] = set()
    for path in paths:
        df = pd.read_csv(path, comment="#")
        for col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce").dropna().to_numpy(float)
            for v in (*values, *(values / 60)):
                for d in range(1, 5):
                    out.add(format(v, f".{d}f"))
                    out.add(format(v, f"+.{d}f"))
    return out


def _figures(text: str) -> list[str]:
    text = re.sub(r"`[^`]*`", "", text)  # commands, paths, option values
    lines = [ln for ln in text.splitlines() if not ln.startswith(GENERATED_LINES)]
    return [m.group().replace("−", "-") for m in FIGURE.finditer("\n".join(lines))]


def _study_pages() -> list[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/leaderboard.csv"))


@pytest.mark.parametrize("study", _study_pages(), ids=lambda p: p.name)
def test_every_figure_on_a_study_page_is_a_cell_of_a_csv(study):
    """No hand-typed figure: each decimal number on results/<study>/README.md equals, at its
    printed precision, a cell of the study's CSVs (or of the CSVs its notes quote: the other
    studies' leaderboards, the paper's table, the measured costs in results/eta/)."""
    sources = [
        *study.rglob("*.csv"),
        *RESULTS.glob("*/leaderboard.csv"),
        RESULTS / "reference" / "medmnist_v2.csv",
        *RESULTS.glob("eta/*.csv"),
    ]
    cells = _cells(sources)
    typed = [f for f in _figures((study / "README.md").read_text()) if f not in cells | CRITERIA]
    assert not typed, f"{study.name}/README.md has figures in no CSV: {typed}"


def test_the_cross_data_set_page_is_generated_from_the_study_csvs():
    page = (RESULTS / "README.md").read_text()
    cells = _cells([*RESULTS.glob("*.csv"), *RESULTS.glob("*/leaderboard.csv")])
    typed = [f for f in _figures(page) if f not in cells | CRITERIA]
    assert not typed, f"results/README.md has figures in no CSV: {typed}"
    for study in ("retinamnist", "pneumoniamnist", "adrenalmnist3d", "isbi2012_em"):
        assert f"({study}/README.md)" in page, study  # every row links to its study
    assert "**mean rank**" in page and "Friedman" in page


def _board(dataset: str, aucs: dict[str, float], study_dir: Path) -> None:
    rows = [
        {
            "dataset": dataset,
            "config_id": f"{dataset[:3]}{i}",
            "kind": "classification",
            "model": model,
            "scheme": "scratch",
            "epochs": 100,
            "ensemble": False,
            "n_seeds": 3,
            "test_auc_mean": auc,
            "test_auc_std": 0.01,
            "test_acc_mean": 0.5,
            "test_acc_std": 0.01,
            "param_count_m": 1.0,
            "train_time_s": 60.0,
        }
        for i, (model, auc) in enumerate(aucs.items())
    ]
    study_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(study_dir / "leaderboard.csv", index=False)


def test_cross_page_mean_ranks_friedman_and_cd_diagram_by_hand(tmp_path):
    # three data sets on which BCCNN always wins and Xception always loses
    for name, aucs in {
        "amnist": {"bccnn": 0.9, "mobilenet": 0.8, "xception": 0.7},
        "bmnist": {"bccnn": 0.8, "mobilenet": 0.75, "xception": 0.6},
        "cmnist": {"bccnn": 0.7, "mobilenet": 0.72, "xception": 0.5},
    }.items():
        _board(name, aucs, tmp_path / name)
    written = publish_cross(tmp_path, "bench-leaderboard --cross-dataset x --rank-test")
    ranks = pd.read_csv(tmp_path / "mean_ranks.csv").set_index("label")["mean_rank"]
    # ranks per set: bccnn 1,1,2; mobilenet 2,2,1; xception 3,3,3
    assert ranks.to_dict() == pytest.approx(
        {"BCCNN": 4 / 3, "MobileNetV2": 5 / 3, "Xception": 3}, abs=1e-5
    )
    from scipy.stats import friedmanchisquare

    _, p = friedmanchisquare([0.9, 0.8, 0.7], [0.8, 0.75, 0.72], [0.7, 0.6, 0.5])
    page = (tmp_path / "README.md").read_text()
    assert f"p = {p:.4f}" in page
    # the test's figures are a CSV too, so the page quotes no figure of its own
    friedman = pd.read_csv(tmp_path / "friedman.csv").iloc[0]
    assert friedman["p"] == pytest.approx(p, rel=1e-5) and friedman["n_datasets"] == 3
    assert friedman["min_possible_p"] == pytest.approx(friedman_min_p(3, 3), rel=1e-5)
    assert friedman_min_p(3, 3) < 0.05 and "no difference can be significant" not in page
    assert (tmp_path / "cd_diagram.png") in written and "![critical-difference" in page
    assert (
        "| **mean rank** | 1.33 | 3.00 | 1.67 |" in page
    )  # card order: BCCNN, Xception, MobileNetV2


def test_friedman_that_cannot_reach_significance_runs_when_asked_and_says_so():
    matrix = pd.DataFrame({"a": [0.9, 0.8], "b": [0.8, 0.7], "c": [0.7, 0.6]}, index=["x", "y"])
    assert not friedman_nemenyi(matrix, "test_auc").ran
    forced = friedman_nemenyi(matrix, "test_auc", always=True)
    assert forced.ran and forced.friedman_p >= friedman_min_p(2, 3)
    assert "no difference can be significant" in forced.note


def test_study_rows_leave_out_ensembles_and_cross_validation(tmp_path):
    _board("amnist", {"bccnn": 0.9, "mobilenet": 0.8}, tmp_path / "a")
    df = pd.read_csv(tmp_path / "a" / "leaderboard.csv")
    extra = df.iloc[:1].assign(ensemble=True, test_auc_mean=0.99)
    cv = df.iloc[:1].assign(cv_folds=5.0, test_auc_mean=0.98)
    pd.concat([df.assign(cv_folds=np.nan), extra, cv]).to_csv(
        tmp_path / "a" / "leaderboard.csv", index=False
    )
    rows = study_rows(tmp_path)
    assert sorted(rows["test_auc_mean"]) == [0.8, 0.9]


def test_legacy_rows_stay_marked_until_runs_of_their_model_replace_them(tmp_path):
    from bench.board.aggregate import rank

    old = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "config_id": ["a1", "b1"],
            "kind": "classification",
            "model": ["a", "b"],
            "scheme": "scratch",
            "ensemble": False,
            "test_auc_mean": [0.9, 0.7],
            "test_auc_ci95_lo": [0.88, 0.68],
            "test_auc_ci95_hi": [0.92, 0.72],
            "runs_commit": "170c3d9f7f65",
        }
    )
    old.to_csv(tmp_path / "legacy.csv", index=False)
    new = rank(
        old.iloc[1:].drop(columns="runs_commit").assign(
            config_id="c1", model="c", test_auc_mean=0.95, test_auc_ci95_lo=0.94,
            test_auc_ci95_hi=0.96,
        )
    )  # fmt: skip
    merged = merge_legacy(new, tmp_path / "legacy.csv", None)
    assert list(merged["model"]) == ["c", "a", "b"] and list(merged["rank"]) == [1, 2, 3]
    assert list(merged["runs_in_repo"]) == [True, False, False]
    assert "†" in markdown(merged)
    # runs of model "a" (any config id: retrained on another machine) replace its legacy row
    again = rank(old.iloc[:1].drop(columns="runs_commit").assign(config_id="a2"))
    merged = merge_legacy(again, tmp_path / "legacy.csv", None)
    assert sorted(merged["config_id"]) == ["a2", "b1"]
    assert merged.set_index("config_id")["runs_in_repo"].to_dict() == {"a2": True, "b1": False}


def test_a_retrained_row_is_set_against_its_legacy_row_within_the_seed_spread(tmp_path):
    """legacy_vs_retrained.csv by hand: difference of means, the larger std as the spread, and
    agreement per metric; rows still legacy, and ensembles, are not compared."""
    cols = {"dataset": "d", "scheme": "scratch", "kind": "classification", "n_runs": 3}
    old = pd.DataFrame(
        {
            **cols,
            "model": ["a", "a", "b"],
            "ensemble": [False, True, False],
            "test_auc_mean": [0.90, 0.95, 0.70],
            "test_auc_std": [0.01, np.nan, 0.02],
            "test_acc_mean": [0.80, 0.85, 0.60],
            "test_acc_std": [0.02, np.nan, 0.01],
            "runs_commit": "170c3d9f7f65",
        }
    )
    old.to_csv(tmp_path / "legacy.csv", index=False)
    new = pd.DataFrame(
        {
            **cols,
            "model": ["a", "a"],
            "ensemble": [False, True],
            "test_auc_mean": [0.915, 0.96],
            "test_auc_std": [0.03, np.nan],
            "test_acc_mean": [0.75, 0.86],
            "test_acc_std": [0.01, np.nan],
        }
    )
    table = merge_legacy(new, tmp_path / "legacy.csv", None)
    out = legacy_comparison(table, tmp_path / "legacy.csv", None)
    assert list(out["model"]) == ["a"]  # b is still legacy; the ensembles are not compared
    row = out.iloc[0]
    assert row["diff_test_auc"] == pytest.approx(0.015)
    assert row["seed_spread_test_auc"] == pytest.approx(0.03) and row["agree_test_auc"]
    assert row["diff_test_acc"] == pytest.approx(-0.05)
    assert row["seed_spread_test_acc"] == pytest.approx(0.02) and not row["agree_test_acc"]
    assert row["legacy_commit"] == "170c3d9f7f65"


def test_keep_published_is_retired_with_the_way_to_add_runs(tmp_path):
    proc = run_cli(["bench-leaderboard", "--keep-published", "--publish"], tmp_path)
    assert proc.returncode == 2 and "--add-runs" in proc.stderr and "Traceback" not in proc.stderr


def test_eta_rows_parse_and_name_the_mistake():
    assert parse_row("pneumoniamnist:resnet50") == ("pneumoniamnist", "resnet50", [])
    assert parse_row("adrenalmnist3d:cnn3d:data.size=64,seed=1") == (
        "adrenalmnist3d",
        "cnn3d",
        ["data.size=64", "seed=1"],
    )
    with pytest.raises(ValueError, match="write data:model"):
        parse_row("resnet50")


def test_eta_of_a_row_scales_its_measured_rates_to_the_recipe(tmp_path, monkeypatch):
    import bench.job.cpu_fast as cpu_fast
    from bench.speed.eta import fits, measure_row

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cost = measure_row("synthetic", "bccnn", None, ["trainer.max_epochs=7"], train_batches=2)
    assert cost.epochs == 7 and cost.n_train > 0 and cost.train_samples_per_sec > 0
    epoch = cost.n_train / cost.train_samples_per_sec + cost.n_val / cost.infer_samples_per_sec
    assert cost.epoch_s == pytest.approx(epoch, abs=0.06)
    total = 7 * epoch + 2 * (cost.n_val + cost.n_test) / cost.infer_samples_per_sec
    assert cost.eta_h_per_seed == pytest.approx(total / 3600, abs=0.006)
    assert fits(cost, 1.5) and "data=synthetic model=bccnn" in cost.command
    assert (cost.preset, cost.setting) == ("fp32", "32-true NCHW")
    # the row says what cpu_fast resolved to on the CPU measured (here: one with native bf16)
    monkeypatch.setattr(cpu_fast, "cpu_bf16_native", lambda: True)
    monkeypatch.setattr(cpu_fast, "cpu_capability", lambda: "AVX512")
    fast = measure_row("synthetic", "bccnn", None, ["trainer.max_epochs=7"], 2, "cpu_fast")
    assert (fast.preset, fast.setting) == ("cpu_fast", "bf16-mixed channels-last")


def test_eta_of_an_unknown_model_is_one_line(tmp_path):
    from conftest import run_cli

    proc = run_cli(
        ["bench-speed", "eta", "synthetic:nosuchmodel", "--out", str(tmp_path)], tmp_path
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Could not find 'model/nosuchmodel'" in lines[0], proc.stderr


def _published_csvs(results: Path) -> dict[str, str]:
    """Every CSV --publish-all writes: the studies' tables and the cross-data-set files."""
    from bench.board.publish import read_manifest

    names = {}
    for study in read_manifest(results):
        folder = results / study.name
        for path in folder.rglob("*.csv"):
            rel = path.relative_to(results)
            if rel.parts[1] in ("runs",) or path.name in ("legacy.csv", "plain_loop.csv"):
                continue
            names[str(rel)] = path.read_text()
    for name in ("cross_dataset.csv", "mean_ranks.csv", "friedman.csv", "nemenyi.csv",
                 "wilcoxon.csv"):  # fmt: skip
        if (results / name).exists():
            names[name] = (results / name).read_text()
    return names


def test_published_csvs_are_rebuilt_from_the_committed_runs_alone(tmp_path):
    """Copy results/ without a single generated CSV, rebuild with --publish-all: every committed
    CSV comes back unchanged (the READMEs differ only in their timestamps)."""
    import shutil

    from bench.commands.leaderboard import main

    results = ROOT / "results"
    committed = _published_csvs(results)
    assert any(name.startswith("breastmnist/") for name in committed)
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    for name in committed:  # nothing generated survives: each file must be rebuilt
        (copy / name).unlink()
    assert main(["--publish-all", str(copy)]) == 0
    rebuilt = _published_csvs(copy)
    assert sorted(rebuilt) == sorted(committed)
    for name, text in committed.items():
        assert rebuilt[name] == text, f"{name} differs when rebuilt from the committed runs"
    stamp = re.compile(r"\d{4}-\d\d-\d\dT[\d:+]+|aggregated at commit \w+|publish-all \S+")
    for page in [Path("README.md"), *(Path(s) / "README.md" for s in ("breastmnist",))]:
        assert stamp.sub("", (copy / page).read_text()) == stamp.sub(
            "", (results / page).read_text()
        )


def test_add_runs_copies_records_and_predictions_never_weights(tmp_path):
    import shutil

    from bench.board.publish import add_runs

    store = tmp_path / "runs"
    run = store / "x_bccnn-s0-abc"
    (run / "checkpoints").mkdir(parents=True)
    src = next((ROOT / "results" / "breastmnist" / "runs").iterdir())
    for f in src.iterdir():
        shutil.copy(f, run / f.name)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    added = add_runs([store], tmp_path / "study")
    assert added == [src.name]  # stored under the record's run id
    copied = tmp_path / "study" / "runs" / added[0]
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in src.iterdir())
    assert not (copied / "checkpoints").exists()
