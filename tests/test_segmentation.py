"""Segmentation with MONAI and segmentation_models_pytorch: networks, losses, metrics by hand,
patches, sliding windows, the Otsu baseline and the real ISBI 2012 EM data."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict

from bench.data.augment import augment_batch, get_preset
from bench.data.batching import BatchIndexSampler
from bench.data.patches import check_patch_size, crop, patch_origins
from bench.errors import ConfigError
from bench.job.entry import train
from bench.metrics import case_overlaps, segmentation_metrics, surface_metric_tensors
from bench.models import build_model
from bench.records import RunStore
from bench.spec import DataSpec
from bench.tasks import build_task
from bench.tasks.segmentation import build_loss, soft_dice_loss, whole_image_logits

from conftest import ROOT, run_cli

ISBI = ROOT.parent / "shared" / "data" / "isbi2012_em" / "isbi2012_em.npz"
needs_isbi = pytest.mark.skipif(not ISBI.exists(), reason=f"ISBI 2012 EM data not found at {ISBI}")

NEW_MODELS = [
    "monai_unet",
    "basic_unet",
    "attention_unet",
    "segresnet",
    "dynunet",
    "smp_unet",
    "smp_unetplusplus",
    "otsu",
]
MONAI_3D = ["monai_unet", "basic_unet", "attention_unet", "segresnet", "dynunet"]
SMALL = {  # the networks at test width (every option is one the builder takes)
    "unet": {"model.depth": 2, "model.base_width": 8},
    "monai_unet": {"model.depth": 2, "model.base_width": 8},
    "basic_unet": {"model.features": "[8,8,16,32,64,8]"},
    "attention_unet": {"model.depth": 2, "model.base_width": 8},
    "segresnet": {"model.init_filters": 8},
    "dynunet": {"model.depth": 2, "model.base_width": 8},
    "smp_unet": {"model.encoder_name": "resnet18", "model.encoder_depth": 3},
    "smp_unetplusplus": {"model.encoder_name": "resnet18", "model.encoder_depth": 3},
    "otsu": {},
}


def _small(name: str) -> list[str]:
    return [f"{k}={v}" for k, v in SMALL[name].items()]


# -- metrics by hand ----------------------------------------------------------------------------
def _one_hot(m: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(m.long(), k).movedim(-1, 1).float()


def test_dice_and_iou_equal_a_hand_computation_and_monai():
    from monai.metrics import DiceMetric, MeanIoU

    target = torch.zeros(3, 8, 8, dtype=torch.long)
    pred = torch.zeros_like(target)
    target[0, :4, :4] = 1  # 16 true pixels
    pred[0, :4, :2] = 1  # 8 predicted, all inside: Dice 2*8/(16+8) = 2/3, IoU 8/16
    target[1, 2:4, 2:4] = 1  # 4 true, 4 predicted elsewhere: Dice 0
    pred[1, 5:7, 5:7] = 1
    # case 2: the class in neither truth nor prediction: undefined (NaN), not 0 or 1
    m = segmentation_metrics(pred, target, 2, ["bg", "fg"])
    assert m["dice_fg"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["iou_fg"] == pytest.approx((0.5 + 0) / 2)
    assert m["dice_pooled"] == pytest.approx(2 * 8 / (16 + 8 + 4 + 4))
    ov = case_overlaps(pred, target, 2)
    from bench.metrics import dice_iou_from_overlaps

    dice, iou = dice_iou_from_overlaps(ov)
    assert math.isnan(float(dice[2, 0])) and math.isnan(float(iou[2, 0]))
    # MONAI's metrics agree on every case where the class is present in the truth
    monai_dice = DiceMetric(include_background=False, reduction="none")(
        _one_hot(pred, 2), _one_hot(target, 2)
    )
    monai_iou = MeanIoU(include_background=False, reduction="none")(
        _one_hot(pred, 2), _one_hot(target, 2)
    )
    assert torch.allclose(monai_dice[:2, 0], dice[:2, 0].float(), atol=1e-6)
    assert torch.allclose(monai_iou[:2, 0], iou[:2, 0].float(), atol=1e-6)


def _task(num_classes: int = 2, **kwargs):
    spec = DataSpec(
        "t", "segmentation", 2, 1, num_classes, (16, 16), ("bg", "fg", "x")[:num_classes]
    )
    model = build_model("unet", spec, depth=1, base_width=2)
    return build_task(model, spec, optimizer=partial(torch.optim.Adam, lr=1e-3), **kwargs)


def test_hd95_and_surface_dice_by_hand_and_empty_cases_are_nan():
    task = _task(surface_tolerance=2.0)
    target = torch.zeros(3, 16, 16, dtype=torch.long)
    pred = torch.zeros_like(target)
    target[0, 5, 5] = 1
    pred[0, 5, 9] = 1  # one pixel 4 px away: HD95 = 4; beyond 2 px tolerance: surface Dice 0
    target[1, 3:6, 3:6] = 1
    pred[1, 3:6, 3:6] = 1  # identical: HD95 0, surface Dice 1
    target[2, 8, 8] = 1  # nothing predicted: HD95 and surface Dice undefined
    surface = task.surface_metrics(pred, target)
    assert surface[0, 0, 0] == pytest.approx(4.0)
    assert surface[0, 0, 1] == pytest.approx(0.0)
    assert surface[1, 0, 0] == pytest.approx(0.0)
    assert surface[1, 0, 1] == pytest.approx(1.0)
    assert torch.isnan(surface[2]).all()
    means = surface_metric_tensors(surface, ["bg", "fg"])
    assert float(means["hd95"]) == pytest.approx(2.0)  # NaN case left out, never 0
    assert float(means["nsd"]) == pytest.approx(0.5)
    wide = _task(surface_tolerance=5.0).surface_metrics(pred, target)
    assert wide[0, 0, 1] == pytest.approx(1.0)  # within 5 px


def test_monai_dice_ce_loss_equals_the_plain_reference():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 12, 12)
    target = torch.randint(0, 3, (4, 12, 12))
    monai = build_loss("dice_ce", dice_weight=0.7)(logits, target.unsqueeze(1))
    plain = F.cross_entropy(logits, target) + 0.7 * soft_dice_loss(logits, target, eps=1e-5)
    assert float(monai) == pytest.approx(float(plain), rel=1e-5)
    for name in ("dice", "focal", "dice_focal"):
        assert torch.isfinite(build_loss(name)(logits, target.unsqueeze(1)))
    assert build_loss("ce") is None
    with pytest.raises(ConfigError, match="task.seg_loss"):
        build_loss("lovasz")


# -- patches, sliding windows, augmentation -----------------------------------------------------
def test_patches_are_crops_and_the_foreground_sampler_finds_foreground():
    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 20 * 24, dtype=torch.float32).reshape(2, 1, 20, 24)
    mask = torch.zeros(2, 20, 24, dtype=torch.long)
    mask[:, 15:18, 2:4] = 1  # a small foreground corner
    origins = patch_origins(mask, (8, 8), "random")
    patches = crop(x, origins, (8, 8))
    for i, (r, c) in enumerate(origins.tolist()):
        assert torch.equal(patches[i], x[i, :, r : r + 8, c : c + 8])
        assert 0 <= r <= 12 and 0 <= c <= 16
    for _ in range(5):
        o = patch_origins(mask, (8, 8), "foreground", foreground_fraction=1.0)
        assert (crop(mask, o, (8, 8)).flatten(1).sum(1) > 0).all()
    assert check_patch_size(8, 2, (20, 24)) == (8, 8)
    with pytest.raises(ConfigError, match="larger than the images"):
        check_patch_size([32, 8], 2, (20, 24))


def test_an_epoch_visits_each_image_patches_per_image_times():
    sampler = BatchIndexSampler(5, 4, shuffle=True, seed=1, repeats=3)
    seen = torch.cat(list(sampler))
    assert len(seen) == 15 and torch.bincount(seen).tolist() == [3] * 5


def test_sliding_window_equals_whole_image_inference():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 40, 40)
    # a network that fits the image: one window is the whole image, exactly
    spec = DataSpec("t", "segmentation", 2, 1, 2, (40, 40), ("bg", "fg"))
    net = build_model("monai_unet", spec, depth=2, base_width=4).eval()
    with torch.no_grad():
        assert torch.equal(whole_image_logits(net, x, (40, 40), None), net(x))
        # windows smaller than the image, on a per-pixel network: the blended windows give
        # every pixel exactly its whole-image value
        pointwise = torch.nn.Conv2d(1, 2, 1)
        sw = whole_image_logits(pointwise, x, (16, 16), {"overlap": 0.5, "mode": "gaussian"})
        assert torch.allclose(sw, pointwise(x), atol=1e-5)


def test_unet_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    mask = torch.zeros(6, 32, 32, dtype=torch.long)
    mask[:, 4:14, 6:26] = 1
    mask[:, 20:28, 10:14] = 1
    x = mask[:, None].float()
    preset = get_preset("unet")
    out, out_mask = augment_batch(x, preset, mask)
    # intensity jitter aside, the warped image still thresholds to the warped mask
    agree = (
        (out[:, 0] - out[:, 0].amin((1, 2), keepdim=True))
        > 0.5 * out[:, 0].amax((1, 2), keepdim=True).sub(out[:, 0].amin((1, 2), keepdim=True))
    ).long() == out_mask
    assert agree.float().mean() > 0.95
    assert not torch.equal(out_mask, mask)  # something moved
    assert set(out_mask.unique().tolist()) <= {0, 1}


# -- models through the harness ----------------------------------------------------------------
@needs_isbi
@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_MODELS)
def test_every_new_model_runs_fast_dev_run_on_isbi(make_cfg, name):
    cfg = make_cfg(
        ["data=isbi2012_em", f"data.path={ISBI}", f"model={name}", "+trainer.fast_dev_run=true"]
        + ["logger=none", "trainer.enable_progress_bar=false", "data.batch_size=2"]
        + ["data.patch_size=128", *_small(name)]
    )
    outcome = train(cfg)
    assert outcome.status == "done", outcome.error
    record = RunStore(cfg.paths.runs_dir).read(outcome.run_id)
    assert record.spec["input_size"] == [512, 512]
    for key in ("dice", "iou", "hd95", "nsd", "dice_membrane"):
        assert key in record.test
    assert 0 <= record.test["dice"] <= 1


@needs_isbi
def test_the_otsu_baseline_is_evaluated_without_training(make_cfg):
    cfg = make_cfg(
        ["experiment=isbi2012_em", "+combo=otsu_isbi", f"data.path={ISBI}", "logger=none"]
        + ["trainer.enable_progress_bar=false"]
    )
    outcome = train(cfg)
    assert outcome.status == "done", outcome.error
    record = RunStore(cfg.paths.runs_dir).read(outcome.run_id)
    assert record.epochs_run == 0 and record.cost.params_total == 0
    # 0.53 when written: far above nothing, far below a trained U-Net
    assert 0.4 < record.test["dice"] < 0.65
    cases = np.load(Path(record.dir) / "test_cases.npz")
    assert cases["best_image"].shape == (512, 512) and cases["best_dice"] >= cases["worst_dice"]


def test_monai_3d_networks_train_on_volumes_through_the_same_path(make_cfg):
    for name in MONAI_3D:
        cfg = make_cfg(
            ["data=synthetic_seg3d", "data.size=16", "data.n_train=8", "data.n_val=4"]
            + ["data.n_test=4", "data.batch_size=4", f"model={name}", *_small(name)]
            + ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_epochs=1"]
            + ["data.patch_size=8", "data.augment=unet"]
        )
        outcome = train(cfg)
        assert outcome.status == "done", f"{name}: {outcome.error}"
        record = RunStore(cfg.paths.runs_dir).read(outcome.run_id)
        assert record.spec["spatial_dims"] == 3 and "hd95" in record.test


@pytest.mark.slow
def test_own_unet_and_monai_unet_learn_the_same_phantoms(make_cfg):
    scores = {}
    for name in ("unet", "basic_unet"):
        cfg = make_cfg(
            ["data=synthetic_seg", "data.size=32", "data.n_train=128", "data.n_val=32"]
            + ["data.n_test=32", f"model={name}", *_small(name), "logger=none"]
            + ["trainer.enable_progress_bar=false", "trainer.max_epochs=4"]
            + ["task.optimizer.lr=0.003"]
        )
        outcome = train(cfg)
        assert outcome.status == "done", outcome.error
        scores[name] = RunStore(cfg.paths.runs_dir).read(outcome.run_id).test["dice"]
    # the plain reference and MONAI's U-Net on the same data, recipe and seed
    # background everywhere scores 0; 4 epochs: 0.36 (own) and 0.24 (MONAI) when written
    assert min(scores.values()) > 0.15, scores
    assert abs(scores["unet"] - scores["basic_unet"]) < 0.2, scores


@needs_isbi
@pytest.mark.slow
def test_a_unet_trained_on_isbi_patches_beats_the_otsu_baseline(make_cfg, tmp_path):
    common = ["experiment=isbi2012_em", f"data.path={ISBI}", "logger=none"]
    common += ["trainer.enable_progress_bar=false"]
    base = train(make_cfg([*common, "+combo=otsu_isbi"]))
    cfg = make_cfg([*common, "+combo=monai_unet_isbi", "trainer.max_epochs=2"])
    outcome = train(cfg)
    assert outcome.status == "done", outcome.error
    assert outcome.value > base.value + 0.1, (outcome.value, base.value)


@needs_isbi
@pytest.mark.slow
def test_bench_predict_writes_masks_of_a_monai_run(make_cfg, tmp_path):
    common = ["experiment=isbi2012_em", f"data.path={ISBI}", "logger=none"]
    cfg = make_cfg([*common, "trainer.enable_progress_bar=false", "+combo=monai_unet_isbi"])
    with open_dict(cfg):
        cfg.trainer.max_epochs = 1
    outcome = train(cfg)
    # bench-predict writes the masks as PNGs of class indices
    run_dir = RunStore(cfg.paths.runs_dir).run_dir(outcome.run_id)
    images = np.load(ISBI)["test_images"][:2]
    np.savez(tmp_path / "two.npz", images=images)
    proc = run_cli(
        ["bench-predict", str(run_dir), str(tmp_path / "two.npz"), "--out", str(tmp_path / "m.csv")]
        + ["--masks-dir", str(tmp_path / "masks")],
        tmp_path,
        check=True,
    )
    assert "masks in" in proc.stdout
    from PIL import Image

    pngs = sorted((tmp_path / "masks").glob("*.png"))
    assert len(pngs) == 2
    mask = np.asarray(Image.open(pngs[0]))
    assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 1}
    assert 0.05 < (mask == 1).mean() < 0.5  # membranes: about a fifth of the pixels


def test_weights_whose_own_top_module_is_net_load_unchanged(tmp_path):
    """A padded MONAI UNet's keys start with ``net.model.``: they fit the network as they are,
    so no wrapper prefix is stripped; a DataParallel copy of it still loads."""
    from bench.models.transfer import read_state_dict

    spec = DataSpec("t", "segmentation", 2, 1, 2, (32, 32), ("bg", "fg"))
    model = build_model("monai_unet", spec, depth=2, base_width=4)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        state = read_state_dict(tmp_path / name, like=model)
        assert set(state) == set(model.state_dict()), name
        model.load_state_dict(state)
