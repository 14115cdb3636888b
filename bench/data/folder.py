"""The user's own images: ``root/<class>/*`` or ``root/{train,val,test}/<class>/*`` (with the split
names people use; docs/datasets.md), read by :mod:`bench.data.images` as ``bench-data check`` and
``bench-predict`` read them.

Without split folders a stratified, seeded split is made; with train and test but no val, the
val split is carved from train the same way. ``group_regex`` extracts a group key (the patient
id) from each file name so that no group spans two splits. ``color: auto`` keeps colour when any
image has it (gray otherwise) and says which. Images are resized, converted and cached as an npz
(MedMNIST layout) keyed by every file's path, size, times and inode; ``+force=true`` re-reads.
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
from bench.data.images import (
    INTENSITY_MODES,
    Scan,
    decode,
    fit,
    scan_folder,
    set_pixel_limit,
)
from bench.data.npz import SPLITS, load_classification_npz
from bench.errors import ConfigError, DataFormatError
from bench.io import atomic_save
from bench.spec import DataSpec

log = logging.getLogger(__name__)
COLORS = ("auto", "gray", "rgb")
CACHE_VERSION = 4  # one reader (EXIF, modes, colour choice), stat keys with ctime and inode


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
        n_val = max(1 if n >= 3 and fractions[0] > 0 else 0, int(round(fractions[0] * n)))
        n_test = max(1 if n >= 3 and fractions[1] > 0 else 0, int(round(fractions[1] * n)))
        for j, g in enumerate(gs):
            split = 2 if j < n_test else 1 if j < n_test + n_val else 0
            assign[by_group[g]] = split
    return assign


class ImageFolderDataModule(InMemoryDataModule):
    def __init__(
        self,
        root: str,
        size: int = 64,
        color: str = "auto",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        group_regex: str | None = None,
        name: str | None = None,
        cache_dir: str = "data/folder_cache",
        intensity: str = "minmax",
        max_pixels: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        if intensity not in INTENSITY_MODES:
            raise ConfigError(
                f"data.intensity must be one of {', '.join(INTENSITY_MODES)}, got {intensity!r}"
            )
        self.intensity = intensity
        if color not in COLORS:
            raise ConfigError(f"data.color must be auto, gray or rgb, got {color!r}")
        self.size, self.color = int(size), color
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.group_regex = re.compile(group_regex) if group_regex else None
        self.name = name or self.root.name
        self.cache_dir = Path(cache_dir).expanduser()
        set_pixel_limit(max_pixels)
        self._scan_result: Scan | None = None
        self._cache: Path | None = None
        self._color: str | None = None if color == "auto" else color
        self._force = False

    # -- scanning ------------------------------------------------------------------------------
    def scan(self) -> Scan:
        if self._scan_result is None:
            self._scan_result = scan_folder(self.root)
            summary = self._scan_result.skipped_summary()
            if summary:
                log.warning("%s", summary)
        return self._scan_result

    def forget_caches(self) -> None:
        """``+force=true``: scan and read the folder again, whatever a cache says."""
        self._scan_result, self._cache = None, None
        self._color = None if self.color == "auto" else self.color
        self._force = True

    @property
    def resolved_color(self) -> str:
        """``gray`` or ``rgb``; for ``auto`` what the images are (read once, then cached)."""
        if self._color is None:
            self.prepare_data()
        return self._color

    def base_spec(self) -> DataSpec:
        classes = self.scan().classes
        n = len(classes)
        return DataSpec(
            self.name,
            "binary-class" if n == 2 else "multi-class",
            2,
            1 if self.resolved_color == "gray" else 3,
            n,
            (self.size, self.size),
            tuple(classes),
        )

    def source_notes(self) -> list[str]:
        scan = self.scan()
        notes = [s for s in [scan.skipped_summary()] if s]
        if self.color == "auto":
            notes.append(f"data.color=auto read the images as {self.resolved_color}")
        if scan.carved_val:
            notes.append(f"{self.root} has train and test folders but no val: val was split "
                         "from train (stratified, seeded, by group)")  # fmt: skip
        return notes

    # -- loading -------------------------------------------------------------------------------
    def _cache_path(self, scan: Scan) -> Path:
        stats = []
        for f in scan.files:
            st = f.stat()
            stats.append(
                [
                    f.relative_to(self.root).as_posix(),
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                ]  # fmt: skip
            )
        key = json.dumps(
            [
                stats,
                sorted(scan.classes),
                self.size,
                self.color,
                self.fractions,
                self.split_seed,
                self.group_regex.pattern if self.group_regex else None,
                self.intensity,
                CACHE_VERSION,
            ]
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.cache_dir / f"{self.name}-{digest}.npz"

    def fingerprint(self) -> str:
        """Hash of every image's relative path and content (class folders included)."""
        scan = self.scan()
        return files_fingerprint(self.root, scan.files, self.cache_dir / "digests")

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

    def assignments(self, scan: Scan) -> dict[str, tuple[list[Path], np.ndarray]]:
        """Files and labels per split (a stratified, grouped split where the folder has none)."""
        index = {c: i for i, c in enumerate(scan.classes)}
        items = {
            split: ([f for c, fs in cl.items() for f in fs],
                    np.array([index[c] for c, fs in cl.items() for _ in fs], dtype=np.int64))
            for split, cl in scan.splits.items()
        }  # fmt: skip
        if "all" in items:
            paths, labels = items.pop("all")
            fractions = self.fractions
        elif scan.carved_val:
            paths, labels = items.pop("train")
            fractions = (self.fractions[0], 0.0)
        else:
            return items
        assign = group_split(labels, self.groups_of(paths), fractions, self.split_seed)
        for s, split in enumerate(SPLITS):
            if split in items:
                continue
            sel = np.flatnonzero(assign == s)
            items[split] = ([paths[i] for i in sel], labels[sel])
        return items

    def build_arrays(self, scan: Scan) -> dict[str, np.ndarray]:
        items = self.assignments(scan)
        decoded = {s: [decode(f, self.intensity) for f in items[s][0]] for s in SPLITS}
        if self.color == "auto":
            coloured = sum(d.has_colour for ds in decoded.values() for d in ds)
            self._color = "rgb" if coloured else "gray"
            log.info(
                "data.color=auto: %s (%d of %d images have colour)",
                self._color,
                coloured,
                sum(len(ds) for ds in decoded.values()),
            )
        channels = 1 if self._color == "gray" else 3
        arrays = {"color": np.array(self._color)}
        for split in SPLITS:
            paths, labels = items[split]
            if not paths:
                raise DataFormatError(
                    f"{self.root}: the {split} split came out empty; add images or lower "
                    "data.val_fraction/test_fraction"
                )
            arrays[f"{split}_images"] = np.stack(
                [fit(d, (self.size, self.size), channels)[0] for d in decoded[split]]
            )
            arrays[f"{split}_labels"] = labels
            arrays[f"{split}_groups"] = np.array(self.groups_of(paths))
        return arrays

    def prepare_data(self) -> None:
        scan = self.scan()
        path = self._cache_path(scan)
        if self._force or not path.exists():
            arrays = self.build_arrays(scan)
            atomic_save(path, lambda f: np.savez(f, **arrays))
            log.info("cached %s as %s", self.root, path)
            self._force = False
        if self._color is None:
            with np.load(path, allow_pickle=False) as npz:
                self._color = str(npz["color"])
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
