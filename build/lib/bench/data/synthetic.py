"""Synthetic phantom datasets that need no download (2D/3D classification)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from bench.data.base import InMemoryDataModule
from bench.data.npz import SPLITS, load_classification_npz
from bench.data.phantoms import LESION_KINDS, classification_phantoms
from bench.io import atomic_save
from bench.spec import DataSpec

log = logging.getLogger(__name__)


def cached_npz(cache_dir: str | Path, stem: str, params: dict, build) -> Path:
    """Path of ``{stem}-{hash(params)}.npz`` in ``cache_dir``, built by ``build()`` if absent."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(cache_dir).expanduser() / f"{stem}-{digest}.npz"
    if not path.exists():
        arrays = build()
        atomic_save(path, lambda f: np.savez(f, **arrays))
        log.info("wrote %s", path)
    return path


class SyntheticDataModule(InMemoryDataModule):
    """Phantom lesions in textured noise: class 0 normal, classes 1.. lesion kinds.

    The images depend only on ``data_seed`` and the sizes, never on the training seed, so every
    seed of a sweep trains on the same data. They are written once in the MedMNIST npz layout
    under ``cache_dir`` and loaded through the same reader as real files.
    """

    def __init__(
        self,
        name: str = "synthetic",
        size: int = 28,
        spatial_dims: int = 2,
        num_classes: int = 3,
        n_train: int = 1000,
        n_val: int = 250,
        n_test: int = 250,
        data_seed: int = 1234,
        contrast: float = 0.35,
        cache_dir: str = "data/synthetic",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.name, self.size, self.spatial_dims = name, int(size), int(spatial_dims)
        self.num_classes, self.data_seed, self.contrast = int(num_classes), data_seed, contrast
        self.counts = {"train": n_train, "val": n_val, "test": n_test}
        self.cache_dir = cache_dir

    def base_spec(self) -> DataSpec:
        labels = ("normal", *LESION_KINDS[: self.num_classes - 1])
        return DataSpec(
            name=self.name,
            task="binary-class" if self.num_classes == 2 else "multi-class",
            spatial_dims=self.spatial_dims,
            in_channels=1,
            num_classes=self.num_classes,
            input_size=tuple([self.size] * self.spatial_dims),
            label_names=labels,
        )

    def _build(self) -> dict:
        arrays = {}
        for i, split in enumerate(SPLITS):
            x, y = classification_phantoms(
                self.counts[split],
                self.size,
                self.spatial_dims,
                self.num_classes,
                seed=self.data_seed * 10 + i,
                contrast=self.contrast,
            )
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
        return arrays

    def prepare_data(self) -> None:
        self.path  # noqa: B018 - builds the cache file once, in the main process

    @property
    def path(self) -> Path:
        params = {
            "size": self.size,
            "dims": self.spatial_dims,
            "classes": self.num_classes,
            "counts": self.counts,
            "seed": self.data_seed,
            "contrast": self.contrast,
            "v": 1,
        }
        return cached_npz(self.cache_dir, self.name, params, self._build)

    def load_splits(self):
        return load_classification_npz(self.path, self.base_spec())
