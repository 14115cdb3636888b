"""Small generated files in the official layouts (the generator is the package's own)."""

from __future__ import annotations

from bench.data.npz import write_medmnist_npz

COUNTS = {"train": 40, "val": 12, "test": 12}

__all__ = ["COUNTS", "write_medmnist_npz"]
