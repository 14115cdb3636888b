"""Read and validate npz files in the MedMNIST layout (``{split}_images`` / ``{split}_labels``)."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.errors import CorruptFileError, DataFormatError
from bench.spec import DataSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """Open an npz archive, turning numpy/zip failures into :class:`CorruptFileError`."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        # numpy's own text suggests allow_pickle, which would be the wrong fix here
        raise CorruptFileError(
            f"{path} is not a readable npz archive ({type(e).__name__}); "
            "delete it and download it again or re-export it with numpy.savez"
        ) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CorruptFileError(
            f"{path} holds a single .npy array, not an npz archive; save the splits with "
            "numpy.savez(path, train_images=..., train_labels=..., val_images=..., ...)"
        )
    return npz


def read_array(npz: np.lib.npyio.NpzFile, key: str, path: Path, mmap_dir: Path | None = None):
    """Read one member; with ``mmap_dir``, extract it once to ``.npy`` and memory-map it."""
    if key not in npz.files:
        raise DataFormatError(
            f"{path} has no array {key!r} (it has {sorted(npz.files)}); "
            "expected the MedMNIST layout train_images/train_labels/val_*/test_*"
        )
    try:
        if mmap_dir is None:
            return npz[key]
        mmap_dir.mkdir(parents=True, exist_ok=True)
        out = mmap_dir / f"{key}.npy"
        if not out.exists():
            tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, npz[key])
            tmp.replace(out)
        return np.load(out, mmap_mode="r")
    except ValueError as e:
        if "Object arrays" in str(e):  # saved from a list of strings or mixed objects
            raise DataFormatError(
                f"{path}: array {key!r} holds Python objects (strings or mixed values), not "
                "numbers; save class labels as integers 0..K-1 (e.g. "
                "numpy.unique(labels, return_inverse=True)[1]) and images as uint8"
            ) from None
        raise CorruptFileError(
            f"{path}: array {key!r} is truncated or corrupt ({type(e).__name__}); "
            "delete the file and download it again"
        ) from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CorruptFileError(
            f"{path}: array {key!r} is truncated or corrupt ({type(e).__name__}); "
            "delete the file and download it again"
        ) from None


def check_images(images: np.ndarray, key: str, path: Path, ndim_options: tuple[int, ...]) -> None:
    if images.dtype != np.uint8:
        raise DataFormatError(
            f"{path}: {key} has dtype {images.dtype}, expected uint8 (0-255); "
            "convert with (x * 255).round().astype(np.uint8) before saving"
        )
    if images.ndim not in ndim_options:
        layouts = {3: "(N,H,W)", 4: "(N,H,W,C) or (N,D,H,W)", 5: "(N,D,H,W,C)"}
        expected = " or ".join(layouts[d] for d in ndim_options)
        raise DataFormatError(
            f"{path}: {key} has shape {images.shape} ({images.ndim} dimensions); expected "
            f"{expected}"
        )
    if images.shape[0] == 0:
        raise DataFormatError(
            f"{path}: {key} is empty (0 images); every split (train, val, test) needs images"
        )


