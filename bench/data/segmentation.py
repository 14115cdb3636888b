"""Segmentation data in the MedSegBench npz layout, and synthetic phantoms with masks.

MedSegBench files hold ``{split}_images`` (N,H,W) or (N,H,W,3) uint8 and ``{split}_label``
(N,H,W) integer masks for split in train/val/test (sizes 128/256/512). Masks are checked on
load: same spatial size as the images, values below ``num_classes``.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.base import InMemoryDataModule
from bench.data.fingerprint import npz_fingerprint
from bench.data.npz import (
    SPLITS,
    check_images,
    check_masks,
    open_npz,
    read_array,
    to_channels_first,
)
from bench.data.phantoms import segmentation_phantoms
from bench.data.synthetic import cached_npz
from bench.errors import ConfigError, DatasetNotFoundError
from bench.spec import DataSpec


def load_segmentation_npz(
    path: Path, num_classes: int, mask_key: str = "label", spatial_dims: int = 2
) -> dict:
    npz = open_npz(path)
    out = {}
    for split in SPLITS:
        images = read_array(npz, f"{split}_images", path)
        masks = read_array(npz, f"{split}_{mask_key}", path)
        check_images(images, f"{split}_images", path, (4, 5) if spatial_dims == 3 else (3, 4))
        masks = check_masks(masks, images, f"{split}_{mask_key}", path, num_classes, spatial_dims)
        out[split] = (to_channels_first(images, spatial_dims), masks)
    return out


class SegmentationNpzDataModule(InMemoryDataModule):
    """A MedSegBench-style npz file: ``data.path``, ``data.num_classes`` (background included)."""

    def __init__(
        self,
        path: str,
        num_classes: int,
        name: str | None = None,
        label_names: list[str] | None = None,
        mask_key: str = "label",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser()
        self.num_classes = int(num_classes)
        self.name = name or self.path.stem
        self.label_names = tuple(
            label_names or ["background"] + [f"class{i}" for i in range(1, self.num_classes)]
        )
        self.mask_key = mask_key
        self._shape: tuple[int, ...] | None = None

    def _peek(self) -> tuple[int, ...]:
        if self._shape is None:
            if not self.path.exists():
                raise DatasetNotFoundError(
                    f"segmentation file {self.path} not found; set data.path to a MedSegBench "
                    "npz ({split}_images / {split}_label)"
                )
            images = read_array(open_npz(self.path), "train_images", self.path)
            self._shape = tuple(images.shape)
        return self._shape

    def base_spec(self) -> DataSpec:
        shape = self._peek()
        channels = shape[3] if len(shape) == 4 else 1
        return DataSpec(
            self.name,
            "segmentation",
            2,
            channels,
            self.num_classes,
            tuple(shape[1:3]),
            self.label_names,
        )

    def fingerprint(self) -> str:
        self._peek()  # a missing file is named before any hashing
        return npz_fingerprint(self.path)

    def load_splits(self):
        return load_segmentation_npz(self.path, self.num_classes, self.mask_key)


class SyntheticSegDataModule(InMemoryDataModule):
    """Phantom lesions with masks (no download); class k is drawn as a lesion of kind k."""

    def __init__(
        self,
        name: str = "synthetic_seg",
        size: int = 64,
        num_classes: int = 3,
        n_train: int = 200,
        n_val: int = 50,
        n_test: int = 50,
        data_seed: int = 1234,
        contrast: float = 0.5,
        cache_dir: str = "data/synthetic",
        spatial_dims: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if spatial_dims not in (2, 3):
            raise ConfigError(
                f"data.spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims}"
            )
        self.name, self.size, self.num_classes = name, int(size), int(num_classes)
        self.spatial_dims = int(spatial_dims)
        self.counts = {"train": n_train, "val": n_val, "test": n_test}
        self.data_seed, self.contrast, self.cache_dir = data_seed, contrast, cache_dir

    def base_spec(self) -> DataSpec:
        names = ("background", "blob", "streak", "ring")[: self.num_classes]
        return DataSpec(
            self.name,
            "segmentation",
            self.spatial_dims,
            1,
            self.num_classes,
            (self.size,) * self.spatial_dims,
            names,
        )

    @property
    def path(self) -> Path:
        params = {
            "size": self.size,
            "classes": self.num_classes,
            "counts": self.counts,
            "seed": self.data_seed,
            "contrast": self.contrast,
            "v": 1,
            **({"dims": 3} if self.spatial_dims == 3 else {}),  # 2D keeps its existing cache file
        }

        def build():
            arrays = {}
            for i, split in enumerate(SPLITS):
                x, m = segmentation_phantoms(
                    self.counts[split],
                    self.size,
                    self.num_classes,
                    self.data_seed * 10 + i,
                    self.contrast,
                    self.spatial_dims,
                )
                arrays[f"{split}_images"], arrays[f"{split}_label"] = x, m
            return arrays

        return cached_npz(self.cache_dir, self.name, params, build)

    def prepare_data(self) -> None:
        self.path  # noqa: B018 - builds the cache once

    def load_splits(self):
        return load_segmentation_npz(self.path, self.num_classes, spatial_dims=self.spatial_dims)
