"""Segmentation networks of the field's libraries: MONAI (2D/3D) and segmentation_models_pytorch.

MONAI: ``monai_unet`` (``monai.networks.nets.UNet``, residual units optional), ``basic_unet``
(``BasicUNet``), ``attention_unet`` (``AttentionUnet``), ``segresnet`` (``SegResNet``) and
``dynunet`` (``DynUNet``, nnU-Net's network). segmentation_models_pytorch (2D): ``smp_unet``
and ``smp_unetplusplus`` with any encoder smp knows (``resnet34``, or ``tu-<timm model>`` for
timm's); encoder weights stay off (offline by default) unless ``encoder_weights`` names them,
and a local file goes through ``model.weights`` like every other model.

Each network is wrapped in :class:`PadToMultiple`, so an input whose size is not a multiple of
the network's total down-sampling is padded and the output cropped back (any image size works,
as with the own U-Net). The libraries are imported when a model is built, not at start-up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import ConfigError
from bench.models.registry import register_model
from bench.spec import DataSpec


class PadToMultiple(nn.Module):
    """Runs ``net`` on the input zero-padded to a multiple of ``multiple``; crops back."""

    def __init__(self, net: nn.Module, multiple: int, head: str | None = None) -> None:
        super().__init__()
        self.net, self.multiple, self._head = net, int(multiple), head

    def get_classifier(self) -> nn.Module:
        return self.net.get_submodule(self._head) if self._head else self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [p for s in reversed(size) for p in (0, (-s) % self.multiple)]
        if any(pad):
            x = F.pad(x, pad)
        out = self.net(x)
        if isinstance(out, (list, tuple)):  # deep supervision heads: the full-size one
            out = out[0]
        return out[(..., *[slice(0, s) for s in size])]


def _shape(spec: DataSpec) -> dict:
    """The keywords every MONAI network takes from the data: dims, input channels, classes."""
    return {
        "spatial_dims": spec.spatial_dims,
        "in_channels": spec.in_channels,
        "out_channels": spec.num_outputs,
    }


def _widths(base_width: int, depth: int) -> tuple[int, ...]:
    if depth < 1 or base_width < 1:
        raise ConfigError(
            f"model.depth and model.base_width must be >= 1 (got {depth}, {base_width})"
        )
    return tuple(base_width * 2**i for i in range(depth + 1))


@register_model(
    "monai_unet", kinds=("segmentation",), dims=(2, 3), notes="MONAI UNet (residual units)"
)
def monai_unet(
    spec: DataSpec,
    *,
    depth: int = 4,
    base_width: int = 32,
    num_res_units: int = 2,
    norm: str = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    from monai.networks.nets import UNet

    net = UNet(
        **_shape(spec),
        channels=_widths(base_width, depth),
        strides=(2,) * depth,
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )
    return PadToMultiple(net, 2**depth)


@register_model("basic_unet", kinds=("segmentation",), dims=(2, 3), notes="MONAI BasicUNet")
def basic_unet(
    spec: DataSpec,
    *,
    features: tuple[int, ...] = (32, 32, 64, 128, 256, 32),
    norm: str = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    from monai.networks.nets import BasicUNet

    features = tuple(int(f) for f in features)
    if len(features) != 6:
        raise ConfigError(f"model.features needs 6 widths (5 levels + the last), got {features}")
    net = BasicUNet(
        **_shape(spec),
        features=features,
        norm=norm,
        dropout=dropout,
    )
    return PadToMultiple(net, 16, head="final_conv")


@register_model("attention_unet", kinds=("segmentation",), dims=(2, 3), notes="MONAI AttentionUnet")
def attention_unet(
    spec: DataSpec, *, depth: int = 4, base_width: int = 32, dropout: float = 0.0
) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    net = AttentionUnet(
        **_shape(spec),
        channels=_widths(base_width, depth),
        strides=(2,) * depth,
        dropout=dropout,
    )
    return PadToMultiple(net, 2**depth)


@register_model("segresnet", kinds=("segmentation",), dims=(2, 3), notes="MONAI SegResNet")
def segresnet(
    spec: DataSpec,
    *,
    init_filters: int = 16,
    blocks_down: tuple[int, ...] = (1, 2, 2, 4),
    blocks_up: tuple[int, ...] = (1, 1, 1),
    dropout: float | None = None,
) -> nn.Module:
    from monai.networks.nets import SegResNet

    blocks_down, blocks_up = tuple(int(b) for b in blocks_down), tuple(int(b) for b in blocks_up)
    if init_filters < 8 or init_filters % 8:
        raise ConfigError(
            f"model.init_filters={init_filters} must be a multiple of 8 (SegResNet normalises "
            "in 8 groups)"
        )
    if len(blocks_up) != len(blocks_down) - 1:
        raise ConfigError(
            f"model.blocks_up needs one entry fewer than model.blocks_down "
            f"(got {len(blocks_up)} and {len(blocks_down)})"
        )
    net = SegResNet(
        **_shape(spec),
        init_filters=init_filters,
        dropout_prob=dropout,
        blocks_down=blocks_down,
        blocks_up=blocks_up,
    )
    return PadToMultiple(net, 2 ** (len(blocks_down) - 1), head="conv_final")


@register_model(
    "dynunet", kinds=("segmentation",), dims=(2, 3), notes="MONAI DynUNet (nnU-Net's network)"
)
def dynunet(
    spec: DataSpec,
    *,
    depth: int = 4,
    base_width: int = 32,
    max_width: int = 320,
    res_block: bool = False,
    norm: str = "instance",
    deep_supervision: bool = False,
) -> nn.Module:
    from monai.networks.nets import DynUNet

    # nnU-Net's plan for isotropic data: 3x3 kernels, a stride-1 first stage, then /2 per level
    kernels = [3] * (depth + 1)
    strides = [1] + [2] * depth
    filters = [min(w, max_width) for w in _widths(base_width, depth)]
    net = DynUNet(
        **_shape(spec),
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        norm_name=norm,
        res_block=res_block,
        deep_supervision=deep_supervision,
        deep_supr_num=max(1, depth - 2) if deep_supervision else 1,
    )
    return PadToMultiple(net, 2**depth, head="output_block")


def _smp(arch: str, spec: DataSpec, encoder_name: str, encoder_depth: int, encoder_weights):
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:  # pragma: no cover - installed with medbench
        raise ConfigError(
            "segmentation_models_pytorch is not installed; run make install (or pip install "
            "segmentation-models-pytorch)"
        ) from e
    try:
        net = getattr(smp, arch)(
            encoder_name=encoder_name,
            encoder_depth=encoder_depth,
            encoder_weights=encoder_weights,
            in_channels=spec.in_channels,
            classes=spec.num_outputs,
            decoder_channels=tuple(256 // 2**i for i in range(encoder_depth)),
        )
    except (KeyError, ValueError) as e:
        raise ConfigError(
            f"segmentation_models_pytorch cannot build {arch} with encoder "
            f"{encoder_name!r}: {str(e).splitlines()[0][:160]}; pick an smp encoder "
            "(resnet34, efficientnet-b0, ...) or tu-<timm model>"
        ) from e
    return PadToMultiple(net, 2**encoder_depth, head="segmentation_head")


@register_model(
    "smp_unet", kinds=("segmentation",), dims=(2,), notes="segmentation_models_pytorch Unet"
)
def smp_unet(
    spec: DataSpec,
    *,
    encoder_name: str = "resnet34",
    encoder_depth: int = 5,
    encoder_weights: str | None = None,
) -> nn.Module:
    return _smp("Unet", spec, encoder_name, encoder_depth, encoder_weights)


@register_model(
    "smp_unetplusplus",
    kinds=("segmentation",),
    dims=(2,),
    notes="segmentation_models_pytorch UnetPlusPlus",
)
def smp_unetplusplus(
    spec: DataSpec,
    *,
    encoder_name: str = "resnet34",
    encoder_depth: int = 5,
    encoder_weights: str | None = None,
) -> nn.Module:
    return _smp("UnetPlusPlus", spec, encoder_name, encoder_depth, encoder_weights)
