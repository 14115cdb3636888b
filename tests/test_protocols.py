"""Evaluation protocols: k-fold CV, hyperparameter search, probes, data efficiency, imbalance."""

import shutil
from functools import partial

import numpy as np
import pytest
import torch

from bench.data.folds import fold_assignment
from bench.job.entry import train
from bench.records import RunStore, load_record

from conftest import FAST, PNEUMONIA, needs_pneumonia, run_cli
from helpers import write_medmnist_npz


def test_folds_are_disjoint_stratified_seeded_and_grouped():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    folds = fold_assignment(y, 5, seed=0)
    assert set(folds) == {0, 1, 2, 3, 4}  # every sample in exactly one fold
    for k in range(5):
        share = np.bincount(y[folds == k], minlength=3) / (folds == k).sum()
        assert np.allclose(share, np.bincount(y) / len(y), atol=0.02)  # stratified
    assert np.array_equal(folds, fold_assignment(y, 5, seed=0))  # the same for every model
    assert not np.array_equal(folds, fold_assignment(y, 5, seed=1))
    patients = np.repeat(np.arange(120), 5)  # five images per patient
    grouped = fold_assignment(y, 5, seed=0, groups=patients)
    for p in range(120):
        assert len(set(grouped[patients == p])) == 1  # no patient in two folds


def test_cv_runs_record_their_fold_and_share_one_row(make_cfg, tmp_path):
    from bench.board import build_board

    digests = {}
    for width in (4, 8):  # two models
        for fold in range(2):
            cfg = make_cfg(
                [
                    "model=bccnn",
                    f"model.width={width}",
                    "model.hidden=[16]",
                    *FAST,
                    "data.cv.folds=2",
                    f"data.cv.fold={fold}",
                ]
            )
            outcome = train(cfg)
            assert outcome.status == "done", outcome.error
            rec = load_record(outcome.record_path)
            assert rec.cv["folds"] == 2 and rec.cv["fold"] == fold
            assert rec.split_sizes["val"] == rec.cv["n_val"] and rec.split_sizes["test"] == 48
            digests.setdefault(fold, set()).add(rec.cv["val_digest"])
    assert all(len(d) == 1 for d in digests.values())  # both models saw the same folds
    assert len({next(iter(d)) for d in digests.values()}) == 2  # and the folds differ
    table = build_board(str(tmp_path / "runs"), n_boot=0, ensembles=True).table
    cv_rows = table[~table.ensemble.astype(bool)]
    assert sorted(cv_rows.n_runs) == [2, 2] and set(cv_rows.n_folds) == {2}
    assert table.ensemble.sum() == 2  # the fold models' ensemble on the test split, per model


def test_a_cv_fold_out_of_range_is_one_line(make_cfg):
    from bench.errors import ConfigError

    cfg = make_cfg(["model=bccnn", *FAST, "data.cv.folds=3", "data.cv.fold=3"])
    outcome = train(cfg)
    assert outcome.status == "failed" and "data.cv.fold must be in 0..2" in outcome.error
    with pytest.raises(ConfigError, match="rarest class"):
        fold_assignment(np.array([0] * 10 + [1] * 2), 5)


def test_folder_cv_never_splits_a_patient(tmp_path):
    from PIL import Image

    from bench.data.folder import ImageFolderDataModule

    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for p in range(12):
            for k in range(3):
                arr = rng.integers(0, 255, (16, 16), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / "img" / cls / f"{cls}-p{p:02d}-{k}.png")
    seen = {}
    for fold in range(3):
        dm = ImageFolderDataModule(
            root=str(tmp_path / "img"),
            size=16,
            group_regex=r"-(p\d+)-",
            cache_dir=str(tmp_path / "cache"),
            cv={"folds": 3, "fold": fold, "seed": 0},
        )
        dm.setup()
        assert dm.cv_info["grouped"]
        seen[fold] = dm.cv_info["n_val"]
    assert sum(seen.values()) == len(dm.prepared_splits()["train"][0]) + seen[2]


