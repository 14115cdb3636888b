"""The user's own images: ``root/<class_name>/*.png|jpg|tif`` (BreaKHis and most exports).

If ``root/train``, ``root/val`` and ``root/test`` exist they are the splits; otherwise a
stratified, seeded split is made. ``group_regex`` extracts a group key (e.g. the patient id)
from each file name so that no group spans two splits. Images are resized, converted to gray
or RGB and cached as an npz (MedMNIST layout) after the first load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.data.base import InMemoryDataModule
from bench.data.fingerprint import files_fingerprint
from bench.data.npz import SPLITS, load_classification_npz
from bench.errors import ConfigError, CorruptFileError, DataFormatError, DatasetNotFoundError
from bench.io import atomic_save
from bench.spec import DataSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def list_classes(folder: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image paths}`` for each sub-folder of ``folder``."""
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        classes[d.name] = sorted(
            f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        )
    return classes


INTENSITY_MODES = ("minmax", "dtype")


def to_uint8(pixels: np.ndarray, mode: str, path: Path | str = "") -> np.ndarray:
    """Scale a high-bit-depth image (16-bit, 32-bit integer or float) to 0-255 explicitly.

    ``minmax``: the image's own range maps to 0-255 (for 12-bit data in 16-bit files, the usual
    X-ray/CT export, this keeps the contrast); ``dtype``: the container's range (0-65535 for
    16-bit) maps to 0-255, so absolute intensities stay comparable across images. A float image
    uses 0-1 as its range under ``dtype``. uint8 images are returned as they are.
    """
    if pixels.dtype == np.uint8:
        return pixels
    x = pixels.astype(np.float64)
    if not np.isfinite(x).all():
        raise DataFormatError(f"image {path} has NaN or infinite pixel values; fix the file")
    if mode == "minmax":
        lo, hi = float(x.min()), float(x.max())
    elif np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        lo, hi = float(min(info.min, 0)), float(info.max)
    else:
        lo, hi = 0.0, 1.0
    scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def read_image(path: Path, size: int, color: str, intensity: str = "minmax") -> np.ndarray:
    """One image file as uint8 (size, size) gray or (size, size, 3) RGB.

    8-bit images are converted by PIL; 16-bit and other high-bit-depth images (PIL modes
    ``I;16``, ``I``, ``F``) are read at their real range and scaled by :func:`to_uint8` (PIL's
    ``convert("L")`` would clip them at 255).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode.startswith(("I", "F")):
                pixels = to_uint8(np.asarray(im), intensity, path)
                im = Image.fromarray(pixels, mode="L")
            im = im.convert("L" if color == "gray" else "RGB")
            im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError as e:
        raise OSError(str(e)) from None


def group_split(
    labels: np.ndarray, groups: list[str], fractions: tuple[float, float], seed: int
) -> np.ndarray:
    """Split assignment (0 train, 1 val, 2 test) per sample; groups never straddle splits.

    Groups are stratified by their majority label and shuffled with ``seed``; each class gives
    ``fractions`` (val, test) of its groups to val and test (at least one each when it can).
    """
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    group_label = {g: np.bincount(labels[idx]).argmax() for g, idx in by_group.items()}
    assign = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        gs = sorted(g for g, lab in group_label.items() if lab == c)
        rng.shuffle(gs)
        n = len(gs)
        n_val = max(1 if n >= 3 else 0, int(round(fractions[0] * n)))
        n_test = max(1 if n >= 3 else 0, int(round(fractions[1] * n)))
        for j, g in enumerate(gs):
            split = 2 if j < n_test else 1 if j < n_test + n_val else 0
            assign[by_group[g]] = split
    return assign


class ImageFolderDataModule(InMemoryDataModule):
    def __init__(
        self,
        root: str,
        size: int = 64,
        color: str = "gray",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        group_regex: str | None = None,
        name: str | None = None,
        cache_dir: str = "data/folder_cache",
        intensity: str = "minmax",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        if intensity not in INTENSITY_MODES:
            raise ConfigError(
                f"data.intensity must be one of {', '.join(INTENSITY_MODES)}, got {intensity!r}"
            )
        self.intensity = intensity
        if color not in ("gray", "rgb"):
            raise ConfigError(f"data.color must be gray or rgb, got {color!r}")
        self.size, self.color = int(size), color
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.group_regex = re.compile(group_regex) if group_regex else None
        self.name = name or self.root.name
        self.cache_dir = Path(cache_dir).expanduser()
        self._classes: list[str] | None = None

    # -- scanning ------------------------------------------------------------------------------
    def _scan(self) -> dict[str, dict[str, list[Path]]]:
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"image folder {self.root} does not exist; set data.root to a folder holding "
                "one sub-folder per class"
            )
        if all((self.root / s).is_dir() for s in SPLITS):
            scans = {s: list_classes(self.root / s) for s in SPLITS}
        else:
            scans = {"all": list_classes(self.root)}
        classes = sorted({c for scan in scans.values() for c in scan})
        if not classes:
            raise DataFormatError(
                f"{self.root} has no class sub-folders; lay images out as root/<class>/*.png"
            )
        for where, scan in scans.items():
            empty = [c for c, files in scan.items() if not files]
            if empty:
                folder = self.root if where == "all" else self.root / where
                raise DataFormatError(
                    f"class folder {empty[0]!r} in {folder} has no images "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove it"
                )
        if len(classes) < 2:
            raise DataFormatError(
                f"{self.root} has a single class ({classes[0]!r}); classification needs at least "
                "two class folders"
            )
        self._classes = classes
        return scans

    def base_spec(self) -> DataSpec:
        if self._classes is None:
            self._scan()
        n = len(self._classes)
        return DataSpec(
            self.name,
            "binary-class" if n == 2 else "multi-class",
            2,
            1 if self.color == "gray" else 3,
            n,
            (self.size, self.size),
            tuple(self._classes),
        )

    # -- loading -------------------------------------------------------------------------------
    def _read(self, path: Path) -> np.ndarray:
        try:
            return read_image(path, self.size, self.color, self.intensity)
        except OSError as e:
            raise CorruptFileError(
                f"cannot read image {path} ({type(e).__name__}); remove or replace the file"
            ) from None

    def _cache_path(self, scans) -> Path:
        files = [
            (str(f.relative_to(self.root)), f.stat().st_size, int(f.stat().st_mtime))
            for scan in scans.values()
            for fs in scan.values()
            for f in fs
        ]
        key = json.dumps(
            [
                files,
                self.size,
                self.color,
                self.fractions,
                self.split_seed,
                self.group_regex.pattern if self.group_regex else None,
                self.intensity,
                3,  # cache layout version: high-bit-depth images scaled, not clipped
            ]
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.cache_dir / f"{self.name}-{digest}.npz"

    def fingerprint(self) -> str:
        """Hash of every image's relative path and content (class folders included)."""
        scans = self._scan()
        files = [f for scan in scans.values() for fs in scan.values() for f in fs]
        return files_fingerprint(self.root, files, self.cache_dir / "digests")

    def groups_of(self, paths: list[Path]) -> list[str]:
        if self.group_regex is None:
            return [str(p) for p in paths]
        out = []
        for p in paths:
            m = self.group_regex.search(p.name)
            if not m:
                raise ConfigError(
                    f"data.group_regex {self.group_regex.pattern!r} does not match {p.name!r}; "
                    "fix the pattern (one capture group = the patient id)"
                )
            out.append(m.group(1) if m.groups() else m.group(0))
        return out

    def build_arrays(self, scans) -> dict[str, np.ndarray]:
        index = {c: i for i, c in enumerate(self._classes)}
        arrays = {}
        if "all" in scans:
            paths = [f for c in self._classes for f in scans["all"][c]]
            labels = np.array([index[c] for c in self._classes for _ in scans["all"][c]])
            assign = group_split(labels, self.groups_of(paths), self.fractions, self.split_seed)
            for s, split in enumerate(SPLITS):
                sel = np.flatnonzero(assign == s)
                arrays[f"{split}_images"] = (
                    np.stack([self._read(paths[i]) for i in sel])
                    if len(sel)
                    else np.zeros((0, self.size, self.size), np.uint8)
                )
                arrays[f"{split}_labels"] = labels[sel]
                arrays[f"{split}_groups"] = np.array([self.groups_of([paths[i]])[0] for i in sel])
        else:
            for split in SPLITS:
                items = [(f, index[c]) for c, fs in scans[split].items() for f in fs]
                if not items:
                    raise DataFormatError(
                        f"{self.root / split} holds no images; every split folder needs "
                        "<class>/ sub-folders with images"
                    )
                arrays[f"{split}_images"] = np.stack([self._read(f) for f, _ in items])
                arrays[f"{split}_labels"] = np.array([lab for _, lab in items])
                arrays[f"{split}_groups"] = np.array(self.groups_of([f for f, _ in items]))
        return arrays

    def prepare_data(self) -> None:
        scans = self._scan()
        path = self._cache_path(scans)
        if not path.exists():
            arrays = self.build_arrays(scans)
            for split in SPLITS:
                if len(arrays[f"{split}_labels"]) == 0:
                    raise DataFormatError(
                        f"{self.root}: the {split} split came out empty; add images or lower "
                        "data.val_fraction/test_fraction"
                    )
            atomic_save(path, lambda f: np.savez(f, **arrays))
            log.info("cached %s as %s", self.root, path)
        self._cache = path

    def load_splits(self):
        self.prepare_data()
        return load_classification_npz(self._cache, self.base_spec())

    def split_groups(self) -> dict[str, np.ndarray] | None:
        """Patient ids per split (from ``group_regex``; each file its own group without it)."""
        self.prepare_data()
        with np.load(self._cache, allow_pickle=False) as npz:
            if not all(f"{s}_groups" in npz.files for s in SPLITS):
                return None
            return {s: npz[f"{s}_groups"] for s in SPLITS}
