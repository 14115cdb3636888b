"""Ships the top-level conf/ and results/reference/ inside the wheel as bench/conf and
bench/reference (package data), so an installed bench-train finds its configs anywhere."""

from pathlib import Path

from setuptools import find_packages, setup


def mapped(package: str, folder: str) -> list[str]:
    root = Path(folder)
    dirs = [
        root,
        *sorted(d for d in root.rglob("*") if d.is_dir() and "__pycache__" not in d.parts),
    ]
    return [".".join([package, *d.relative_to(root).parts]) for d in dirs]


setup(
    packages=find_packages(include=["bench", "bench.*"])
    + ["hydra_plugins.medbench_launcher"]
    + mapped("bench.conf", "conf")
    + mapped("bench.reference", "results/reference"),
    package_dir={"bench.conf": "conf", "bench.reference": "results/reference"},
    package_data={"": ["*.yaml", "*.csv"], "bench.report": ["templates/*.j2", "static/*"]},
    # per-machine settings stay on the machine
    exclude_package_data={"bench.conf.local": ["*.yaml"]},
)
