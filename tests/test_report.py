"""The HTML dashboard from a small synthetic sweep, opened in headless Chromium; Grad-CAM."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.explain import explain_run, gradcam_maps
from bench.report import build_report, pareto_front

from conftest import FAST, train_run

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """Two models x two seeds on synthetic data, trained in-process."""
    root = tmp_path_factory.mktemp("sweep")
    for model, extra in (("bccnn", ["model.batch_norm=true"]), ("resnet18", [])):
        for seed in (0, 1):
            overrides = [f"model={model}", f"seed={seed}", *FAST, "trainer.max_epochs=2", *extra]
            assert train_run(root, overrides).status == "done"
    return root / "runs"


def test_pareto_front():
    cost = np.array([1.0, 2.0, 3.0, 2.5])
    score = np.array([0.7, 0.9, 0.95, 0.8])
    assert pareto_front(cost, score).tolist() == [True, True, True, False]


def test_gradcam_on_a_trained_model_has_input_size_and_varies(sweep_store):
    run = next(p.parent for p in sweep_store.glob("*bccnn*/record.json"))
    out = explain_run(run, n=8)
    assert out.exists() and out.stat().st_size > 5000
    from bench.models import build_model
    from bench.spec import DataSpec

    model = build_model("bccnn", DataSpec("x", "multi-class", 2, 1, 3, (28, 28)), batch_norm=True)
    from bench.models.transfer import read_state_dict

    model.load_state_dict(read_state_dict(run / "checkpoints" / "best.ckpt"))
    maps = gradcam_maps(model, torch.randn(4, 1, 28, 28))
    assert maps.shape == (4, 28, 28)
    assert float(maps.std()) > 0.01


def _add_a_3d_run(store: Path) -> None:
    """A second dataset in the store, so the dataset filter has something to hide."""
    small = ["data.n_train=32", "data.n_val=16", "data.n_test=16", "data.batch_size=8"]
    overrides = ["data=synthetic3d", "model=cnn3d", *FAST[:3], *small]
    assert train_run(store.parent, overrides).status == "done"


@pytest.mark.slow
def test_report_in_a_real_browser(sweep_store, tmp_path):
    """Playwright drives the system Chromium over the page with JavaScript on: no console
    errors, no request leaves the page, headers sort, the dataset filter hides rows, a run link
    opens that run's page with its config and learning curve; a screenshot for the docs."""
    playwright = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium; .ci/run does it)")
    _add_a_3d_run(sweep_store)
    page_path = build_report(str(sweep_store), str(tmp_path / "report.html"))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors, outside = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:")) else None,
        )
        page.goto(page_path.as_uri())
        page.wait_for_selector("#overview div.plot .main-svg")
        assert not errors, errors
        # sorting: the runs table by seed, ascending then descending
        runs = page.locator("#overview table.sortable").last
        seed_col = runs.locator("th", has_text="seed")
        seed_col.click()
        up = runs.locator("tbody tr td:nth-child(5)").all_inner_texts()
        seed_col.click()
        down = runs.locator("tbody tr td:nth-child(5)").all_inner_texts()
        assert up == sorted(up) and down == sorted(up, reverse=True) and up != down
        # the dataset filter hides the other datasets' rows and charts
        page.select_option("#f-dataset", "synthetic3d")
        assert page.locator("#overview tr[data-dataset=synthetic]:visible").count() == 0
        assert page.locator("#overview tr[data-dataset=synthetic3d]:visible").count() >= 1
        page.select_option("#f-dataset", "")
        # a run link opens that run's page: its config and its learning curve
        link = page.locator("#overview a[href^='#run-synthetic_28_bccnn']").first
        target = link.get_attribute("href")
        link.click()
        run_page = page.locator(f"section{target}")
        run_page.locator("div.plot .main-svg").first.wait_for()
        assert run_page.locator("h3", has_text="Config").count() == 1
        assert run_page.locator("h3", has_text="Learning curves").count() == 1
        assert page.locator("#overview").is_hidden()
        assert not errors and not outside, (errors, outside)
        page.goto(page_path.as_uri())
        page.wait_for_selector("#overview div.plot .main-svg")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert shot.stat().st_size > 20000


