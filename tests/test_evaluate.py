"""Beyond accuracy: corruptions, calibration, selective prediction, TTA, MC-dropout, export."""

import numpy as np
import pytest
import torch

from bench.confidence.calibration import (
    apply_temperature,
    confidence_and_correct,
    fit_temperature,
    temperature_scale,
)
from bench.confidence.selective import aurc, risk_coverage
from bench.evaluate.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruptions_for
from bench.job.entry import train
from bench.metrics import classification_metrics

from conftest import FAST, PNEUMONIA, needs_pneumonia


def _images(n=8, c=1, size=28, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (n, c, size, size), dtype=np.uint8)
    return base


@pytest.mark.parametrize("flag", sorted(SEVERITIES))
def test_every_corruption_is_identity_at_severity_0_and_changes_images_above(flag):
    channels = 3 if flag in ("retinamnist", "dermamnist", "bloodmnist", "pathmnist") else 1
    x = _images(c=channels)
    for name in corruptions_for(flag):
        assert np.array_equal(corrupt(x, name, 0, flag), x), name
        y = corrupt(x, name, 5, flag)
        assert y.shape == x.shape and y.dtype == np.uint8, name
    # at MedMNIST-C's own 224² every corruption changes the images (at 28² a blur of a few
    # 224² pixels scales below one pixel, as it should)
    big = _images(n=2, c=channels, size=224)
    for name in corruptions_for(flag):
        assert not np.array_equal(corrupt(big, name, 5, flag), big), name
        # seeded: every model sees the same corrupted test set
        assert np.array_equal(corrupt(x, name, 3, flag), corrupt(x, name, 3, flag)), name


def test_corruptions_grow_with_severity():
    x = _images(n=4, size=224)
    for name in ("gaussian_noise", "gaussian_blur", "contrast_down", "pixelate", "shot_noise"):
        dist = [
            np.abs(corrupt(x, name, s, "pneumoniamnist").astype(float) - x).mean()
            for s in (1, 3, 5)
        ]
        assert dist[0] < dist[1] < dist[2], (name, dist)
    assert set(CORRUPTIONS) >= {n for table in SEVERITIES.values() for n in table}


def _overconfident(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.0
    logits *= 4.0  # far more confident than it is right
    p = np.exp(logits - logits.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


def test_temperature_scaling_lowers_nll_and_ece_of_an_overconfident_model():
    val, test = _overconfident(seed=0), _overconfident(seed=1)
    result = temperature_scale(val, test, "multi-class")
    assert result.temperature > 2  # it undoes most of the x4 over-confidence
    assert result.val_nll_after < result.val_nll_before
    assert result.val_ece_after < result.val_ece_before
    before = classification_metrics(test[0], test[1], "multi-class", ("ece", "nll"))
    assert result.test["ece_ts"] < before["ece"] and result.test["nll_ts"] < before["nll"]
    # a calibrated model keeps T near 1; scaling keeps the argmax (accuracy unchanged)
    y, p = _overconfident(seed=2)
    t = fit_temperature(p, y, "multi-class")
    assert np.array_equal(apply_temperature(p, t, "multi-class").argmax(1), p.argmax(1))


def test_risk_coverage_and_aurc_by_hand():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 0, 1, 0])
    cov, risk = risk_coverage(conf, correct)
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert aurc(conf, correct) == pytest.approx(np.mean([0.0, 0.5, 1 / 3, 0.5]))
    # a confidence that ranks every error last has the lowest possible area
    assert aurc(np.array([0.9, 0.7, 0.8, 0.6]), correct) < aurc(conf, correct)
    c, ok = confidence_and_correct(
        np.array([1, 0]), np.array([[0.2, 0.8], [0.3, 0.7]]), "binary-class"
    )
    assert c.tolist() == pytest.approx([0.8, 0.7]) and ok.tolist() == [True, False]


def _trained(make_cfg, extra=(), base=tuple(FAST)):
    from bench.records import load_record

    cfg = make_cfg(["model=bccnn", "model.batch_norm=true", *base, "trainer.max_epochs=2", *extra])
    outcome = train(cfg)
    assert outcome.status == "done", outcome.error
    return cfg, load_record(outcome.record_path)


