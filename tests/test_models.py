from functools import partial

import pytest
import torch

from bench.errors import ConfigError, ModelDataMismatchError, UnknownOptionError, WeightsError
from bench.models import available_models, build_model, get_entry
from bench.spec import DataSpec
from bench.tasks import build_task

SPECS = {
    "2d28g": DataSpec("g28", "multi-class", 2, 1, 3, (28, 28)),
    "2d32": DataSpec("g32", "multi-label", 2, 1, 4, (32, 32)),
    "2d64rgb": DataSpec("c64", "binary-class", 2, 3, 2, (64, 64)),
    "2d96": DataSpec("g96", "multi-label", 2, 1, 4, (96, 96)),
    "3d28": DataSpec("v28", "multi-class", 3, 1, 3, (28, 28, 28)),
    "seg64": DataSpec("s64", "segmentation", 2, 1, 3, (64, 64)),
    "seg3d": DataSpec("s3", "segmentation", 3, 1, 2, (20, 20, 20)),
}
HEAVY = {"resnet18_3d", "xception", "inception_v3", "vgg16"}


def _cases():
    """Every model on every input it supports; heavy models on their smallest one only."""
    for name in available_models():
        e = get_entry(name)
        keys = [
            k
            for k, s in SPECS.items()
            if s.kind in e.kinds
            and s.spatial_dims in e.dims
            and min(s.input_size) >= e.min_input_size
        ]
        for key in keys[:1] if name in HEAVY else keys:
            yield pytest.param(name, key, id=f"{name}-{key}")


@pytest.mark.parametrize("name,key", list(_cases()))
def test_forward_and_one_training_step(name, key):
    torch.manual_seed(0)
    spec = SPECS[key]
    model = build_model(name, spec)
    task = build_task(model, spec, optimizer=partial(torch.optim.Adam, lr=1e-3))
    x = torch.randn(2, spec.in_channels, *spec.input_size)
    if spec.kind == "segmentation":
        y = torch.randint(0, spec.num_classes, (2, *spec.input_size))
    elif spec.task == "multi-label":
        y = torch.randint(0, 2, (2, spec.num_classes)).float()
    else:
        y = torch.tensor([0, 1])
    out = task(x)
    expected = (
        (2, spec.num_outputs, *spec.input_size)
        if spec.kind == "segmentation"
        else (2, spec.num_outputs)
    )
    assert out.shape == expected
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = task.loss(out, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_every_design_card_model_is_registered():
    for n in (
        "bccnn",
        "resnet18",
        "resnet50",
        "xception",
        "mobilenet",
        "inception_v3",
        "vgg16",
        "cnn3d",
        "unet",
        "timm",
    ):
        assert n in available_models()


def test_small_input_stem_and_variants():
    spec = SPECS["2d28g"]
    m = build_model("resnet18", spec, small_input_stem=True)
    assert m.conv1.stride == (1, 1) and isinstance(m.maxpool, torch.nn.Identity)
    assert build_model("mobilenet", spec, variant="mobilenetv3_small_100")(
        torch.randn(2, 1, 28, 28)
    ).shape == (2, 3)
    assert build_model("efficientnet_b0", spec, source="timm")(torch.randn(2, 1, 28, 28)).shape == (
        2,
        3,
    )


@pytest.mark.parametrize(
    "name,key,exc",
    [
        ("cnn3d", "2d28g", ModelDataMismatchError),
        ("unet", "2d28g", ModelDataMismatchError),
        ("resnet50", "3d28", ModelDataMismatchError),
        ("bccnn", "seg64", ModelDataMismatchError),
        ("inception_v3", "2d28g", ModelDataMismatchError),
        ("nope", "2d28g", UnknownOptionError),
    ],
)
def test_model_data_mismatch_is_one_clear_line(name, key, exc):
    with pytest.raises(exc) as e:
        build_model(name, SPECS[key])
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_num_classes_override_that_contradicts_data():
    with pytest.raises(ConfigError, match="contradicts"):
        build_model("bccnn", SPECS["2d28g"], num_classes=5)


def test_unknown_timm_name():
    with pytest.raises(UnknownOptionError, match="timm"):
        build_model("does_not_exist", SPECS["2d28g"], source="timm")


def test_weights_round_trip_adapt_channels_and_head(tmp_path):
    torch.manual_seed(0)
    spec = SPECS["2d28g"]
    a = build_model("resnet18", spec).eval()
    path = tmp_path / "w.pth"
    torch.save(a.state_dict(), path)
    b = build_model("resnet18", spec, weights=str(path)).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(a(x), b(x), atol=1e-6)
    # Lightning-style checkpoint with "model." prefixes loads too
    torch.save({"state_dict": {f"model.{k}": v for k, v in a.state_dict().items()}}, path)
    c = build_model("resnet18", spec, weights=str(path)).eval()
    assert torch.allclose(a(x), c(x), atol=1e-6)
    # 3-channel, 5-class weights into a 1-channel, 3-class model: conv adapted, head re-initialised
    rgb = build_model("resnet18", DataSpec("r", "multi-class", 2, 3, 5, (28, 28)))
    torch.save(rgb.state_dict(), path)
    d = build_model("resnet18", spec, weights=str(path))
    assert torch.allclose(d.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert d.fc.out_features == 3


def test_freeze_backbone_trains_only_the_head():
    m = build_model("bccnn", SPECS["2d28g"], freeze="backbone")
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize(
    "content,match",
    [
        (b"not a checkpoint at all", "not a loadable weights file"),
        (None, "not a state dict"),
    ],
)
def test_bad_weights_files(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=match):
        build_model("bccnn", SPECS["2d28g"], weights=str(path))


def test_weights_whose_shapes_do_not_fit(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(build_model("bccnn", SPECS["2d28g"], width=16).state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit"):
        build_model("bccnn", SPECS["2d28g"], weights=str(path))


def test_pretrained_offline_is_one_line(monkeypatch):
    import huggingface_hub.constants

    # the real download path, told it is offline (as it is on hospital machines and in CI)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from bench.errors import PretrainedUnavailableError

    with pytest.raises(PretrainedUnavailableError, match="model.weights"):
        build_model("resnet18", SPECS["2d28g"], pretrained=True)
