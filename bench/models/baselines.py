"""Non-learned segmentation baselines: what a model must beat without any training.

``otsu``: Otsu's threshold (scikit-image) of each image's own intensities; with ``invert`` the
pixels darker than the threshold are the foreground (membranes in electron microscopy are
dark). Binary data only. The model has no parameters: a run evaluates it on val and test
without fitting, and writes an ordinary record, so it ranks beside trained models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bench.errors import ModelDataMismatchError
from bench.models.registry import register_model
from bench.spec import DataSpec


class OtsuThreshold(nn.Module):
    """Logits (N, 2, *spatial): class 1 where a pixel lies beyond its image's Otsu threshold."""

    learned = False  # evaluated as is: no optimiser, no epochs
    whole_image = True  # the threshold is the whole image's, not a sliding window's

    def __init__(self, invert: bool = True) -> None:
        super().__init__()
        self.invert = invert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from skimage.filters import threshold_otsu

        gray = x.float().mean(1)  # (N, *spatial)
        arr = gray.detach().cpu().numpy()
        t = torch.as_tensor(
            np.array([threshold_otsu(a) for a in arr], dtype=np.float32), device=x.device
        ).view(-1, *[1] * (gray.ndim - 1))
        margin = (t - gray) if self.invert else (gray - t)
        return torch.stack([torch.zeros_like(margin), margin], dim=1)


@register_model(
    "otsu", kinds=("segmentation",), dims=(2, 3), notes="non-learned Otsu threshold baseline"
)
def otsu(spec: DataSpec, *, invert: bool = True) -> OtsuThreshold:
    if spec.num_outputs != 2:
        raise ModelDataMismatchError(
            f"model 'otsu' is a binary baseline but data {spec.name!r} has {spec.num_outputs} "
            "classes; use it on foreground/background data"
        )
    return OtsuThreshold(invert)
