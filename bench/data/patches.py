"""Random patches of a batch (2D or 3D), cut with one indexing op for the whole batch.

``random``: uniform patch positions. ``foreground``: with probability ``foreground_fraction``
a patch is centred on a random foreground pixel of its mask (MONAI's
``RandCropByPosNegLabel`` sampling, done on the batch), otherwise uniform; images without
foreground fall back to uniform.
"""

from __future__ import annotations

import torch

from bench.errors import ConfigError

PATCH_SAMPLERS = ("random", "foreground")


def check_patch_size(patch_size, spatial_dims: int, image_size: tuple[int, ...]):
    """``data.patch_size`` (int or list) as a tuple per spatial axis, within the image."""
    if patch_size is None:
        return None
    sizes = [patch_size] * spatial_dims if isinstance(patch_size, int) else list(patch_size)
    if len(sizes) != spatial_dims or any(int(s) < 1 for s in sizes):
        raise ConfigError(
            f"data.patch_size={patch_size} must be one positive size or {spatial_dims} sizes "
            f"(the data is {spatial_dims}D)"
        )
    sizes = tuple(int(s) for s in sizes)
    if any(p > s for p, s in zip(sizes, image_size, strict=True)):
        raise ConfigError(
            f"data.patch_size={list(sizes)} is larger than the images {list(image_size)}; "
            "choose a smaller patch or remove data.patch_size"
        )
    return sizes


def patch_origins(
    mask: torch.Tensor,
    patch: tuple[int, ...],
    sampler: str = "random",
    foreground_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Top-left corners (N, dims) of one patch per sample of ``mask`` (N, *spatial)."""
    n, spatial = mask.shape[0], mask.shape[1:]
    dev = mask.device
    room = torch.tensor([s - p + 1 for s, p in zip(spatial, patch, strict=True)], device=dev)
    origins = (torch.rand(n, len(spatial), device=dev, generator=generator) * room).long()
    if sampler == "random":
        return origins
    fg = (mask.reshape(n, -1) > 0).float()
    has_fg = fg.sum(1) > 0
    pick = torch.rand(n, device=dev, generator=generator) < foreground_fraction
    use = has_fg & pick
    if not use.any():
        return origins
    weights = torch.where(has_fg[:, None], fg, torch.ones_like(fg))
    flat = torch.multinomial(weights, 1, generator=generator)[:, 0]
    centre = torch.stack(torch.unravel_index(flat, spatial), dim=1)
    half = torch.tensor([p // 2 for p in patch], device=dev)
    around = torch.minimum((centre - half).clamp_min(0), room - 1)
    return torch.where(use[:, None], around, origins)


def crop(x: torch.Tensor, origins: torch.Tensor, patch: tuple[int, ...]) -> torch.Tensor:
    """Patches (N, [C,] *patch) of ``x`` (N, [C,] *spatial) at ``origins`` (N, dims)."""
    dims = len(patch)
    lead = x.ndim - dims  # 1 (masks) or 2 (images with channels)
    n = x.shape[0]
    grids = [
        origins[:, d].view(n, *[1] * dims)
        + torch.arange(p, device=x.device).view(*[1] * (d + 1), p, *[1] * (dims - d - 1))
        for d, p in enumerate(patch)
    ]
    batch = torch.arange(n, device=x.device).view(n, *[1] * dims)
    if lead == 1:
        return x[(batch, *grids)]
    moved = x.movedim(1, -1)  # channels last for the gather, back after
    return moved[(batch, *grids)].movedim(-1, 1).contiguous()