SEARCH = """# @package _global_
defaults:
  - override /hydra/sweeper: medbench_optuna
hydra:
  sweeper:
    study_name: tiny
    storage: sqlite:///${paths.log_dir}/optuna/tiny.db
    n_trials: 4
    params:
      task.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.width: {type: categorical, choices: [4, 8]}
hparams_search:
  metric: auc
"""


@pytest.mark.slow
def test_optuna_study_finishes_resumes_and_writes_the_best_experiment(tmp_path):
    conf = tmp_path / "myconf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "tiny.yaml").write_text(SEARCH)
    args = [
        "bench-train",
        "-m",
        "--config-dir",
        str(tmp_path / "myconf"),
        "hparams_search=tiny",
        "model=bccnn",
        "model.hidden=[16]",
        "logger=none",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "data.n_train=64",
        "data.n_val=32",
        "data.n_test=32",
        "data.batch_size=16",
        "paths.results_dir=results",
    ]
    first = run_cli(args, tmp_path, check=True)
    assert "best of 4 completed trials" in first.stdout
    best = tmp_path / "results" / "hparams_search" / "experiment" / "tiny.yaml"
    text = best.read_text()
    assert "task:" in text and "lr:" in text and "# @package _global_" in text
    runs = list((tmp_path / "runs").glob("*/record.json"))
    assert len(runs) == 4  # every trial is an ordinary run
    import optuna

    study = optuna.load_study(
        study_name="tiny", storage=f"sqlite:///{tmp_path / 'outputs' / 'optuna' / 'tiny.db'}"
    )
    assert len(study.trials) == 4 and study.best_value > 0.5
    # rerun: the study has its 4 trials: nothing is trained again
    again = run_cli(args, tmp_path, check=True)
    assert " -> " not in again.stdout + again.stderr
    assert len(list((tmp_path / "runs").glob("*/record.json"))) == 4
    # more trials: only the new ones train
    more = run_cli([*args, "hydra.sweeper.n_trials=6"], tmp_path, check=True)
    assert (more.stdout + more.stderr).count(" -> ") == 2
    # the best trial's experiment reproduces it (recognised as already done)
    rerun = run_cli(
        [
            "bench-train",
            "--config-dir",
            str(tmp_path / "results" / "hparams_search"),
            "experiment=tiny",
            *args[5:-1],
        ],
        tmp_path,
        check=True,
    )
    assert "already done" in rerun.stdout + rerun.stderr


def test_pruned_trial_is_marked_and_reported(tmp_path):
    import optuna

    from bench.search import PRUNED_ATTR, OptunaPruning

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(
        study_name="s",
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.ThresholdPruner(lower=0.9),
    )
    trial = study.ask()
    cb = OptunaPruning(storage, "s", trial.number, "val/auc")
    cb.study.pruner = optuna.pruners.ThresholdPruner(lower=0.9)

    class T:  # the trainer attributes the callback reads
        sanity_checking = False
        current_epoch = 0
        callback_metrics = {"val/auc": torch.tensor(0.6)}

        class state:
            fn = "fit"

    with pytest.raises(optuna.TrialPruned):
        cb.on_validation_end(T(), None)
    assert study.trials[0].user_attrs[PRUNED_ATTR] == 0
    assert study.trials[0].intermediate_values == {0: pytest.approx(0.6)}


def test_class_weights_change_the_loss_as_computed_by_hand(make_cfg):
    from bench.job.build import resolve_class_weights
    from bench.spec import DataSpec
    from bench.tasks import build_task

    spec = DataSpec("d", "multi-class", 2, 1, 3, (8, 8))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    w = [0.5, 1.0, 2.0]
    task = build_task(model, spec, optimizer=partial(torch.optim.Adam, lr=1e-3), class_weights=w)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 1, 2])
    nll = -torch.log_softmax(logits, 1)[torch.arange(3), y]
    by_hand = (torch.tensor(w)[y] * nll).sum() / torch.tensor(w)[y].sum()
    assert task.loss(logits, y).item() == pytest.approx(by_hand.item())
    # auto: inverse class frequency of the training split, n / (k * n_c)
    cfg = make_cfg(["model=bccnn", *FAST])
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    counts = dm.class_counts()
    auto = resolve_class_weights("auto", dm)
    assert auto == pytest.approx(list(counts.sum() / (3 * counts)))
    assert resolve_class_weights("none", dm) is None


