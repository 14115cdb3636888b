"""A plain 3D CNN for volumes (28³/64³ MedMNIST3D)."""

from __future__ import annotations

from torch import nn

from bench.models.registry import register_model
from bench.spec import DataSpec


class CNN3D(nn.Module):
    """Conv3d-BN-ReLU-MaxPool blocks with doubling width, global average pool, dropout, linear."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 3,
        width: int = 32,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            out = width * 2**i
            layers += [
                nn.Conv3d(ch, out, 3, padding=1, bias=False),
                nn.BatchNorm3d(out),
                nn.ReLU(inplace=True),
                nn.Conv3d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm3d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(2, ceil_mode=True),
            ]
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(ch, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x):
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


@register_model("cnn3d", dims=(3,), notes="own 3D CNN for 28³/64³ volumes")
def cnn3d(spec: DataSpec, *, depth: int = 3, width: int = 32, dropout: float = 0.3) -> CNN3D:
    return CNN3D(spec.in_channels, spec.num_outputs, depth, width, dropout)
