"""Classifiers from timm: ResNet, Xception, MobileNet, InceptionV3, VGG16 and any timm name.

One builder, :func:`timm_classifier`, serves them all; each registered name exposes only the
options that apply to it (a ResNet takes ``small_input_stem``, a family takes ``variant``).
"""

from __future__ import annotations

import inspect

import timm
from torch import nn

from bench.errors import ConfigError, PretrainedUnavailableError, UnknownOptionError
from bench.models.registry import register_model
from bench.spec import DataSpec

INITS = ("timm", "torch")


def create_timm(name: str, spec: DataSpec, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with channels and classes from the data spec, clear errors."""
    if not timm.is_model(name):
        raise UnknownOptionError(
            f"unknown timm model {name!r}; list candidates with "
            f"python -c \"import timm; print(timm.list_models('*{name[:6]}*'))\""
        )
    try:
        return timm.create_model(
            name,
            pretrained=pretrained,
            num_classes=spec.num_outputs,
            in_chans=spec.in_channels,
            **kwargs,
        )
    except Exception as e:  # hub/network failures surface as many exception types
        if not pretrained:
            raise
        raise PretrainedUnavailableError(
            f"could not fetch ImageNet weights for {name} ({type(e).__name__}; offline?); "
            "run once online to fill the hub cache, or pass model.weights=/path/to/weights.pth "
            "with model.pretrained=false"
        ) from None


def swap_small_input_stem(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap a ResNet's 7x7/2 conv + max-pool stem for a 3x3/1 conv, as MedMNIST's 28² ResNets do."""
    if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
        raise UnknownOptionError(
            "model.small_input_stem=true applies to ResNets only; remove it for this model"
        )
    out = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_channels, out, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def torch_default_init(model: nn.Module) -> nn.Module:
    """Re-initialise every layer with PyTorch's own defaults (``reset_parameters``).

    timm's ResNets use fan-out Kaiming init and zero the last BatchNorm of each block; the
    MedMNIST v2 reference models (and most papers' plain PyTorch code) use PyTorch's defaults.
    """
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase)):
            m.reset_parameters()
    return model


def timm_classifier(
    spec: DataSpec,
    variant: str,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    small_input_stem: bool = False,
    init: str = "timm",
) -> nn.Module:
    """Any timm classifier for ``spec``; ``init="torch"`` resets layers to PyTorch defaults."""
    if init not in INITS:
        raise ConfigError(f"model.init={init!r} is not one of: {', '.join(INITS)}")
    if init == "torch" and pretrained:
        raise ConfigError("model.init=torch re-initialises the network; it contradicts pretrained")
    model = create_timm(variant, spec, pretrained, drop_rate=drop_rate)
    if small_input_stem:
        swap_small_input_stem(model, spec.in_channels)
    return torch_default_init(model) if init == "torch" else model


def register_timm(
    name: str,
    default_variant: str,
    *,
    family: bool = False,
    resnet: bool = False,
    min_input_size: int = 1,
    notes: str = "",
) -> None:
    """Register ``name`` as :func:`timm_classifier` with just the options that apply to it."""
    params = [inspect.Parameter("spec", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    kw = inspect.Parameter.KEYWORD_ONLY
    if family:
        params.append(inspect.Parameter("variant", kw, default=default_variant))
    params += [
        inspect.Parameter("pretrained", kw, default=False),
        inspect.Parameter("drop_rate", kw, default=0.0),
    ]
    if resnet:
        params.append(inspect.Parameter("small_input_stem", kw, default=False))
    params.append(inspect.Parameter("init", kw, default="timm"))

    def build(spec: DataSpec, **options) -> nn.Module:
        options.setdefault("variant", default_variant)
        return timm_classifier(spec, **options)

    build.__signature__ = inspect.Signature(params)
    build.__name__ = name
    register_model(name, min_input_size=min_input_size, notes=notes)(build)


register_timm("resnet18", "resnet18", resnet=True, notes="timm resnet18; small_input_stem for 28²")
register_timm("resnet50", "resnet50", resnet=True, notes="timm resnet50; small_input_stem for 28²")
register_timm(
    "xception", "legacy_xception", family=True, notes="legacy_xception (xception41/65 by variant)"
)
register_timm(
    "mobilenet", "mobilenetv2_100", family=True, notes="MobileNetV2 (v3 small/large by variant)"
)
register_timm("inception_v3", "inception_v3", min_input_size=75, notes="needs >= 75px")
register_timm("vgg16", "vgg16", min_input_size=32, notes="needs >= 32px")
register_timm("timm", "resnet34", family=True, notes="any timm model: model.variant=<timm name>")
