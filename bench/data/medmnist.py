"""MedMNIST (2D and 3D) from its npz files, loaded straight into uint8 arrays.

The medmnist package is used for metadata (``INFO``: task, channels, labels, URLs, MD5s) but not
for its Dataset class, which asserts the official sample counts and yields one PIL image per
item. Files present on disk are used as they are (an MD5 mismatch only warns); absent files are
downloaded from medmnist's URL and checked against its MD5, or give a one-line error offline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bench.data.base import InMemoryDataModule
from bench.data.fingerprint import cached_digest, file_digest, npz_fingerprint
from bench.data.npz import load_classification_npz
from bench.errors import ConfigError, DatasetNotFoundError, UnknownOptionError
from bench.paths import DATA_DIR_ENV, medmnist_dir
from bench.spec import DataSpec, medmnist_task

log = logging.getLogger(__name__)

SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)


def medmnist_info(flag: str) -> dict:
    from medmnist import INFO

    if flag not in INFO:
        raise UnknownOptionError(f"unknown MedMNIST flag {flag!r}; valid flags: {', '.join(INFO)}")
    return INFO[flag]


def valid_sizes(flag: str) -> tuple[int, ...]:
    return SIZES_3D if flag.endswith("3d") else SIZES_2D


def npz_filename(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def download(flag: str, size: int, root: Path) -> Path:
    """Download ``{flag}[_{size}].npz`` into ``root`` with medmnist's URL and MD5."""
    from torchvision.datasets.utils import download_url

    info = medmnist_info(flag)
    suffix = "" if size == 28 else f"_{size}"
    url, md5 = info[f"url{suffix}"], info[f"MD5{suffix}"]
    name = npz_filename(flag, size)
    try:
        download_url(url, root=str(root), filename=name, md5=md5)
    except Exception as e:  # network errors come in many types (URLError, socket, SSL, HTTP)
        (root / name).unlink(missing_ok=True)
        raise DatasetNotFoundError(
            f"{name} not found in {root} and the download failed ({type(e).__name__}); "
            f"run once online, or copy the file to {root}/{name} (or set {DATA_DIR_ENV})"
        ) from None
    return root / name


class MedMNISTDataModule(InMemoryDataModule):
    """One MedMNIST flag at one size (28/64/128/224 for 2D, 28/64 for 3D)."""

    def __init__(
        self,
        flag: str,
        size: int = 28,
        root: str | None = None,
        download: bool = True,
        verify_md5: bool = True,
        mmap: str | bool = "auto",
        **kwargs,
    ) -> None:
        self.info = medmnist_info(flag)
        if size not in valid_sizes(flag):
            raise ConfigError(
                f"{flag} has no size {size}; valid sizes: "
                f"{', '.join(map(str, valid_sizes(flag)))} (set data.size=...)"
            )
        super().__init__(**kwargs)
        self.flag, self.size = flag, int(size)
        self.root = Path(root or medmnist_dir()).expanduser()
        self.download = download
        self.verify_md5 = verify_md5
        # 128/224 files are GBs: extract once to .npy and memory-map instead of holding in RAM
        self.mmap = self.size >= 128 if mmap == "auto" else bool(mmap)

    @property
    def path(self) -> Path:
        return self.root / npz_filename(self.flag, self.size)

    def base_spec(self) -> DataSpec:
        is3d = self.flag.endswith("3d")
        task = medmnist_task(self.info["task"])
        labels = tuple(self.info["label"][k] for k in sorted(self.info["label"], key=int))
        return DataSpec(
            name=self.flag if self.size == 28 else f"{self.flag}_{self.size}",
            task=task,
            spatial_dims=3 if is3d else 2,
            in_channels=int(self.info["n_channels"]),
            num_classes=len(labels),
            input_size=tuple([self.size] * (3 if is3d else 2)),
            label_names=labels,
        )

    def prepare_data(self) -> None:
        if getattr(self, "_prepared", False):
            return
        self._prepared = True
        if self.path.exists():
            self._check_md5()
            return
        if not self.download:
            raise DatasetNotFoundError(
                f"{self.path.name} not found in {self.root}; set data.download=true when "
                f"online, or copy the file there (or set {DATA_DIR_ENV})"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", self.path.name, self.root)
        download(self.flag, self.size, self.root)

    def _check_md5(self) -> None:
        if not self.verify_md5:
            return
        suffix = "" if self.size == 28 else f"_{self.size}"
        expected = self.info.get(f"MD5{suffix}")
        # said once per file version: later commands find the digest cached and stay quiet
        first_time = cached_digest(self.path, algo="md5") is None
        md5 = file_digest(self.path, algo="md5")
        if expected and md5 != expected:
            (log.warning if first_time else log.debug)(
                "%s: MD5 %s differs from medmnist's %s (a re-saved copy?); using it as it is "
                "(its content hash is part of the run id)",
                self.path,
                md5,
                expected,
            )

    def fingerprint(self) -> str:
        self.prepare_data()
        return npz_fingerprint(self.path)

    def load_splits(self):
        self.prepare_data()
        spec = self.base_spec()
        mmap_dir = None
        if self.mmap:  # keyed by size and mtime so a replaced file is re-extracted
            st = self.path.stat()
            mmap_dir = self.root / f".{self.path.stem}-{st.st_size}-{int(st.st_mtime)}.npy"
        return load_classification_npz(self.path, spec, mmap_dir, self._fix_for)

    def _fix_for(self, shape: tuple[int, ...]) -> str:
        """Which config fits a file whose images have ``shape`` (a wrong or renamed file)."""
        is3d = self.flag.endswith("3d")
        file_is3d = len(shape) == 5 or (len(shape) == 4 and shape[-1] not in (1, 3, 4))
        if file_is3d != is3d:
            kind = "3D" if file_is3d else "2D"
            return (
                f"it is not a {'3D' if is3d else '2D'} MedMNIST file; use a {kind} data config "
                f"for it (data=folder or a {kind} MedMNIST flag) or replace {self.path.name}"
            )
        n = shape[1]
        if n in valid_sizes(self.flag):
            return f"name it {npz_filename(self.flag, n)} and set data.size={n}"
        return f"replace {self.path.name} with the official file (downloaded when online)"
