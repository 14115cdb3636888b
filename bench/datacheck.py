"""``bench-data check``: what the loader sees, before any training.

For an npz file (MedMNIST or MedSegBench layout), an image folder (``root/<class>/*`` or
``root/{train,val,test}/<class>/*``) or a data config (``data=pneumoniamnist data.root=...``):
per split the shape, dtype, value range and class counts (classes missing from a split), the
image sizes and modes of a folder, the data fingerprint that enters the run id, and exact
duplicate images within a split and across splits (a hash of each image's pixels). Problems that
would make a run wrong (an empty split, fractional labels, a validation split with one class,
the same image in two splits) are listed and make the command exit 1.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from PIL import Image

from bench.data.fingerprint import files_fingerprint, npz_fingerprint
from bench.data.folder import IMAGE_SUFFIXES, list_classes
from bench.data.npz import SPLITS, open_npz
from bench.errors import DatasetNotFoundError
from bench.job.instantiate import compose_train


@dataclass
class DataReport:
    """What was found, and the problems that would make a run wrong."""

    source: str
    fingerprint: str | None = None
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = [f"data: {self.source}", f"fingerprint: {self.fingerprint or '(generated data)'}"]
        out += self.lines
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"problem: {p}" for p in self.problems]
        verdict = (
            f"{len(self.problems)} problem(s): a run on this data would be wrong"
            if self.problems
            else "no problems found"
        )
        return "\n".join([*out, verdict])


def _pixel_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest() for img in images]


def duplicates(hashes: dict[str, list[str]], report: DataReport) -> None:
    """Exact duplicates within each split (a warning) and across splits (a problem: leakage)."""
    owner: dict[str, set[str]] = defaultdict(set)
    for split, hs in hashes.items():
        counts = Counter(hs)
        repeated = sum(c - 1 for c in counts.values() if c > 1)
        if repeated:
            later = " (they may land in different splits)" if split == "all" else ""
            report.warnings.append(
                f"{split}: {repeated} exact duplicate image(s) within the split{later}"
            )
        for h in counts:
            owner[h].add(split)
    shared = Counter(tuple(sorted(s)) for s in owner.values() if len(s) > 1)
    for splits, n in sorted(shared.items()):
        where = " and ".join(splits)
        if "test" in splits:
            report.problems.append(
                f"{n} image(s) appear in {where}: the test split is not independent of "
                "training/selection; remove the duplicates from one split"
            )
        else:
            report.warnings.append(
                f"{n} image(s) appear in {where}: validation (model selection) is slightly "
                "optimistic"
            )


def class_lines(labels: dict[str, np.ndarray], names: list[str] | None, report: DataReport) -> None:
    present = {s: set(np.unique(y).tolist()) for s, y in labels.items()}
    every = sorted(set().union(*present.values())) if present else []
    for split, y in labels.items():
        counts = Counter(np.asarray(y).tolist())
        shown = ", ".join(
            f"{names[int(c)] if names and int(c) < len(names) else c}: {counts[c]}"
            for c in sorted(counts)
        )
        report.lines.append(f"  {split} classes: {shown}")
        missing = [c for c in every if c not in present[split]]
        if missing:
            label = ", ".join(str(names[int(c)] if names else c) for c in missing)
            text = f"{split} has no samples of class {label}"
            if split == "val" and len(present[split]) < 2:
                report.problems.append(f"{text}: validation AUC (model selection) is undefined")
            elif split == "test" and len(present[split]) < 2:
                report.problems.append(f"{text}: test AUC is undefined")
            else:
                report.warnings.append(text)


def check_npz(path: Path) -> DataReport:
    """An npz in the MedMNIST (``_labels``) or MedSegBench (``_label``) layout."""
    report = DataReport(str(path), npz_fingerprint(path))
    npz = open_npz(path)
    seg = any(k.endswith("_label") for k in npz.files)
    labels, hashes = {}, {}
    for split in SPLITS:
        ikey, lkey = f"{split}_images", f"{split}_label" if seg else f"{split}_labels"
        if ikey not in npz.files or lkey not in npz.files:
            report.problems.append(f"{path.name} has no {ikey}/{lkey} (it has {sorted(npz.files)})")
            continue
        x, y = npz[ikey], npz[lkey]
        rng = f"[{x.min()}, {x.max()}]" if x.size else "[]"
        report.lines.append(
            f"{split}: images {tuple(x.shape)} {x.dtype} range {rng}; "
            f"{'masks' if seg else 'labels'} {tuple(y.shape)} {y.dtype}"
        )
        if len(x) == 0:
            report.problems.append(f"{split} split is empty")
            continue
        if x.dtype != np.uint8:
            report.problems.append(f"{ikey} has dtype {x.dtype}; the loader needs uint8 (0-255)")
        if len(y) != len(x):
            report.problems.append(f"{split}: {len(y)} labels for {len(x)} images")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            report.problems.append(f"{lkey} has non-integral values (e.g. {y.flat[0]})")
        hashes[split] = _pixel_hashes(x)
        if not seg and y.ndim <= 2 and (y.ndim == 1 or y.shape[1] == 1):
            labels[split] = np.asarray(y).reshape(-1)
        elif seg:
            values = np.unique(y)
            report.lines.append(f"  {split} mask values: {values.tolist()[:20]}")
    if labels:
        class_lines(labels, None, report)
    duplicates(hashes, report)
    return report


def check_folder(root: Path) -> DataReport:
    """An image folder as ``data=folder`` reads it (class sub-folders, optional split folders)."""
    if all((root / s).is_dir() for s in SPLITS):
        scans = {s: list_classes(root / s) for s in SPLITS}
    else:
        scans = {"all": list_classes(root)}
    files = [f for scan in scans.values() for fs in scan.values() for f in fs]
    if not files:
        raise DatasetNotFoundError(
            f"{root} holds no images in class sub-folders ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    report = DataReport(str(root), files_fingerprint(root, files))
    classes = sorted({c for scan in scans.values() for c in scan})
    labels, hashes = {}, {}
    for split, scan in scans.items():
        sizes, modes, split_labels, split_hashes = Counter(), Counter(), [], []
        for c, fs in scan.items():
            for f in fs:
                with Image.open(f) as im:
                    sizes[f"{im.width}x{im.height}"] += 1
                    modes[im.mode] += 1
                split_hashes.append(hashlib.sha1(Path(f).read_bytes()).hexdigest())
                split_labels.append(classes.index(c))
        report.lines.append(
            f"{split}: {len(split_labels)} images; sizes {dict(sizes.most_common(5))}; "
            f"modes {dict(modes)}"
        )
        if any(m.startswith(("I", "F")) for m in modes):
            report.warnings.append(
                f"{split}: high-bit-depth images (modes {sorted(m for m in modes if m[0] in 'IF')})"
                " are scaled to 0-255 by data.intensity (minmax: per image; dtype: container)"
            )
        empty = [c for c, fs in scan.items() if not fs]
        for c in empty:
            report.problems.append(f"class folder {c!r} of {split} has no images")
        labels[split], hashes[split] = np.array(split_labels), split_hashes
    class_lines(labels, classes, report)
    if len(classes) < 2:
        report.problems.append(f"{root} has a single class; classification needs two")
    duplicates(hashes, report)
    return report


def check_config(overrides: list[str]) -> DataReport:
    """A data config as bench-train composes it (``data=... data.root=...``)."""
    cfg = compose_train(overrides)
    dm = instantiate(cfg.data)
    spec = dm.base_spec()
    report = DataReport(f"{spec.name} ({' '.join(overrides)})", dm.fingerprint())
    raw = dm.load_splits()  # the loader's own checks: a bad file stops here with its message
    report.lines.append(
        f"spec: {spec.task}, {spec.spatial_dims}D, {spec.in_channels} channel(s), "
        f"{spec.num_classes} classes, input {spec.input_size}"
    )
    labels, hashes = {}, {}
    for split, (x, y) in raw.items():
        x = np.asarray(x)
        report.lines.append(
            f"{split}: images {tuple(x.shape)} {x.dtype} range [{x.min()}, {x.max()}]; "
            f"targets {tuple(np.shape(y))}"
        )
        hashes[split] = _pixel_hashes(x)
        y = np.asarray(y)
        if spec.kind == "classification" and y.ndim == 1:
            labels[split] = y
    if labels:
        class_lines(labels, list(spec.label_names), report)
    duplicates(hashes, report)
    return report


def check(target: list[str]) -> DataReport:
    """Dispatch on what ``target`` names: overrides, an npz file or a folder."""
    if any("=" in t for t in target):
        return check_config(target)
    (path,) = [Path(t) for t in target]
    if path.is_file() and path.suffix == ".npz":
        return check_npz(path)
    if path.is_dir():
        return check_folder(path)
    raise DatasetNotFoundError(
        f"{path} is neither an npz file nor a folder; give a file, a folder or data=... overrides"
    )


def run(args) -> int:
    """The body of ``bench-data check``: print the report; exit 1 when it found problems."""
    report = check(args.target)
    print(report.text())
    return 1 if report.problems else 0
