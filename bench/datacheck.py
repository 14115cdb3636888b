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

from bench.data.base import class_coverage_notes
from bench.data.fingerprint import files_fingerprint, npz_fingerprint, user_cache_dir
from bench.data.folder import ImageFolderDataModule
from bench.data.images import decode
from bench.data.npz import SPLITS, integral_labels, open_npz, read_array
from bench.errors import BenchError, DataFormatError, DatasetNotFoundError
from bench.job.instantiate import compose_train
from bench.spec import DataSpec

# perceptual-hash distance (of 64 bits) at or below which two images are near-duplicates
NEAR_DISTANCE = 4


@dataclass
class DataReport:
    """What was found, and the problems that would make a run wrong."""

    source: str
    fingerprint: str | None = None
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # images per class and split as the check counted them (what training will read)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

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


def _pixel_hashes(images) -> list[str]:
    """A hash of each image's decoded pixels (and shape): a re-encoded copy hashes alike."""
    out = []
    for img in images:
        a = np.ascontiguousarray(img)
        out.append(hashlib.sha1(str(a.shape).encode() + a.tobytes()).hexdigest())
    return out


def perceptual_hash(pixels: np.ndarray) -> np.ndarray:
    """imagehash's pHash (DCT, 64 bits) of an image: near for resized or re-saved copies."""
    import imagehash
    from PIL import Image

    return imagehash.phash(Image.fromarray(pixels)).hash.reshape(-1)


def near_duplicates(
    phashes: dict[str, list[np.ndarray]],
    paths: dict[str, list[Path]],
    report: DataReport,
    distance: int,
    exact: dict[str, list[str]] | None = None,
) -> None:
    """Pairs of images in different splits whose pHashes differ in at most ``distance`` bits
    (exact duplicates are reported already): resized or re-saved copies leak across splits."""
    pairs = []
    names = list(phashes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if not phashes[a] or not phashes[b]:
                continue
            ha, hb = np.stack(phashes[a]), np.stack(phashes[b])
            d = (ha[:, None, :] != hb[None, :, :]).sum(-1)
            for ia, ib in zip(*np.nonzero(d <= distance), strict=True):
                if exact and exact[a][ia] == exact[b][ib]:
                    continue  # an exact duplicate: reported as one already
                pairs.append((int(d[ia, ib]), a, paths[a][ia], b, paths[b][ib]))
    if pairs:
        pairs.sort()
        shown = "; ".join(f"{pa.name} ({a}) ~ {pb.name} ({b}): distance {dd}"
                          for dd, a, pa, b, pb in pairs[:5])  # fmt: skip
        report.warnings.append(
            f"{len(pairs)} near-duplicate pair(s) across splits (perceptual hash distance <= "
            f"{distance} of 64): {shown}; a resized or re-saved copy in two splits leaks"
        )


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
        report.counts[split] = {
            (names[int(c)] if names and int(c) < len(names) else str(c)): n
            for c, n in counts.items()
        }
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


def _label_problem(y: np.ndarray, key: str, path: Path) -> str | None:
    """What training would refuse in these labels (its own validator), or None."""
    try:
        integral_labels(np.asarray(y).reshape(-1), key, path)
    except DataFormatError as e:
        return str(e)
    return None


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
        try:  # the training loader's reader: object arrays get its one-line diagnosis
            x, y = read_array(npz, ikey, path), read_array(npz, lkey, path)
        except DataFormatError as e:
            report.problems.append(str(e))
            continue
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
        problem = _label_problem(y, lkey, path) if not seg else None
        if problem:
            report.problems.append(problem)
        hashes[split] = _pixel_hashes(x)
        if not problem and not seg and y.ndim <= 2 and (y.ndim == 1 or y.shape[1] == 1):
            labels[split] = np.asarray(y).reshape(-1).astype(np.int64)
        elif seg:
            values = np.unique(y)
            report.lines.append(f"  {split} mask values: {values.tolist()[:20]}")
    if labels:
        class_lines(labels, None, report)
    duplicates(hashes, report)
    return report


def _decoded_split(
    items: tuple[list[Path], np.ndarray], report: DataReport, split: str
) -> tuple[list, list[int], list[Path]]:
    """Every file of a split through the training reader: (decoded images, labels, paths); a file
    training would refuse is a problem line naming it."""
    decoded, labels, paths, sizes, modes = [], [], [], Counter(), Counter()
    for f, y in zip(*items, strict=True):
        try:
            d = decode(f)
        except BenchError as e:
            report.problems.append(str(e))
            continue
        decoded.append(d)
        labels.append(int(y))
        paths.append(f)
        h, w = d.pixels.shape[:2]
        sizes[f"{w}x{h}"] += 1
        modes["rgb" if d.has_colour else "gray"] += 1
        for note in d.notes:
            modes[note] += 1
    report.lines.append(
        f"{split}: {len(decoded)} images; sizes {dict(sizes.most_common(5))}; read as {dict(modes)}"
    )
    return decoded, labels, paths


def check_folder(root: Path, near_distance: int = NEAR_DISTANCE) -> DataReport:
    """An image folder as ``data=folder`` reads it: the same scan, split assignment, reader and
    validation as training; exact and near duplicates across splits on decoded pixels."""
    module = ImageFolderDataModule(str(root), cache_dir=str(user_cache_dir().parent / "folder"))
    scan = module.scan()
    report = DataReport(str(root), files_fingerprint(root, scan.files))
    if scan.skipped_summary():
        report.warnings.append(scan.skipped_summary())
    if scan.carved_val:
        report.warnings.append("no val folder: training splits val from train (stratified)")
    items = module.assignments(scan)
    labels, hashes, phashes, read, colour = {}, {}, {}, {}, 0
    for split in SPLITS:
        decoded, split_labels, read[split] = _decoded_split(items[split], report, split)
        labels[split] = np.array(split_labels, dtype=np.int64)
        hashes[split] = _pixel_hashes([d.pixels for d in decoded])
        phashes[split] = [perceptual_hash(d.pixels) for d in decoded]
        colour += sum(d.has_colour for d in decoded)
    report.lines.append(
        f"colour: {'rgb' if colour else 'gray'} under data.color=auto ({colour} image(s) "
        "have colour)"
    )
    class_lines(labels, scan.classes, report)
    try:  # the training validator's verdict on the splits' classes
        raw = {s: (None, labels[s]) for s in SPLITS}
        spec = DataSpec(
            scan.root.name, "multi-class", 2, 1, len(scan.classes), (1, 1), tuple(scan.classes)
        )
        report.warnings += class_coverage_notes(raw, spec)
    except DataFormatError as e:
        report.problems.append(str(e))
    duplicates(hashes, report)
    near_duplicates(phashes, read, report, near_distance, hashes)
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
