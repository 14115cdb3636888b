"""Augmentation applied to a whole batch with tensor ops (works on CPU and GPU, 2D and 3D).

Presets (``data.augment``): ``none`` (the MedMNIST protocol), ``light`` (flips, ±10° rotation,
±10% shift), ``heavy`` (flips on every axis, ±25° rotation, ±15% shift, 0.85-1.15 scale,
brightness/contrast jitter) and ``unet`` (the U-Net paper's: flips, 90° rotations, elastic
deformation from a coarse 3x3 grid of random displacements of 10 px std, upsampled bicubically
and applied with MONAI's ``Warp``, and intensity jitter). Masks get the same geometry with
nearest-neighbour sampling. Every random draw is per sample, made for the whole batch at once.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import UnknownOptionError


@dataclass(frozen=True)
class AugmentPreset:
    flip_axes: tuple[int, ...] = ()  # spatial axes counted from the last (-1 = width)
    rotate_deg: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    intensity: float = 0.0
    rot90: bool = False  # a random multiple of 90° in the (H, W) plane (square inputs)
    elastic_px: float = 0.0  # std of the coarse-grid displacements, in pixels
    elastic_grid: int = 3


PRESETS = {
    "none": None,
    "light": AugmentPreset(flip_axes=(-1,), rotate_deg=10, translate=0.1),
    "heavy": AugmentPreset(
        flip_axes=(-1, -2, -3), rotate_deg=25, translate=0.15, scale=(0.85, 1.15), intensity=0.1
    ),
    "unet": AugmentPreset(flip_axes=(-1, -2), rot90=True, elastic_px=10.0, intensity=0.1),
}


def get_preset(name: str) -> AugmentPreset | None:
    if name not in PRESETS:
        raise UnknownOptionError(
            f"unknown augmentation preset {name!r}; choose data.augment from {sorted(PRESETS)}"
        )
    return PRESETS[name]


def _affine_matrices(n: int, dims: int, p: AugmentPreset, device) -> torch.Tensor:
    """Random affine matrices (n, dims, dims+1) in normalised coordinates."""
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(p.rotate_deg)
    scale = torch.empty(n, device=device).uniform_(*p.scale)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, dims, dims + 1, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    if dims == 3:  # rotate in the (W, H) plane, scale depth alike
        theta[:, 2, 2] = 1 / scale
    theta[:, :, dims] = (torch.rand(n, dims, device=device) * 2 - 1) * p.translate * 2
    return theta


def augment_batch(
    x: torch.Tensor, preset: AugmentPreset | None, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment a float batch (N,C,*spatial) and, if given, its integer masks (N,*spatial)."""
    if preset is None:
        return x, mask
    dims = x.ndim - 2
    n = x.shape[0]
    for axis in preset.flip_axes:
        if -axis > dims:
            continue
        flip = torch.rand(n, device=x.device) < 0.5
        x = torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(axis), x)
        if mask is not None:
            mask = torch.where(flip.view(-1, *[1] * (mask.ndim - 1)), mask.flip(axis), mask)
    if preset.rot90 and x.shape[-1] == x.shape[-2]:
        x, mask = _rot90(x, mask)
    if preset.elastic_px:
        x, mask = _elastic(x, mask, preset.elastic_px, preset.elastic_grid)
    if preset.rotate_deg or preset.translate or preset.scale != (1.0, 1.0):
        theta = _affine_matrices(n, dims, preset, x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if mask is not None:
            m = F.grid_sample(
                mask.unsqueeze(1).float(),
                grid,
                mode="nearest",
                padding_mode="border",
                align_corners=False,
            )
            mask = m.squeeze(1).round().long()
    if preset.intensity:
        shape = (n, *[1] * (x.ndim - 1))
        gain = 1 + (torch.rand(shape, device=x.device) * 2 - 1) * preset.intensity
        bias = (torch.rand(shape, device=x.device) * 2 - 1) * preset.intensity
        x = x * gain + bias
    return x, mask


def _rot90(x: torch.Tensor, mask: torch.Tensor | None):
    """Each sample turned by its own random multiple of 90° in the last two axes."""
    n = x.shape[0]
    k = torch.randint(0, 4, (n,), device=x.device)
    out_x, out_m = x, mask
    for turn in (1, 2, 3):
        sel = k == turn
        out_x = torch.where(sel.view(-1, *[1] * (x.ndim - 1)), x.rot90(turn, (-2, -1)), out_x)
        if mask is not None:
            rot = mask.rot90(turn, (-2, -1))
            out_m = torch.where(sel.view(-1, *[1] * (mask.ndim - 1)), rot, out_m)
    return out_x, out_m


def _elastic(x: torch.Tensor, mask: torch.Tensor | None, std_px: float, grid: int):
    """The U-Net paper's elastic deformation, per sample: random displacements on a coarse
    ``grid``^dims lattice, interpolated to a smooth dense field, warped with MONAI's ``Warp``."""
    from monai.networks.blocks import Warp

    # without MONAI's compiled extension Warp says once per call that it uses grid_sample
    warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp: Using PyTorch")
    n, dims = x.shape[0], x.ndim - 2
    spatial = x.shape[2:]
    coarse = torch.randn(n, dims, *[grid] * dims, device=x.device) * std_px
    mode = "bicubic" if dims == 2 else "trilinear"
    ddf = F.interpolate(coarse, size=spatial, mode=mode, align_corners=True)
    x = Warp(mode="bilinear", padding_mode="reflection")(x, ddf)
    if mask is not None:
        m = Warp(mode="nearest", padding_mode="reflection")(mask.unsqueeze(1).float(), ddf)
        mask = m.squeeze(1).round().long()
    return x, mask
