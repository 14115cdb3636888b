import json

import numpy as np
import pandas as pd
import pytest

from bench.leaderboard import add_reference, aggregate, build, compare, main, rank, records_frame
from bench.records import RunStore
from bench.stats import bootstrap_ci, metric_fn, paired_bootstrap


def _fake_run(
    root,
    run_id,
    model,
    seed,
    auc,
    acc,
    dataset="pneumoniamnist",
    size=28,
    preds=None,
    status="done",
):
    d = root / run_id
    d.mkdir(parents=True)
    rec = {
        "run_id": run_id,
        "status": status,
        "dataset": dataset,
        "task": "binary-class",
        "model": model,
        "scheme": "scratch",
        "epochs": 3,
        "seed": seed,
        "precision": "32-true",
        "spec": {"input_size": [size, size]},
        "test": {"auc": auc, "acc": acc},
        "cost": {"params_total": 2_000_000, "gmacs": 0.5, "train_time_s": 10.0},
        "env": {"torch": "2.x", "device": "cpu", "git_sha": "abc"},
    }
    (d / "record.json").write_text(json.dumps(rec))
    if preds is not None:
        y, p = preds
        pd.DataFrame(
            {"index": np.arange(len(y)), "target": y, "score_0": 1 - p, "score_1": p}
        ).to_csv(d / "predictions_test.csv", index=False)
    return rec


def test_mean_std_over_seeds_equal_pandas(tmp_path):
    aucs = [0.91, 0.87, 0.95]
    for s, a in enumerate(aucs):
        _fake_run(tmp_path, f"r50-{s}", "resnet50", s, a, a - 0.1)
    _fake_run(tmp_path, "bc-0", "bccnn", 0, 0.80, 0.7)
    _fake_run(tmp_path, "failed-0", "bccnn", 1, 0.1, 0.1, status="failed")
    df = records_frame(RunStore(tmp_path).iter_records()[0])
    board = aggregate(df, n_boot=0)
    row = board[board.model == "resnet50"].iloc[0]
    assert row["n_seeds"] == 3
    assert row["test_auc_mean"] == pytest.approx(pd.Series(aucs).mean())
    assert row["test_auc_std"] == pytest.approx(pd.Series(aucs).std())
    assert row["param_count_m"] == pytest.approx(2.0)
    assert board[board.model == "bccnn"].iloc[0]["n_seeds"] == 1  # the failed run is not counted


def test_reference_and_delta(tmp_path):
    _fake_run(tmp_path, "a", "resnet50", 0, 0.95, 0.86)
    _fake_run(tmp_path, "b", "bccnn", 0, 0.90, 0.80)
    board = add_reference(aggregate(records_frame(RunStore(tmp_path).iter_records()[0]), n_boot=0))
    r50 = board[board.model == "resnet50"].iloc[0]
    assert r50["ref_auc"] == pytest.approx(0.948) and r50["ref_acc"] == pytest.approx(0.854)
    assert r50["delta_auc"] == pytest.approx(0.95 - 0.948)
    assert r50["delta_acc"] == pytest.approx(0.86 - 0.854)
    assert np.isnan(board[board.model == "bccnn"].iloc[0]["ref_auc"])


def _preds(n, signal, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, n))))
    return y, np.stack([1 - p, p], 1)


def test_bootstrap_ci_contains_point_shrinks_and_reproduces():
    fn = metric_fn("binary-class", "auc")
    small = [_preds(100, 1.0, s) for s in range(2)]
    big = [_preds(1600, 1.0, s) for s in range(2)]
    p, lo, hi = bootstrap_ci(small, fn, n_boot=300, seed=0)
    assert lo <= p <= hi
    _, lo2, hi2 = bootstrap_ci(big, fn, n_boot=300, seed=0)
    assert (hi2 - lo2) < (hi - lo) / 2
    assert bootstrap_ci(small, fn, n_boot=300, seed=0) == (p, lo, hi)
    assert bootstrap_ci(small, fn, n_boot=300, seed=1) != (p, lo, hi)


