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
NOT_LEARNED = {"otsu"}
HEAVY = {
    "smp_unet",
    "smp_unetplusplus",
    "attention_unet",
    "resnet18_3d",
    "resnet50_3d",
    "r3d_18",
    "xception",
    "inception_v3",
    "vgg16",
}


def _cases():
    """Every model on every input it supports; heavy models on their smallest one only."""
    for name in available_models():
        if name in NOT_LEARNED:  # no parameters to step (tests/test_segmentation.py)
            continue
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
    any_timm = build_model("timm", spec, variant="efficientnet_b0")
    assert any_timm(torch.randn(2, 1, 28, 28)).shape == (2, 3)


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
        build_model("timm", SPECS["2d28g"], variant="does_not_exist")


@pytest.mark.parametrize(
    "name,option,took",
    [
        ("bccnn", {"pretrained": True}, "depth, width, hidden"),
        ("resnet18", {"variant": "resnet34"}, "small_input_stem"),
        ("xception", {"small_input_stem": True}, "variant"),
        ("unet", {"dropout": 0.1}, "depth, base_width"),
        ("bccnn", {"widht": 8}, "width"),  # a typo
    ],
)
def test_an_option_a_model_does_not_take_is_one_line_naming_what_it_takes(name, option, took):
    spec = SPECS["seg64"] if name == "unet" else SPECS["2d28g"]
    with pytest.raises(UnknownOptionError) as e:
        build_model(name, spec, **option)
    msg = str(e.value)
    assert f"does not take model.{next(iter(option))}" in msg and took in msg and "\n" not in msg


def test_scheme_says_what_was_built(tmp_path):
    from bench.models import build_info

    spec = SPECS["2d28g"]
    assert build_info(build_model("bccnn", spec)).scheme == "scratch"
    stem = build_model("resnet18", spec, small_input_stem=True)
    assert build_info(stem).scheme == "scratch-smallstem"
    path = tmp_path / "w.pth"
    torch.save(build_model("bccnn", spec).state_dict(), path)
    frozen = build_model("bccnn", spec, weights=str(path), freeze="backbone")
    assert build_info(frozen).scheme == "weights-frozen"


def _reference_resnet_param_count(block: str, layers: list[int], c_in: int, classes: int) -> int:
    """Parameters of MedMNIST v2's 28² ResNet (experiments/MedMNIST2D/models.py), counted from
    its description: 3x3 stride-1 stem (64), four stages (64/128/256/512 planes, strides
    1/2/2/2), a 1x1 conv + BN shortcut where the shape changes, global average pool, linear."""
    expansion = 1 if block == "basic" else 4
    total = 64 * c_in * 9 + 2 * 64  # stem conv + BN
    in_planes = 64
    for planes, n, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2), strict=True):
        for i in range(n):
            s = stride if i == 0 else 1
            out = planes * expansion
            if block == "basic":
                total += in_planes * planes * 9 + 2 * planes + planes * planes * 9 + 2 * planes
            else:
                total += in_planes * planes + 2 * planes + planes * planes * 9 + 2 * planes
                total += planes * out + 2 * out
            if s != 1 or in_planes != out:
                total += in_planes * out + 2 * out
            in_planes = out
    return total + in_planes * classes + classes


@pytest.mark.parametrize(
    "depth,block,layers", [(18, "basic", [2, 2, 2, 2]), (50, "bottleneck", [3, 4, 6, 3])]
)
def test_paper_resnets_have_the_reference_layers_and_parameters(depth, block, layers):
    spec = DataSpec("p", "binary-class", 2, 1, 2, (28, 28))
    m = build_model(f"resnet{depth}", spec, small_input_stem=True, init="torch")
    assert sum(p.numel() for p in m.parameters()) == _reference_resnet_param_count(
        block, layers, 1, 2
    )
    # known totals: 11,168,706 (ResNet-18) and 23,503,298 (ResNet-50) for 1 channel, 2 classes
    assert sum(p.numel() for p in m.parameters()) == {18: 11_168_706, 50: 23_503_298}[depth]
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert isinstance(m.maxpool, torch.nn.Identity)
    # 28 -> 28 -> 14 -> 7 -> 4 spatially through the stages, as the reference
    feats = m.forward_features(torch.zeros(1, 1, 28, 28))
    assert feats.shape[-2:] == (4, 4)
    # 3D: every 3x3 kernel becomes 3x3x3, so the parameters grow by the 3x3 convs' third tap
    spec3 = DataSpec("v", "binary-class", 3, 1, 2, (28, 28, 28))
    m3 = build_model(f"resnet{depth}_3d", spec3)
    convs2 = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    extra = sum(c.weight.numel() * 2 for c in convs2 if c.kernel_size == (3, 3))
    assert sum(p.numel() for p in m3.parameters()) == sum(p.numel() for p in m.parameters()) + extra
    assert m3(torch.zeros(2, 1, 28, 28, 28)).shape == (2, 2)


def test_paper_init_is_pytorchs_default_not_timms():
    spec = DataSpec("p", "binary-class", 2, 1, 2, (28, 28))
    torch.manual_seed(0)
    paper = build_model("resnet18", spec, small_input_stem=True, init="torch")
    timm_init = build_model("resnet18", spec, small_input_stem=True)
    # timm zeroes the last BatchNorm of each block; PyTorch's default keeps it at one
    assert float(timm_init.layer1[0].bn2.weight.abs().sum()) == 0
    assert torch.all(paper.layer1[0].bn2.weight == 1)
    # PyTorch's default conv init: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), ..)
    w = paper.layer3[0].conv1.weight
    bound = 1 / (w[0].numel() ** 0.5)
    assert float(w.abs().max()) <= bound + 1e-6 and float(w.std()) == pytest.approx(
        bound / 3**0.5, rel=0.05
    )
    # timm: fan-out normal, a different scale
    w2 = timm_init.layer3[0].conv1.weight
    assert float(w2.std()) == pytest.approx((2 / (w2.shape[0] * 9)) ** 0.5, rel=0.05)


def test_3d_paper_resnet_inflates_2d_kernels_along_depth():
    spec3 = DataSpec("v", "binary-class", 3, 1, 2, (28, 28, 28))
    torch.manual_seed(0)
    m3 = build_model("resnet18_3d", spec3)  # init=i3d, the official script's default
    w = m3.layer1[0].conv1.weight  # (out, in, 3, 3, 3)
    assert torch.allclose(w[:, :, 0], w[:, :, 1]) and torch.allclose(w[:, :, 1], w[:, :, 2])
    default = build_model("resnet18_3d", spec3, init="default")
    assert not torch.allclose(
        default.layer1[0].conv1.weight[:, :, 0], default.layer1[0].conv1.weight[:, :, 1]
    )


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
