"""U-Net (2D or 3D by the data spec) for segmentation: encoder-decoder with skip connections."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.registry import register_model
from bench.spec import DataSpec


def _block(dims: int, cin: int, cout: int) -> nn.Sequential:
    Conv = nn.Conv3d if dims == 3 else nn.Conv2d
    Norm = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
    return nn.Sequential(
        Conv(cin, cout, 3, padding=1, bias=False),
        Norm(cout),
        nn.ReLU(inplace=True),
        Conv(cout, cout, 3, padding=1, bias=False),
        Norm(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Classic U-Net: ``depth`` down-sampling stages with widths ``base_width * 2**i``.

    Inputs whose size is not a multiple of ``2**depth`` are padded and the output cropped back,
    so any size works.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        dims: int = 2,
        depth: int = 4,
        base_width: int = 32,
    ) -> None:
        super().__init__()
        self.dims, self.depth = dims, depth
        ConvT = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        Conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.pool = nn.MaxPool3d(2) if dims == 3 else nn.MaxPool2d(2)
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(dims, in_channels, widths[0])]
            + [_block(dims, widths[i], widths[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(
            [ConvT(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)]
        )
        self.dec = nn.ModuleList([_block(dims, widths[i] * 2, widths[i]) for i in range(depth)])
        self.head = Conv(widths[0], num_classes, 1)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        mult = 2**self.depth
        pad = [p for s in reversed(size) for p in (0, (-s) % mult)]
        if any(pad):
            x = F.pad(x, pad)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(self.depth)):
            x = self.dec[i](torch.cat([self.up[i](x), skips.pop()], dim=1))
        x = self.head(x)
        return x[(..., *[slice(0, s) for s in size])]


@register_model("unet", kinds=("segmentation",), dims=(2, 3), notes="own 2D/3D U-Net")
def unet(spec: DataSpec, *, depth: int = 4, base_width: int = 32) -> UNet:
    return UNet(spec.in_channels, spec.num_outputs, spec.spatial_dims, depth, base_width)