def test_paired_bootstrap_detects_a_better_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(0, 1, 400))))
    bad = 1 / (1 + np.exp(-(0.2 * (2 * y - 1) + rng.normal(0, 1, 400))))
    fn = metric_fn("binary-class", "auc")
    diff, p = paired_bootstrap(
        [(y, np.stack([1 - good, good], 1))], [(y, np.stack([1 - bad, bad], 1))], fn, n_boot=500
    )
    assert diff > 0.2 and p < 0.01
    same, p_same = paired_bootstrap(
        [(y, np.stack([1 - good, good], 1))], [(y, np.stack([1 - good, good], 1))], fn, n_boot=200
    )
    assert same == 0 and p_same == 1.0


def test_ranks_share_when_cis_overlap_and_compare_cli(tmp_path):
    fn = metric_fn("binary-class", "auc")
    for s in range(3):
        for model, sig in (("strong", 2.0), ("strong2", 1.95), ("weak", 0.3)):
            y, sc = _preds(300, sig, 10 * s + len(model))
            _fake_run(tmp_path, f"{model}-{s}", model, s, fn(y, sc), 0.5, preds=(y, sc[:, 1]))
    board = rank(
        aggregate(
            records_frame(RunStore(tmp_path).iter_records()[0]), ci_metrics=["auc"], n_boot=200
        )
    ).set_index("model")
    assert board.loc["strong", "rank"] == board.loc["strong2", "rank"] == 1
    assert board.loc["weak", "rank"] == 3
    for m in board.index:
        assert (
            board.loc[m, "test_auc_ci95_lo"]
            <= board.loc[m, "test_auc_mean"]
            <= board.loc[m, "test_auc_ci95_hi"]
        )


def test_compare_reports_paired_bootstrap_and_wilcoxon(tmp_path):
    fn = metric_fn("binary-class", "auc")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    for s in range(3):
        for model, sig in (("strong", 2.0), ("weak", 0.3)):
            p = 1 / (1 + np.exp(-(sig * (2 * y - 1) + rng.normal(0, 1, 300))))
            sc = np.stack([1 - p, p], 1)
            _fake_run(tmp_path, f"{model}-{s}", model, s, fn(y, sc), 0.5, preds=(y, p))
    text = compare(
        records_frame(RunStore(tmp_path).iter_records()[0]), "strong", "weak", None, "auc", 300, 0
    )
    assert "paired bootstrap over 300 test samples" in text and "p = 0.0033" in text
    assert "Wilcoxon signed-rank over 3 seeds" in text


def test_rank_ties_by_ci_overlap():
    board = pd.DataFrame(
        {
            "dataset": ["d"] * 3,
            "model": ["a", "b", "c"],
            "test_auc_mean": [0.90, 0.89, 0.70],
            "test_auc_ci95_lo": [0.86, 0.85, 0.65],
            "test_auc_ci95_hi": [0.94, 0.93, 0.75],
        }
    )
    ranked = rank(board).set_index("model")["rank"].to_dict()
    assert ranked == {"a": 1, "b": 1, "c": 3}


def test_unreadable_record_is_reported_not_fatal(tmp_path, capsys):
    _fake_run(tmp_path / "runs", "ok", "bccnn", 0, 0.9, 0.8)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "record.json").write_text('{"run_id": "x", "stat')
    board, problems = build(str(tmp_path / "runs"), n_boot=0)
    assert len(board) == 1 and len(problems) == 1 and "broken" in problems[0]
    rc = main(
        ["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"), "--n-boot", "0"]
    )
    out = capsys.readouterr()
    assert rc == 0 and "skipped unreadable record" in out.err
    csv = (tmp_path / "lb" / "leaderboard.csv").read_text()
    assert "bccnn" in csv and "," in csv and "2,000" not in csv
    assert (tmp_path / "lb" / "leaderboard.md").exists()
    assert (tmp_path / "lb" / "by_dataset" / "pneumoniamnist.csv").exists()


def test_wandb_aggregate_run_offline_and_name_checked(tmp_path, monkeypatch, capsys):
    _fake_run(tmp_path / "runs", "ok", "bccnn", 0, 0.9, 0.8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    rc = main(["--runs-dir", "runs", "--out", "lb", "--n-boot", "0", "--wandb"])
    assert rc == 0
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1
    assert list(tmp_path.rglob("media/table/leaderboard*.table.json"))
    assert main(["--runs-dir", "runs", "--name", "../escape", "--n-boot", "0"]) == 2
    assert "plain folder name" in capsys.readouterr().err
