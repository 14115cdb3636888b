"""Seeded phantom images: faint lesions in textured noise, for tests and the demo.

Hard enough that a model must learn (lesions are faint against noise and background texture,
and vary in size and place), easy enough that a small CNN learns them in seconds.
"""

from __future__ import annotations

import numpy as np

# class 0 is always "normal" (no lesion); the others are lesion kinds
LESION_KINDS = ("blob", "ring", "streak", "double")


def _grid(size: int, dims: int) -> list[np.ndarray]:
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    return np.meshgrid(*[axis] * dims, indexing="ij")


def _background(rng: np.random.Generator, n: int, size: int, dims: int) -> np.ndarray:
    """Smooth random texture (a few wide Gaussians) plus pixel noise, shape (n, *[size]*dims)."""
    coords = _grid(size, dims)
    img = np.full((n, *[size] * dims), 0.35, dtype=np.float32)
    for _ in range(3):
        centre = rng.uniform(-1, 1, (n, dims)).astype(np.float32)
        width = rng.uniform(0.4, 0.9, n).astype(np.float32)
        amp = rng.uniform(-0.12, 0.12, n).astype(np.float32)
        d2 = sum(
            (c[None] - centre[:, i].reshape(-1, *[1] * dims)) ** 2 for i, c in enumerate(coords)
        )
        img += amp.reshape(-1, *[1] * dims) * np.exp(
            -d2 / (2 * width.reshape(-1, *[1] * dims) ** 2)
        )
    img += rng.normal(0, 0.12, img.shape).astype(np.float32)
    return img


def _shape_field(kind: str, coords, centre, radius, angle) -> np.ndarray:
    """Soft lesion intensity in [0,1] for one sample."""
    d = [c - centre[i] for i, c in enumerate(coords)]
    if kind == "streak":  # elongated along a random direction in the first plane
        u = d[0] * np.cos(angle) + d[1] * np.sin(angle)
        v = -d[0] * np.sin(angle) + d[1] * np.cos(angle)
        r2 = (
            (u / (radius * 2.2)) ** 2
            + (v / (radius * 0.45)) ** 2
            + sum(x**2 for x in d[2:]) / radius**2
        )
        return np.exp(-r2 * 2)
    r = np.sqrt(sum(x**2 for x in d))
    if kind == "ring":
        return np.exp(-((r - radius) ** 2) / (2 * (radius * 0.22) ** 2))
    if kind == "double":
        off = np.zeros_like(centre)
        off[0] = radius * 1.3
        r2 = np.sqrt(sum((c - centre[i] - off[i]) ** 2 for i, c in enumerate(coords)))
        r1 = np.sqrt(sum((c - centre[i] + off[i]) ** 2 for i, c in enumerate(coords)))
        return np.maximum(
            np.exp(-(r1**2) / (2 * (radius * 0.5) ** 2)),
            np.exp(-(r2**2) / (2 * (radius * 0.5) ** 2)),
        )
    return np.exp(-(r**2) / (2 * (radius * 0.6) ** 2))


def classification_phantoms(
    n: int, size: int, dims: int, num_classes: int, seed: int, contrast: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (n, *[size]*dims) and balanced int labels in ``[0, num_classes)``."""
    if not 2 <= num_classes <= len(LESION_KINDS) + 1:
        raise ValueError(f"num_classes must be 2..{len(LESION_KINDS) + 1}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    img = _background(rng, n, size, dims)
    coords = _grid(size, dims)
    for i in np.flatnonzero(labels > 0):
        kind = LESION_KINDS[labels[i] - 1]
        centre = rng.uniform(-0.45, 0.45, dims).astype(np.float32)
        radius = rng.uniform(0.16, 0.28)
        amp = contrast * rng.uniform(0.8, 1.2)
        img[i] += amp * _shape_field(kind, coords, centre, radius, rng.uniform(0, np.pi))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), labels.astype(np.int64)


def segmentation_phantoms(
    n: int, size: int, num_classes: int, seed: int, contrast: float = 0.35, dims: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images and masks, (n, *[size]*dims) each: every foreground class is drawn as
    1-2 lesions of its kind (blob, streak, ring; spheres/tubes/shells in 3D)."""
    rng = np.random.default_rng(seed)
    img = _background(rng, n, size, dims)
    masks = np.zeros((n, *[size] * dims), dtype=np.uint8)
    coords = _grid(size, dims)
    for i in range(n):
        for cls in range(1, num_classes):
            for _ in range(rng.integers(1, 3)):
                kind = ("blob", "streak", "ring")[(cls - 1) % 3]
                centre = rng.uniform(-0.6, 0.6, dims).astype(np.float32)
                # a 3D lesion of the 2D radius would fill ~0.1 % of a volume: grow it
                radius = rng.uniform(0.12, 0.22) * (1.6 if dims == 3 else 1.0)
                field = _shape_field(kind, coords, centre, radius, rng.uniform(0, np.pi))
                sign = 1 if cls % 2 else -1
                img[i] += sign * contrast * field
                masks[i][field > 0.5] = cls
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), masks