def test_report_numbers_are_the_leaderboard_csvs(sweep_store, tmp_path):
    """One source of numbers: every mean ± std and CI in the page's leaderboard is the cell the
    leaderboard CSV holds (same aggregation, same bootstrap, same rounding)."""
    import re

    import pandas as pd

    from bench.commands.leaderboard import main

    assert main(["--runs-dir", str(sweep_store), "--out", str(tmp_path / "lb")]) == 0
    csv = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    text = build_report(str(sweep_store), str(tmp_path / "r.html")).read_text()
    single = csv[~csv["ensemble"].astype(bool) & (csv["dataset"] == "synthetic")]
    assert len(single) == 2
    for _, row in single.iterrows():
        auc = f"{row['test_auc_mean']:.4f} ± {row['test_auc_std']:.4f}"
        ci = f"[{row['test_auc_ci95_lo']:.3f}, {row['test_auc_ci95_hi']:.3f}]"
        assert auc in text and ci in text, (row["model"], auc, ci)
    assert not re.search(r"<img alt=\"plot\"", text)  # charts are interactive, not PNGs


def _store(root, overrides_list):
    for overrides in overrides_list:
        train_run(root, overrides)
    return root / "runs"


SEG = [
    "data=synthetic_seg",
    "model=unet",
    "model.depth=2",
    "model.base_width=4",
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "data.n_train=16",
    "data.n_val=8",
    "data.n_test=8",
    "data.size=32",
]


def test_segmentation_only_store_renders_a_report(tmp_path):
    runs = _store(tmp_path, [SEG, [*SEG, "seed=1"]])
    page = build_report(str(runs), str(tmp_path / "r.html")).read_text()
    assert "ranked by test_dice" in page and "Segmentation cases" in page
    assert "not drawn" not in page and page.count('<tr class="done"') == 2
    # the best and worst test case of the row as an image | truth | prediction overlay
    assert page.count("best and worst test cases") == 1
    assert 'src="data:image/png;base64,' in page


def test_a_store_with_failed_and_interrupted_runs_renders(tmp_path):
    from bench.records import RunRecord, RunStore

    runs = _store(tmp_path, [["model=bccnn", *FAST], [*SEG]])
    store = RunStore(runs)
    store.write(RunRecord(run_id="x-failed", status="failed", error="ValueError: boom"))
    store.write(RunRecord(run_id="x-int", status="interrupted", error="interrupted"))
    page = build_report(str(runs), str(tmp_path / "r.html")).read_text()
    assert page.count('<tr class="failed"') == 1 and page.count('<tr class="interrupted"') == 1
    assert "ValueError: boom" in page and "not drawn" not in page
    # nothing finished at all: still a page that says so
    only = RunStore(tmp_path / "only")
    only.write(RunRecord(run_id="y-failed", status="failed", error="boom"))
    text = build_report(str(tmp_path / "only"), str(tmp_path / "o.html")).read_text()
    assert "no finished runs yet" in text


def test_search_view_shows_trials_values_and_importance(tmp_path):
    """An Optuna study's trials (ordinary records with hparams_search.trial_number): objective per
    trial, parallel coordinates, and fANOVA importance once there are >= 10 trials; the value
    that drives the objective is the most important."""
    from bench.records import RunRecord, RunStore
    from bench.report.analysis import param_importances, search_frame

    store = RunStore(tmp_path / "runs")
    rng = np.random.default_rng(0)
    for t in range(12):
        lr, dropout = float(10 ** rng.uniform(-4, -1.5)), float(rng.uniform(0, 0.6))
        config = {
            "seed": 0,
            "model": {"name": "bccnn", "dropout": dropout},
            "task": {"optimizer": {"lr": lr}},
            "hparams_search": {"study_name": "s", "trial_number": t, "metric": "auc"},
        }
        auc = 0.9 - 20 * abs(lr - 0.003) + 0.001 * dropout
        store.write(
            RunRecord(run_id=f"t{t}", status="done", config=config, val={"auc": auc}, model="bccnn")
        )
    records, _ = store.iter_records()
    trials = search_frame(records)["s"]
    assert list(trials["trial"]) == list(range(12))
    assert {"task.optimizer.lr", "model.dropout"} <= set(trials.columns)
    imp = param_importances(trials, "val_auc", ["task.optimizer.lr", "model.dropout"])
    assert max(imp, key=imp.get) == "task.optimizer.lr"
    page = build_report(str(tmp_path / "runs"), str(tmp_path / "r.html")).read_text()
    assert "Hyperparameter search" in page and "parameter importance" in page
