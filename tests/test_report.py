"""The HTML dashboard from a small synthetic sweep, opened in headless Chromium; Grad-CAM."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.explain import explain_run, gradcam_maps
from bench.job.run import train
from bench.report import build_report, pareto_front

from conftest import FAST

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """Two models x two seeds on synthetic data, trained in-process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from conftest import CONF  # noqa: F401

    root = tmp_path_factory.mktemp("sweep")
    for model, extra in (("bccnn", ["model.batch_norm=true"]), ("resnet18", [])):
        for seed in (0, 1):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                cfg = compose(
                    "train",
                    overrides=[
                        f"model={model}",
                        f"seed={seed}",
                        *FAST,
                        "trainer.max_epochs=2",
                        *extra,
                    ],
                    return_hydra_config=True,
                )
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                cfg.paths.runs_dir = str(root / "runs")
                cfg.paths.output_dir = str(root / "out")
                cfg.data.cache_dir = str(root / "data")
                del cfg.hydra
            assert train(cfg).status == "done"
    GlobalHydra.instance().clear()
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


@pytest.mark.slow
def test_report_renders_in_headless_chromium(sweep_store, tmp_path):
    page = build_report(str(sweep_store), str(tmp_path / "report.html"))
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert text.count("<img") >= 5
    records = [json.loads(p.read_text()) for p in sweep_store.glob("*/record.json")]
    assert len(records) == 4
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium; .ci/run does it)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "<table" in dom.stdout
    # the leaderboard section lists both models; the run table has 4 done rows
    assert dom.stdout.count('<tr class="done">') == 4
    assert "bccnn" in dom.stdout and "resnet18" in dom.stdout
    console_errors = [
        ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and "ERROR" in ln.upper()
    ]
    assert not console_errors, console_errors
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1400,2400", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 20000
    # the images decode (rendered, not broken): chromium reports naturalWidth via a JS probe
    probe = tmp_path / "probe.html"
    probe.write_text(
        text.replace(
            "</body>",
            "<script>window.onload=()=>{const b=[...document.images].filter(i=>!i.naturalWidth);"
            "document.title='broken:'+b.length;}</script></body>",
        )
    )
    dom2 = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "<title>broken:0</title>" in dom2.stdout


def _store(root, overrides_list):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from conftest import CONF

    for overrides in overrides_list:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.runs_dir = str(root / "runs")
            cfg.paths.output_dir = str(root / "out")
            cfg.data.cache_dir = str(root / "data")
            del cfg.hydra
        train(cfg)
    GlobalHydra.instance().clear()
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
    assert "ranked by test_dice" in page and "Per-case Dice" in page
    assert "not drawn" not in page and page.count('<tr class="done">') == 2


def test_a_store_with_failed_and_interrupted_runs_renders(tmp_path):
    from bench.records import RunRecord, RunStore

    runs = _store(tmp_path, [["model=bccnn", *FAST], [*SEG]])
    store = RunStore(runs)
    store.write(RunRecord(run_id="x-failed", status="failed", error="ValueError: boom"))
    store.write(RunRecord(run_id="x-int", status="interrupted", error="interrupted"))
    page = build_report(str(runs), str(tmp_path / "r.html")).read_text()
    assert page.count('<tr class="failed">') == 1 and page.count('<tr class="interrupted">') == 1
    assert "ValueError: boom" in page and "not drawn" not in page
    # nothing finished at all: still a page that says so
    only = RunStore(tmp_path / "only")
    only.write(RunRecord(run_id="y-failed", status="failed", error="boom"))
    text = build_report(str(tmp_path / "only"), str(tmp_path / "o.html")).read_text()
    assert "no finished runs yet" in text
