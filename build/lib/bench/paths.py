"""Where the package's own files are: the Hydra configs and the reference tables.

In a wheel they are package data (``bench/conf``, ``bench/reference``, mapped from the
repository's top-level ``conf/`` and ``results/reference/`` by ``setup.py``); in a checkout or an
editable install they are read from the repository itself.
"""

from __future__ import annotations

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
