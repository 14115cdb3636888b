"""Leaderboards: rows per configuration, paper deltas only at the paper's protocol, statistics
that can reach significance, per-class tables, any store renders."""

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from bench.board import board_from_records, build_board
from bench.board.aggregate import rank
from bench.board.compare import compare_all, compare_pair, rank_test
from bench.commands.leaderboard import main
from bench.records import (
    Cost,
    Env,
    RunRecord,
    RunStore,
    compute_config_id,
    compute_run_id,
    load_record,
)
from bench.stats import (
    bootstrap_ci,
    friedman_min_p,
    metric_fn,
    paired_bootstrap,
    wilcoxon_min_p,
)

from conftest import FAST


def _config(model="bccnn", dataset="pneumoniamnist", seed=0, epochs=3, **extra):
    cfg = {
        "seed": seed,
        "data": {"flag": dataset, "size": 28, "batch_size": 128, "augment": "none", "seed": seed},
        "model": {"name": model},
        "task": {"optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001}},
        "trainer": {"max_epochs": epochs, "precision": "32-true"},
    }
    for dotted, value in extra.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def fake_run(
    root,
    model,
    seed,
    auc,
    acc,
    dataset="pneumoniamnist",
    preds=None,
    status="done",
    config=None,
    kind="classification",
    task="binary-class",
    test_last=None,
    **extra,
):
    config = config or _config(model, dataset, seed, **extra)
    run_id = compute_run_id(config)
    rec = RunRecord(
        run_id=run_id,
        status=status,
        config=config,
        config_id=compute_config_id(config),
        dataset=dataset,
        model=model,
        seed=seed,
        epochs=config["trainer"]["max_epochs"],
        precision="32-true",
        task=task,
        kind=kind,
        spec={"input_size": [28, 28], "label_names": ["normal", "pneumonia"]},
        test={"auc": auc, "acc": acc} if kind == "classification" else {"dice": auc, "iou": acc},
        test_last=test_last or {},
        cost=Cost(params_total=2_000_000, gmacs=0.5, train_time_s=10.0),
        env=Env(torch="2.x", device="cpu", git_sha="abc"),
    )
    store = RunStore(root)
    store.write(rec)
    if preds is not None:
        y, p = preds
        pd.DataFrame(
            {"index": np.arange(len(y)), "target": y, "score_0": 1 - p, "score_1": p}
        ).to_csv(store.run_dir(run_id) / "predictions_test.csv", index=False)
    return rec


def _board(root, **kw):
    records, _ = RunStore(root).iter_records()
    return board_from_records(records, **{"n_boot": 0, **kw})


def test_mean_std_over_seeds_equal_pandas_and_unfinished_runs_are_left_out(tmp_path):
    aucs = [0.91, 0.87, 0.95]
    for s, a in enumerate(aucs):
        fake_run(tmp_path, "resnet50", s, a, a - 0.1)
    fake_run(tmp_path, "bccnn", 0, 0.80, 0.7)
    fake_run(tmp_path, "bccnn", 1, 0.1, 0.1, status="failed")
    board = _board(tmp_path)
    table = board.table
    row = table[table.model == "resnet50"].iloc[0]
    assert row["n_seeds"] == 3 and row["n_runs"] == 3
    assert row["test_auc_mean"] == pytest.approx(pd.Series(aucs).mean())
    assert row["test_auc_std"] == pytest.approx(pd.Series(aucs).std())
    assert row["param_count_m"] == pytest.approx(2.0)
    assert table[table.model == "bccnn"].iloc[0]["n_runs"] == 1 and board.n_unfinished == 1


def test_three_different_configs_give_three_rows_with_their_differences(make_cfg, tmp_path):
    """The runs of the issue: lr 0.001 seed 0, lr 0.1 seed 1, augment heavy seed 2."""
    from bench.job.entry import train

    runs = [
        ["task.optimizer.lr=0.001", "seed=0"],
        ["task.optimizer.lr=0.1", "seed=1"],
        ["data.augment=heavy", "seed=2"],
    ]
    for extra in runs:
        cfg = make_cfg(["model=bccnn", "model.width=4", *FAST, "data.n_train=48", *extra])
        assert train(cfg).status == "done"
    board = build_board(str(tmp_path / "runs"), n_boot=0)
    table = board.table
    assert len(table) == 3 and set(table["n_runs"]) == {1}
    assert table.attrs["varying"] == ["data.augment", "task.optimizer.lr"]
    got = {(r["task.optimizer.lr"], r["data.augment"]) for _, r in table.iterrows()}
    assert got == {(0.001, "none"), (0.1, "none"), (0.001, "heavy")}
    assert table["config_id"].nunique() == 3
    # ...and seeds of one configuration still pool into one row
    for seed in (1, 2):
        cfg = make_cfg(["model=bccnn", "model.width=4", *FAST, "data.n_train=48", f"seed={seed}"])
        assert train(cfg).status == "done"
    table = build_board(str(tmp_path / "runs"), n_boot=0).table
    assert len(table) == 3 and sorted(table["n_runs"]) == [1, 1, 3]


def test_model_specific_options_vary_only_within_their_model(tmp_path):
    fake_run(tmp_path, "bccnn", 0, 0.9, 0.8, model__width=4)
    fake_run(tmp_path, "bccnn", 0, 0.8, 0.7, model__width=8)
    fake_run(tmp_path, "resnet18", 0, 0.85, 0.7, model__small_input_stem=True)
    table = _board(tmp_path).table
    assert table.attrs["varying"] == ["model.width"]  # not model.small_input_stem
    assert sorted(table["model.width"].dropna()) == [4, 8]


def _paper_config(make_cfg, epochs=None, model="paper_resnet18"):
    overrides = ["experiment=medmnist_protocol", "data=pneumoniamnist", f"model={model}"]
    if epochs:
        overrides.append(f"trainer.max_epochs={epochs}")
    return OmegaConf.to_container(make_cfg(overrides), resolve=True)


def test_paper_delta_only_at_the_papers_protocol(make_cfg, tmp_path):
    # 100 epochs, 3x3 stem, PyTorch init, Adam 1e-3, x0.1 at 50/75%, batch 128, fp32: a match
    at = _paper_config(make_cfg)
    for s in range(2):
        fake_run(
            tmp_path / "a",
            "resnet18",
            s,
            0.950,
            0.86,
            config={**at, "seed": s},
            test_last={"auc": 0.940 + 0.002 * s, "acc": 0.850},
        )
    # the same model shortened to 2 epochs, and timm's own stem: no delta, a note instead
    short = _paper_config(make_cfg, epochs=2)
    fake_run(tmp_path / "a", "resnet18", 0, 0.94, 0.85, config=short)
    timm_stem = _paper_config(make_cfg, model="resnet18")
    fake_run(tmp_path / "a", "resnet18", 0, 0.93, 0.84, config=timm_stem)
    table = _board(tmp_path / "a", reference=True).table
    matched = table[table["delta_auc"].notna()]
    assert len(matched) == 1
    row = matched.iloc[0]
    assert row["ref_auc"] == pytest.approx(0.944) and row["ref_model"] == "ResNet-18 (28)"
    # the paper selects the best validation epoch: so does the delta (last epoch: recorded apart)
    assert row["delta_auc"] == pytest.approx(0.950 - 0.944)
    assert row["last_auc_mean"] == pytest.approx(0.941)
    notes = set(table["ref_note"].dropna())
    assert "epochs 2≠100" in notes
    assert any("stem 7x7+maxpool≠3x3" in n and "init timm≠torch" in n for n in notes)


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


def _three_models(root, n=300, seeds=3):
    """strong and strong2 are draws of the same model; weak is much weaker."""
    fn = metric_fn("binary-class", "auc")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    for s in range(seeds):
        for model, sig in (("strong", 1.0), ("strong2", 1.0), ("weak", 0.2)):
            p = 1 / (1 + np.exp(-(sig * (2 * y - 1) + rng.normal(0, 1, n))))
            sc = np.stack([1 - p, p], 1)
            fake_run(root, model, s, fn(y, sc), 0.5, preds=(y, p))


def test_ranks_share_when_cis_overlap(tmp_path):
    _three_models(tmp_path)
    table = _board(tmp_path, n_boot=200).table.set_index("model")
    assert table.loc["strong", "rank"] == table.loc["strong2", "rank"] == 1
    assert table.loc["weak", "rank"] == 3
    for m in table.index:
        assert (
            table.loc[m, "test_auc_ci95_lo"]
            <= table.loc[m, "test_auc_mean"]
            <= table.loc[m, "test_auc_ci95_hi"]
        )


def test_compare_pair_runs_wilcoxon_only_when_it_can_reach_significance(tmp_path):
    _three_models(tmp_path)
    board = _board(tmp_path)
    text = compare_pair(board.runs, board.table, "strong", "weak", None, "auc", 300, 0)
    assert "paired bootstrap over 300 test samples" in text and "p = 0.0033" in text
    assert (
        "Wilcoxon over seeds not run: with 3 shared seeds its smallest possible p is 0.250" in text
    )
    assert wilcoxon_min_p(3) == 0.25 and wilcoxon_min_p(6) < 0.05


def test_compare_all_is_a_holm_corrected_matrix(tmp_path):
    _three_models(tmp_path)
    board = _board(tmp_path)
    (pairs,) = compare_all(board.runs, board.table, "test_auc", 300, 0).values()
    assert len(pairs) == 3
    by = {frozenset((r.a, r.b)): r for r in pairs.itertuples()}
    assert by[frozenset(("strong", "weak"))].significant
    assert not by[frozenset(("strong", "strong2"))].significant
    # Holm: the smallest p is multiplied by the number of tests, the others less, never below p
    assert (pairs["p_holm"] >= pairs["p"]).all()
    smallest = pairs.sort_values("p").iloc[0]
    assert smallest["p_holm"] == pytest.approx(min(1.0, 3 * smallest["p"]))


def test_friedman_nemenyi_and_cd_diagram_from_known_ranks(tmp_path):
    # five datasets on which a > b > c > d every time: perfect agreement
    for ds in ("d1", "d2", "d3", "d4", "d5"):
        for model, auc in (("a", 0.95), ("b", 0.90), ("c", 0.85), ("d", 0.80)):
            fake_run(tmp_path, model, 0, auc, 0.8, dataset=ds)
    table = _board(tmp_path).table
    test = rank_test(table, "test_auc")
    assert test.ran and test.friedman_p < 0.01
    assert list(test.ranks.index) == ["a", "b", "c", "d"]
    assert test.ranks.to_dict() == {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    assert test.nemenyi.loc["a", "d"] < 0.05  # the extremes differ
    rc = main(
        ["--runs-dir", str(tmp_path), "--out", str(tmp_path / "lb"), "--n-boot", "0", "--rank-test"]
    )
    assert rc == 0 and (tmp_path / "lb" / "cd_diagram.png").stat().st_size > 1000
    assert (tmp_path / "lb" / "nemenyi.csv").exists()


def test_a_rank_test_that_cannot_reach_significance_is_not_run(tmp_path):
    for ds in ("d1", "d2"):
        for model, auc in (("a", 0.95), ("b", 0.90), ("c", 0.85)):
            fake_run(tmp_path, model, 0, auc, 0.8, dataset=ds)
    test = rank_test(_board(tmp_path).table, "test_auc")
    assert not test.ran
    assert f"smallest possible p is {friedman_min_p(2, 3):.3f}" in test.note
    one = rank_test(_board(tmp_path).table[lambda t: t.dataset == "d1"], "test_auc")
    assert not one.ran and "needs >= 2 datasets" in one.note


def test_ensemble_row_is_the_average_of_the_seeds_probabilities(tmp_path):
    from bench.metrics import classification_metrics

    _three_models(tmp_path)
    table = _board(tmp_path, ensembles=True).table
    ens = table[(table.model == "weak") & table.ensemble].iloc[0]
    runs = [r for r in RunStore(tmp_path).iter_records()[0] if r.model == "weak"]
    probs = [pd.read_csv(r.dir / "predictions_test.csv") for r in runs]
    avg = np.mean([p[["score_0", "score_1"]].to_numpy() for p in probs], axis=0)
    by_hand = classification_metrics(probs[0]["target"].to_numpy(), avg, "binary-class")
    assert ens["test_auc_mean"] == pytest.approx(by_hand["auc"])
    assert ens["n_members"] == 3


def test_rank_ties_by_ci_overlap_and_lower_is_better():
    board = pd.DataFrame(
        {
            "dataset": ["d"] * 3,
            "kind": ["classification"] * 3,
            "model": ["a", "b", "c"],
            "test_auc_mean": [0.90, 0.89, 0.70],
            "test_auc_ci95_lo": [0.86, 0.85, 0.65],
            "test_auc_ci95_hi": [0.94, 0.93, 0.75],
            "test_ece_mean": [0.2, 0.05, 0.1],
        }
    )
    assert rank(board).set_index("model")["rank"].to_dict() == {"a": 1, "b": 1, "c": 3}
    assert rank(board, "test_ece").set_index("model")["rank"].to_dict() == {"b": 1, "c": 2, "a": 3}


def test_per_class_csv_is_the_mean_over_runs(tmp_path):
    for s, (prec, rec) in enumerate(((0.8, 0.6), (0.6, 0.8))):
        r = fake_run(tmp_path, "bccnn", s, 0.9, 0.8)
        r.per_class = {
            "test": [
                {
                    "class": "normal",
                    "precision": prec,
                    "recall": rec,
                    "specificity": 0.9,
                    "f1": 0.7,
                    "support": 234,
                },
                {
                    "class": "pneumonia",
                    "precision": 0.9,
                    "recall": 0.9,
                    "specificity": rec,
                    "f1": 0.9,
                    "support": 390,
                },
            ]
        }
        RunStore(tmp_path).write(r)
    assert main(["--runs-dir", str(tmp_path), "--out", str(tmp_path / "lb"), "--n-boot", "0"]) == 0
    pc = pd.read_csv(tmp_path / "lb" / "per_class.csv").set_index("class")
    assert pc.loc["normal", "precision_mean"] == pytest.approx(0.7)
    assert pc.loc["normal", "precision_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1), abs=1e-5)
    assert pc.loc["pneumonia", "support"] == 390


def test_v1_records_on_disk_keep_working(tmp_path):
    old = {
        "schema_version": 1,
        "run_id": "old-1",
        "status": "done",
        "dataset": "pneumoniamnist",
        "task": "binary-class",
        "model": "bccnn",
        "scheme": "scratch",
        "epochs": 2,
        "seed": 0,
        "precision": "32-true",
        "spec": {"input_size": [28, 28], "task": "binary-class"},
        "test": {"auc": 0.9, "acc": 0.8},
        "val": {"auc": 0.91},
        "config": _config(),
        "cost": {"params_total": 1000, "gmacs": 0.1, "train_time_s": 3.0, "unknown_key": 1},
        "env": {"torch": "2.x", "device": "cpu"},
    }
    (tmp_path / "old-1").mkdir()
    (tmp_path / "old-1" / "record.json").write_text(json.dumps(old))
    rec = load_record(tmp_path / "old-1")
    assert rec.schema_version == 2 and rec.kind == "classification"
    assert rec.config_id == compute_config_id(_config())
    table = _board(tmp_path).table
    assert len(table) == 1 and table.loc[0, "test_auc_mean"] == 0.9


def test_unreadable_record_is_reported_not_fatal(tmp_path, capsys):
    fake_run(tmp_path / "runs", "bccnn", 0, 0.9, 0.8)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "record.json").write_text('{"run_id": "x", "stat')
    board = build_board(str(tmp_path / "runs"), n_boot=0)
    assert len(board.table) == 1 and len(board.problems) == 1 and "broken" in board.problems[0]
    rc = main(
        ["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"), "--n-boot", "0"]
    )
    out = capsys.readouterr()
    assert rc == 0 and "skipped unreadable record" in out.err
    csv = (tmp_path / "lb" / "leaderboard.csv").read_text()
    assert "bccnn" in csv and "," in csv and "2,000" not in csv
    assert (tmp_path / "lb" / "leaderboard.md").exists()
    assert (tmp_path / "lb" / "by_dataset" / "pneumoniamnist.csv").exists()


@pytest.mark.parametrize("store", ["segmentation", "3d", "mixed", "failed_only"])
def test_any_store_renders_a_leaderboard(tmp_path, store, capsys):
    if store in ("segmentation", "mixed"):
        fake_run(
            tmp_path,
            "unet",
            0,
            0.7,
            0.6,
            dataset="synthetic_seg",
            kind="segmentation",
            task="segmentation",
        )
        fake_run(
            tmp_path,
            "unet",
            1,
            0.8,
            0.65,
            dataset="synthetic_seg",
            kind="segmentation",
            task="segmentation",
        )
    if store in ("3d", "mixed"):
        fake_run(tmp_path, "cnn3d", 0, 0.8, 0.7, dataset="adrenalmnist3d")
    if store == "mixed":
        fake_run(tmp_path, "bccnn", 0, 0.9, 0.8)
    fake_run(tmp_path, "bccnn", 3, 0.0, 0.0, status="failed")
    fake_run(tmp_path, "bccnn", 4, 0.0, 0.0, status="interrupted")
    rc = main(
        [
            "--runs-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "lb"),
            "--n-boot",
            "50",
            "--reference",
        ]
    )
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    if store == "failed_only":
        assert rc == 1 and "no finished runs" in out.err
        return
    assert rc == 0
    table = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    if store in ("segmentation", "mixed"):
        seg = table[table.dataset == "synthetic_seg"].iloc[0]
        assert seg["rank_by"] == "test_dice" and seg["test_dice_mean"] == pytest.approx(0.75)


def test_wandb_aggregate_run_offline_and_name_checked(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path / "runs", "bccnn", 0, 0.9, 0.8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    rc = main(["--runs-dir", "runs", "--out", "lb", "--n-boot", "0", "--wandb"])
    assert rc == 0
    assert len(list(tmp_path.rglob("offline-run-*"))) == 1
    assert list(tmp_path.rglob("media/table/leaderboard*.table.json"))
    assert main(["--runs-dir", "runs", "--name", "../escape", "--n-boot", "0"]) == 2
    assert "plain folder name" in capsys.readouterr().err


def test_an_inert_new_option_does_not_split_a_configuration():
    old = _config()
    new = _config(
        probe__kind=None,
        probe__k=11,
        eval__tta="none",
        data__sampler="random",
        data__cv__folds=None,
        data__cv__fold=0,
        task__class_weights="none",
        data__fraction=None,
    )
    assert compute_config_id(old) == compute_config_id(new)
    assert compute_run_id(old) == compute_run_id(new)
    on = _config(eval__tta="flips")
    assert compute_config_id(on) != compute_config_id(old)
    assert compute_config_id(_config(seed=3)) == compute_config_id(old)  # seeds share a row


def _datasets_published(out) -> tuple[set, set]:
    """The data sets of ``out``'s leaderboard.csv and of its by_dataset/ files."""
    table = pd.read_csv(out / "leaderboard.csv")
    files = {p.stem for p in (out / "by_dataset").glob("*.csv")}
    return set(table["dataset"]), files


def test_publications_into_one_folder_never_mix_stores(tmp_path):
    """Issue 34 #10: a later publication leaves no stale per-data-set file, and two at once
    leave the files of one of them, never a mix."""
    import subprocess
    import sys
    from pathlib import Path

    for ds in ("pneumoniamnist", "breastmnist"):
        fake_run(tmp_path / "a", "bccnn", 0, 0.9, 0.8, dataset=ds)
    fake_run(tmp_path / "b", "bccnn", 0, 0.7, 0.6, dataset="retinamnist")
    out = tmp_path / "lb"
    for store in ("a", "b"):
        assert main(["--runs-dir", str(tmp_path / store), "--out", str(out), "--n-boot", "0"]) == 0
    assert _datasets_published(out) == ({"retinamnist"}, {"retinamnist"})

    both = tmp_path / "both"
    tool = str(Path(sys.executable).parent / "bench-leaderboard")
    argv = [tool, "--n-boot", "0", "--out", str(both)]
    procs = [
        subprocess.Popen([*argv, "--runs-dir", str(tmp_path / s)], stdout=subprocess.DEVNULL)
        for s in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    table_sets, file_sets = _datasets_published(both)
    assert table_sets == file_sets
    assert table_sets in ({"retinamnist"}, {"pneumoniamnist", "breastmnist"})
