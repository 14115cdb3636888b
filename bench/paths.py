"""Where things are: the package's own files (Hydra configs, reference tables) and the data folder.

In a wheel they are package data (``bench/conf``, ``bench/reference``, mapped from the
repository's top-level ``conf/`` and ``results/reference/`` by ``setup.py``); in a checkout or an
editable install they are read from the repository itself.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The folder of ``train.yaml`` and the config groups."""
    packaged = PACKAGE_DIR / "conf"
    return packaged if (packaged / "train.yaml").exists() else PACKAGE_DIR.parent / "conf"


def reference_dir() -> Path:
    """The folder of the published reference tables (``medmnist_v2.csv``)."""
    packaged = PACKAGE_DIR / "reference"
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / "results" / "reference"


DATA_DIR_ENV = "MEDBENCH_DATA_DIR"


def data_dir() -> Path:
    """The data folder: ``$MEDBENCH_DATA_DIR``, else ``data`` (``paths.data_dir`` in the config
    reads the same variable with the same default)."""
    return Path(os.environ.get(DATA_DIR_ENV, "data"))


def medmnist_dir() -> Path:
    """Where MedMNIST's npz files are read from and downloaded to: ``<data folder>/medmnist``."""
    return data_dir() / "medmnist"