def test_class_weights_and_balanced_sampler_train(make_cfg, tmp_path):
    for extra in (["task.class_weights=auto"], ["data.sampler=balanced"]):
        cfg = make_cfg(["model=bccnn", *FAST, *extra])
        outcome = train(cfg)
        assert outcome.status == "done", outcome.error
        rec = load_record(outcome.record_path)
        assert {"balanced_acc", "recall"} <= set(rec.test)
        assert [r["recall"] for r in rec.per_class["test"]]  # per-class recall shows the effect


def test_fraction_sweep_lands_as_rows_and_draws_a_curve(make_cfg, tmp_path):
    from bench.board import build_board
    from bench.report import build_report

    for fraction in (0.25, 0.5, 1.0):
        cfg = make_cfg(["model=bccnn", "model.width=4", *FAST, f"data.fraction={fraction}"])
        assert train(cfg).status == "done"
    table = build_board(str(tmp_path / "runs"), n_boot=50).table
    assert sorted(table["data.fraction"]) == [0.25, 0.5, 1.0]
    page = build_report(str(tmp_path / "runs"), str(tmp_path / "r.html")).read_text()
    section = page.split("<h2>Data efficiency</h2>")[1].split("<h2>")[0]
    assert 'class="plot"' in section  # an interactive chart


def _local_weights(tmp_path):
    import timm

    torch.manual_seed(0)
    path = tmp_path / "tiny_resnet.pth"
    torch.save(timm.create_model("resnet18", num_classes=10, in_chans=3).state_dict(), path)
    return path


def _pneumonia_probe_cfg(make_cfg, probe: str, weights):
    """A ResNet-18 probe of kind ``probe`` from ``weights`` on 1,200 real PneumoniaMNIST images."""
    return make_cfg(
        [
            f"experiment={probe}_probe",
            "data=pneumoniamnist",
            f"data.root={PNEUMONIA.parent}",
            "data.download=false",
            "data.limit=1200",
            "model=resnet18",
            f"model.weights={weights}",
            "logger=none",
        ]
    )


@pytest.mark.slow
@needs_pneumonia()
@pytest.mark.parametrize("probe", ["linear", "knn"])
def test_probes_train_from_a_local_weights_file_and_beat_chance(make_cfg, tmp_path, probe):
    weights = _local_weights(tmp_path)
    cfg = _pneumonia_probe_cfg(make_cfg, probe, weights)
    outcome = train(cfg)
    assert outcome.status == "done", outcome.error
    rec = load_record(outcome.record_path)
    assert rec.scheme == {"linear": "linear_probe", "knn": "knn"}[probe]
    assert rec.test["auc"] > 0.6, rec.test  # random-init features already carry signal
    assert (rec.dir / "predictions_test.csv").exists()
    cached = list((tmp_path / "data" / "features").glob("resnet18-*.npz"))
    assert len(cached) == 1  # extracted once; a second probe reads them back
    shutil.rmtree(RunStore(cfg.paths.runs_dir).root)
    other = "knn" if probe == "linear" else "linear"
    cfg2 = _pneumonia_probe_cfg(make_cfg, other, weights)
    assert train(cfg2).status == "done"
    assert len(list((tmp_path / "data" / "features").glob("resnet18-*.npz"))) == 1


def test_probe_data_spec_from_a_generated_file(tmp_path, make_cfg):
    """Probes also run on any MedMNIST-layout file (here a generated 3-class one)."""
    write_medmnist_npz(
        tmp_path / "mm" / "bloodmnist.npz",
        (28, 28, 3),
        8,
        counts={"train": 64, "val": 16, "test": 16},
    )
    weights = _local_weights(tmp_path)
    cfg = make_cfg(
        [
            "experiment=knn_probe",
            "data=bloodmnist",
            f"data.root={tmp_path / 'mm'}",
            "data.download=false",
            "model=resnet18",
            f"model.weights={weights}",
            "logger=none",
        ]
    )
    outcome = train(cfg)
    assert outcome.status == "done", outcome.error
    rec = load_record(outcome.record_path)
    assert len(rec.per_class["test"]) == 8 and rec.scheme == "knn"
