"""Small generated files in the official layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COUNTS = {"train": 40, "val": 12, "test": 12}


def write_medmnist_npz(
    path: Path,
    shape: tuple[int, ...],
    n_classes: int,
    multi_label: bool = False,
    counts: dict | None = None,
    seed: int = 0,
    **overrides,
) -> Path:
    """An npz with {split}_images (uint8, ``shape`` per sample) and {split}_labels (N,1)/(N,L)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (counts or COUNTS).items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        if multi_label:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, n_classes))
        else:
            arrays[f"{split}_labels"] = (np.arange(n) % n_classes).reshape(n, 1)
    arrays.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