def check_labels(
    labels: np.ndarray, n_images: int, key: str, path: Path, num_classes: int, multi_label: bool
) -> np.ndarray:
    """Validate and normalise labels: (N,) int64 for single-label, (N,L) float32 for multi-label."""
    if labels.shape[0] != n_images:
        raise DataFormatError(
            f"{path}: {key} has {labels.shape[0]} labels for {n_images} images; "
            "images and labels must have the same first dimension"
        )
    if multi_label:
        labels = labels.reshape(n_images, -1)
        if labels.shape[1] != num_classes:
            raise DataFormatError(
                f"{path}: {key} has {labels.shape[1]} label columns, expected {num_classes}"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise DataFormatError(f"{path}: {key} multi-label values must be 0 or 1")
        return labels.astype(np.float32)
    labels = labels.reshape(n_images, -1)
    if labels.shape[1] != 1:
        raise DataFormatError(
            f"{path}: {key} has shape {labels.shape}; single-label data needs (N,) or (N,1)"
        )
    labels = labels[:, 0]
    labels = integral_labels(labels, key, path)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(
            f"{path}: {key} has labels in [{labels.min()}, {labels.max()}] but the dataset has "
            f"{num_classes} classes (0..{num_classes - 1}); fix the labels or num_classes"
        )
    return labels.astype(np.int64)


def integral_labels(labels: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Class indices as integers: integral floats (1.0) are accepted, fractions are not
    (casting 0.3 to 0 would silently relabel the data)."""
    if labels.dtype.kind in "iub":
        return labels
    if labels.dtype.kind != "f":
        kind = "text" if labels.dtype.kind in "US" else f"dtype {labels.dtype}"
        raise DataFormatError(
            f"{path}: {key} holds {kind} labels (e.g. {labels.flat[0]!r}); class labels must "
            "be integers 0..K-1 (map names to indices, e.g. numpy.unique(labels, "
            "return_inverse=True)[1])"
        )
    bad = ~np.isfinite(labels) | (labels != np.round(labels))
    if bad.any():
        first = labels[np.flatnonzero(bad)[0]]
        raise DataFormatError(
            f"{path}: {key} has {int(bad.sum())} non-integral label(s) (e.g. {first}); class "
            "labels must be whole numbers 0..K-1 (a score or soft label is not a class)"
        )
    return labels.astype(np.int64)


def describe_stored(shape: tuple[int, ...]) -> str:
    """What an image array of shape (N, ...) looks like: '2D images of 64x64', ..."""
    stored = tuple(shape[1:])
    if len(stored) == 2:
        return f"2D images of {stored[0]}x{stored[1]}"
    if len(stored) == 3 and stored[-1] in (1, 3, 4) and stored[0] == stored[1] != stored[2]:
        return f"2D images of {stored[0]}x{stored[1]} with {stored[2]} channels"
    if len(stored) == 3:
        return f"3D volumes of {'x'.join(map(str, stored))}"
    if len(stored) == 4:
        return f"3D volumes of {'x'.join(map(str, stored[:3]))} with {stored[3]} channels"
    return f"arrays of shape {stored}"


def stored_size(shape: tuple[int, ...], spatial_dims: int) -> tuple[int, ...]:
    """The spatial size of an image array (N,H,W[,C]) or (N,D,H,W[,C]) as stored."""
    return tuple(shape[1 : 1 + spatial_dims])


def check_spatial(
    images: np.ndarray,
    key: str,
    path: Path,
    expected: tuple[int, ...],
    spatial_dims: int,
    fix: str,
) -> None:
    """The stored images must have the spatial size and dimensionality the config declares;
    the error says what the file holds. ``fix`` is how to choose the config that fits."""
    stored = tuple(images.shape[1:])
    ok_rank = len(stored) in ((spatial_dims, spatial_dims + 1))
    if ok_rank and stored_size(images.shape, spatial_dims) == tuple(expected):
        if spatial_dims == 3 and len(stored) == 4 and stored[-1] not in (1, 3, 4):
            pass  # falls through to the error: (N,D,H,W,C) with an odd channel count
        else:
            return
    declared = f"{spatial_dims}D, {'x'.join(map(str, expected))}"
    raise DataFormatError(
        f"{path}: {key} holds {describe_stored(images.shape)} but the config declares "
        f"{declared}; {fix}"
    )


def check_masks(
    masks: np.ndarray,
    images: np.ndarray,
    key: str,
    path: Path,
    num_classes: int,
    spatial_dims: int = 2,
):
    if masks.shape[0] != images.shape[0]:
        raise DataFormatError(
            f"{path}: {key} has {masks.shape[0]} masks for {images.shape[0]} images"
        )
    spatial = images.shape[1 : 1 + spatial_dims]
    if tuple(masks.shape[1 : 1 + len(spatial)]) != tuple(spatial):
        raise DataFormatError(
            f"{path}: {key} masks are {tuple(masks.shape[1:])}, images are {tuple(spatial)}; "
            "masks must have the images' spatial size"
        )
    if masks.size and (masks.min() < 0 or masks.max() >= num_classes):
        raise DataFormatError(
            f"{path}: {key} has mask values up to {masks.max()} but num_classes={num_classes}; "
            "set data.num_classes to the number of mask values (background included)"
        )
    return masks.astype(np.int64)


def to_channels_first(images: np.ndarray, spatial_dims: int) -> np.ndarray:
    """(N,H,W)->(N,1,H,W), (N,H,W,C)->(N,C,H,W), (N,D,H,W)->(N,1,D,H,W)."""
    if spatial_dims == 3:
        return images[:, None] if images.ndim == 4 else np.moveaxis(images, -1, 1)
    if images.ndim == 3:
        return images[:, None]
    return np.moveaxis(images, -1, 1)


def load_classification_npz(
    path: Path,
    spec: DataSpec,
    mmap_dir: Path | None = None,
    fix: Callable[[tuple[int, ...]], str] | None = None,
) -> dict:
    """Load and validate all splits of a classification npz: ``{split: (images, labels)}``.

    The images must have the spec's dimensionality and size; ``fix(shape)`` says which config
    fits a file that does not (default: re-export it at the declared size)."""
    npz = open_npz(path)
    ndims = (4, 5) if spec.spatial_dims == 3 else (3, 4)
    out = {}
    for split in SPLITS:
        images = read_array(npz, f"{split}_images", path, mmap_dir)
        labels = read_array(npz, f"{split}_labels", path)
        check_images(images, f"{split}_images", path, ndims)
        check_spatial(
            images,
            f"{split}_images",
            path,
            spec.input_size,
            spec.spatial_dims,
            fix(tuple(images.shape)) if fix else "re-export the file at the declared size",
        )
        labels = check_labels(
            labels,
            images.shape[0],
            f"{split}_labels",
            path,
            spec.num_classes,
            multi_label=spec.task == "multi-label",
        )
        images = to_channels_first(images, spec.spatial_dims)
        if images.shape[1] != spec.in_channels:
            raise DataFormatError(
                f"{path}: {split}_images have {images.shape[1]} channels but the dataset "
                f"declares {spec.in_channels}; the file does not belong to {spec.name}"
            )
        out[split] = (images, labels)
    return out


def write_medmnist_npz(
    path: Path,
    shape: tuple[int, ...],
    n_classes: int,
    multi_label: bool = False,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    **overrides,
) -> Path:
    """An npz in MedMNIST's layout with random pixels: ``{split}_images`` (uint8, ``shape`` per
    sample) and ``{split}_labels`` ((N, 1) classes in turn, or (N, L) random bits); ``counts``
    per split (default 40/12/12); ``overrides`` replace or add arrays. Tests and timings that
    need the layout and the sizes, not the images, use it."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (counts or {"train": 40, "val": 12, "test": 12}).items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        if multi_label:
            arrays[f"{split}_labels"] = rng.integers(0, 2, (n, n_classes))
        else:
            arrays[f"{split}_labels"] = (np.arange(n) % n_classes).reshape(n, 1)
    arrays.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
