"""Classifiers from timm: ResNet, Xception, MobileNet, InceptionV3, VGG16 and any timm name."""

from __future__ import annotations

import timm
from torch import nn

from bench.errors import PretrainedUnavailableError, UnknownOptionError
from bench.models.registry import register_model
from bench.spec import DataSpec


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


def _resnet(name: str):
    def build(
        spec: DataSpec,
        pretrained: bool = False,
        small_input_stem: bool = False,
        drop_rate: float = 0.0,
        **_,
    ) -> nn.Module:
        model = create_timm(name, spec, pretrained, drop_rate=drop_rate)
        return swap_small_input_stem(model, spec.in_channels) if small_input_stem else model

    return build


register_model("resnet18", source="timm", notes="timm resnet18; small_input_stem for 28²")(
    _resnet("resnet18")
)
register_model("resnet50", source="timm", notes="timm resnet50; small_input_stem for 28²")(
    _resnet("resnet50")
)


def _family(default_variant: str):
    """A builder for a family of timm models chosen by ``model.variant``."""

    def build(
        spec: DataSpec,
        variant: str = default_variant,
        pretrained: bool = False,
        drop_rate: float = 0.0,
        **_,
    ) -> nn.Module:
        return create_timm(variant, spec, pretrained, drop_rate=drop_rate)

    return build


register_model("xception", source="timm", notes="timm legacy_xception (xception41/65 by variant)")(
    _family("legacy_xception")
)
register_model("mobilenet", source="timm", notes="MobileNetV2 (v3 small/large by variant)")(
    _family("mobilenetv2_100")
)


@register_model("inception_v3", source="timm", min_input_size=75, notes="needs >= 75px")
def inception_v3(spec: DataSpec, pretrained: bool = False, drop_rate: float = 0.0, **_):
    return create_timm("inception_v3", spec, pretrained, drop_rate=drop_rate)


@register_model("vgg16", source="timm", min_input_size=32, notes="needs >= 32px")
def vgg16(spec: DataSpec, pretrained: bool = False, drop_rate: float = 0.0, **_):
    return create_timm("vgg16", spec, pretrained, drop_rate=drop_rate)


@register_model("timm", source="timm", notes="any timm model: model=timm model.name=<timm name>")
def any_timm(
    spec: DataSpec, variant: str = "resnet34", pretrained: bool = False, drop_rate: float = 0.0, **_
) -> nn.Module:
    return create_timm(variant, spec, pretrained, drop_rate=drop_rate)