def test_tta_identity_equals_plain_evaluation_and_flips_make_their_own_row(make_cfg, bccnn_run):
    plain = bccnn_run
    ident_cfg, ident = _trained(make_cfg, ["eval.tta=identity"])
    assert ident.config_id != plain.config_id  # its own leaderboard row
    for k in ("auc", "acc", "loss"):
        assert ident.test[k] == pytest.approx(plain.test[k], abs=1e-6), k
    from bench.tasks.tta import tta_logits, views

    assert len(views("flips", 2)) == 4 and len(views("flips", 3)) == 4
    x = torch.randn(4, 1, 8, 8)
    out = tta_logits(
        lambda t: t.mean((2, 3)).expand(-1, 3) * torch.tensor([1.0, 0, -1]),
        x,
        "flips",
        "multi-class",
        2,
    )
    assert torch.allclose(torch.softmax(out, 1).sum(1), torch.ones(4))


def test_bench_tta_is_an_evaluation_of_the_run_not_a_new_row(bccnn_run):
    from bench.board import build_board
    from bench.evaluate.tta import tta_run
    from bench.records import load_record

    rec = bccnn_run
    tta_run(rec.dir, "identity")
    stored = load_record(rec.dir)
    got = stored.evaluations["tta"]["identity"]
    assert got["views"] == 1 and got["test"]["auc"] == pytest.approx(rec.test["auc"], abs=1e-6)
    assert stored.test == rec.test and stored.cost == rec.cost  # the run itself is unchanged
    table = build_board(rec.dir.parent, n_boot=0).table
    assert len(table) == 1 and len(list(rec.dir.parent.iterdir())) == 1


def test_mc_dropout_and_a_model_without_dropout(make_cfg, bccnn_run):
    from bench.errors import ConfigError
    from bench.evaluate.uncertainty import mc_dropout

    rec = bccnn_run  # BCCNN: dropout 0.5 in its dense layers
    mc = mc_dropout(rec, samples=4)
    assert mc["samples"] == 4 and 0 <= mc["test"]["auc"] <= 1
    assert mc["aurc_mutual_info"] >= 0 and mc["mean_mutual_info"] >= 0
    _, no_drop = _trained(make_cfg, ["model.dropout=0.0", "seed=3"])
    with pytest.raises(ConfigError, match="no dropout layer"):
        mc_dropout(no_drop, samples=2)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_the_test_split_and_writes_a_card(bccnn_run, fmt):
    import json

    from bench.export import export

    rec = bccnn_run
    meta = export(rec.dir, fmt)
    assert meta["check"]["max_abs_diff_vs_pytorch"] <= 1e-4
    assert meta["check"]["samples"] == 48
    out = rec.dir / "export"
    assert json.loads((out / "model.json").read_text())["input"]["value_range"] == [0, 255]
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Calibration" in card and "temperature scaling" in card and "95% CI" in card


@pytest.mark.slow
@needs_pneumonia()
def test_robustness_of_a_trained_model_worsens_with_severity_on_average(make_cfg):
    from bench.evaluate.robust import evaluate_run

    real = [
        "data=pneumoniamnist",
        f"data.root={PNEUMONIA.parent}",
        "data.download=false",
        "data.batch_size=128",
        "logger=none",
        "trainer.enable_progress_bar=false",
    ]
    _, rec = _trained(make_cfg, ["trainer.max_epochs=3"], base=tuple(real))
    some = ("gaussian_noise", "impulse_noise", "shot_noise", "pixelate", "jpeg_compression")
    rob = evaluate_run(rec, severities=(1, 3, 5), only=some)
    assert set(rob["corruptions"]) == set(some) <= set(corruptions_for("pneumoniamnist"))
    mean_err = {
        s: np.mean([m[str(s)]["balanced_error"] for m in rob["corruptions"].values()])
        for s in (1, 3, 5)
    }
    assert rob["clean"]["balanced_error"] < 0.3  # a trained model, not a coin (0.5)
    assert mean_err[1] <= mean_err[3] <= mean_err[5], mean_err
    assert mean_err[5] > rob["clean"]["balanced_error"]
    assert rob["mean_rbe"] == pytest.approx(rob["mean_be"] - rob["clean"]["balanced_error"])
