"""The MedMNIST v2 paper's 3D ResNets (ResNet-18+3D, ResNet-50+3D) and torchvision's R3D-18.

The paper builds its 3D baselines by converting its 28² ResNets (3x3 stride-1 stem, no max-pool)
into 3D networks: every 2D convolution, BatchNorm and pooling layer becomes its 3D counterpart
with the same kernel size along depth. With ``init="i3d"`` (the official script's default,
``--pretrained_3d i3d``) the randomly initialised 2D kernels are inflated along depth and divided
by the kernel depth; ``init="default"`` keeps PyTorch's default 3D initialisation instead.
timm has no 3D networks, so the conversion is our own code.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.video import r3d_18 as tv_r3d_18

from bench.errors import ConfigError
from bench.models.registry import register_model
from bench.models.timm_models import timm_classifier
from bench.spec import DataSpec

INITS_3D = ("i3d", "default")


def _conv3d_like(conv: nn.Conv2d, inflate: bool) -> nn.Conv3d:
    k = conv.kernel_size
    new = nn.Conv3d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=(k[0], *k),
        stride=(conv.stride[0], *conv.stride),
        padding=(conv.padding[0], *conv.padding),
        dilation=(conv.dilation[0], *conv.dilation),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    if inflate:
        with torch.no_grad():
            w = conv.weight.unsqueeze(2).repeat(1, 1, k[0], 1, 1) / k[0]
            new.weight.copy_(w)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def convert_to_3d(module: nn.Module, inflate: bool) -> nn.Module:
    """Replace, in place, every 2D conv/BatchNorm/pooling layer of ``module`` by its 3D twin."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            new = _conv3d_like(child, inflate)
        elif isinstance(child, nn.BatchNorm2d):
            new = nn.BatchNorm3d(child.num_features, child.eps, child.momentum, child.affine)
        elif isinstance(child, nn.MaxPool2d):
            new = nn.MaxPool3d(child.kernel_size, child.stride, child.padding)
        elif child.__class__.__name__ == "SelectAdaptivePool2d":  # timm's global pool
            new = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(1))
        else:
            convert_to_3d(child, inflate)
            continue
        setattr(module, name, new)
    return module


def paper_resnet_3d(spec: DataSpec, depth: int, init: str) -> nn.Module:
    """ResNet-{18,50}+3D as MedMNIST v2 trains it (converted from the paper's 28² ResNet)."""
    if init not in INITS_3D:
        raise ConfigError(f"model.init={init!r} is not one of: {', '.join(INITS_3D)}")
    as_2d = DataSpec(
        name=spec.name,
        task=spec.task,
        spatial_dims=2,
        in_channels=spec.in_channels,
        num_classes=spec.num_classes,
        input_size=spec.input_size[:2],
    )
    net = timm_classifier(as_2d, f"resnet{depth}", small_input_stem=True, init="torch")
    return convert_to_3d(net, inflate=init == "i3d")


@register_model("resnet18_3d", dims=(3,), notes="MedMNIST v2 ResNet-18+3D (2D paper net, 3D)")
def resnet18_3d(spec: DataSpec, *, init: str = "i3d") -> nn.Module:
    return paper_resnet_3d(spec, 18, init)


@register_model("resnet50_3d", dims=(3,), notes="MedMNIST v2 ResNet-50+3D (2D paper net, 3D)")
def resnet50_3d(spec: DataSpec, *, init: str = "i3d") -> nn.Module:
    return paper_resnet_3d(spec, 50, init)


class R3D18(nn.Module):
    """torchvision's video R3D-18 with the stem taking ``in_channels`` and a new head."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        net = tv_r3d_18(weights=None)
        stem = net.stem[0]
        net.stem[0] = nn.Conv3d(
            in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False
        )
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        self.net = net

    def get_classifier(self) -> nn.Module:
        return self.net.fc

    def forward(self, x):
        return self.net(x)


@register_model("r3d_18", dims=(3,), notes="torchvision R3D-18 (video ResNet, 7x7x3 stem)")
def r3d_18(spec: DataSpec) -> R3D18:
    return R3D18(spec.in_channels, spec.num_outputs)
