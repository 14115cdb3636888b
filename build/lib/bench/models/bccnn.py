"""BCCNN: a reconstruction of the breast-cancer CNN of Abunasser et al. (2023).

The paper (and the review that highlights it) describes a plain CNN -- stacked convolution +
ReLU + max-pooling blocks with a growing number of filters, then fully connected layers with
dropout and a softmax output -- that beat Xception, InceptionV3, VGG16, MobileNet and ResNet50
on BreaKHis (8 classes). Its exact layer list is not published in a form we can read, so this is
a reconstruction. Assumptions, all configurable:

- ``depth`` = 4 blocks of 3x3 conv (same padding) + ReLU + 2x2 max-pool, filters doubling from
  ``width`` = 32 (32-64-128-256); pooling uses ``ceil_mode`` so 28² inputs survive 4 pools;
- an adaptive average pool to ``pool_size``² makes the network input-size agnostic before
  flattening (the original fixed its input size instead);
- dense layers of ``hidden`` = (512, 256) units with ReLU and ``dropout`` = 0.5;
- no batch normalisation by default (the description names none); ``batch_norm=true`` adds it.
The softmax is applied by the loss/metrics, so the module returns logits.
"""

from __future__ import annotations

from torch import nn

from bench.models.registry import register_model
from bench.spec import DataSpec


class BCCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 4,
        width: int = 32,
        hidden: tuple[int, ...] = (512, 256),
        dropout: float = 0.5,
        pool_size: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            out = width * 2**i
            layers += [nn.Conv2d(ch, out, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        dense: list[nn.Module] = [nn.Flatten()]
        feat = ch * pool_size * pool_size
        for h in hidden:
            dense += [nn.Linear(feat, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            feat = h
        self.dense = nn.Sequential(*dense)
        self.fc = nn.Linear(feat, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(self.dense(self.pool(self.features(x))))


@register_model("bccnn", notes="reconstruction of Abunasser et al. 2023 (see docstring)")
def bccnn(
    spec: DataSpec,
    *,
    depth: int = 4,
    width: int = 32,
    hidden=(512, 256),
    dropout: float = 0.5,
    pool_size: int = 2,
    batch_norm: bool = False,
) -> BCCNN:
    return BCCNN(
        spec.in_channels,
        spec.num_outputs,
        depth,
        width,
        tuple(hidden),
        dropout,
        pool_size,
        batch_norm,
    )
