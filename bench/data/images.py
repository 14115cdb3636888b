"""The one reader of a user's image files, for training, ``bench-data check`` and ``bench-predict``.

Scanning (:func:`scan_folder`) knows the layouts people bring: ``root/<class>/*`` (ImageFolder),
``root/{train,val,test}/<class>/*`` with the split names people use (``val``, ``valid``,
``validation``, ``dev``; a root with only train and test gets a validation split carved from
train), nested folders inside a class. It never counts one file twice (a symbolic link is
followed only when it stays inside the root without a cycle), skips hidden and system folders
and files (``.thumbnails``, ``@eaDir``, ``__MACOSX``, ``.ipynb_checkpoints``, AppleDouble
``._x.png``) and files Pillow cannot open, and says what it skipped. Class names are compared
in Unicode NFC, so ``é`` typed two ways is one class.

Reading (:func:`read_image`) decodes every format Pillow opens (DICOM with pydicom), applies the
EXIF orientation, refuses a multi-page file for 2D data (naming its page count), maps every
mode to gray or RGB by its real meaning (LA, P, 1, CMYK, RGBA, 16-bit and 48-bit), scales
high-bit-depth pixels by ``data.intensity`` and says what it changed; a file it cannot read,
an empty file or one over Pillow's decompression-bomb limit is a one-line error naming the file.
"""

from __future__ import annotations

import os
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import ConfigError, CorruptFileError, DataFormatError, DatasetNotFoundError

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
SYSTEM_NAMES = {"__macosx", "$recycle.bin", "system volume information", "thumbs.db", "desktop.ini"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
INTENSITY_MODES = ("minmax", "dtype")
# Pillow formats registered by name only (they need a plug-in, a viewer or ghostscript)
_STUB_FORMATS = {"BUFR", "GRIB", "HDF5", "WMF", "EMF", "MPEG", "EPS", "PDF", "FITS"}


def image_suffixes() -> set[str]:
    """Every file suffix Pillow opens here (webp, gif, tiff, jpeg 2000, ...), and DICOM's."""
    from PIL import Image

    Image.init()
    return {
        ext
        for ext, fmt in Image.registered_extensions().items()
        if fmt in Image.OPEN and fmt not in _STUB_FORMATS
    } | DICOM_SUFFIXES


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def is_system(name: str) -> bool:
    """Hidden, system and AppleDouble entries: never data."""
    low = name.lower()
    return name.startswith((".", "@", "~$")) or low in SYSTEM_NAMES


@dataclass
class Scan:
    """What a folder holds: ``splits[split][class] = files`` (split ``all`` when the folder is
    not split), the class names in order and every entry skipped, with the reason."""

    root: Path
    splits: dict[str, dict[str, list[Path]]]
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    carved_val: bool = False

    @property
    def files(self) -> list[Path]:
        return [f for scan in self.splits.values() for fs in scan.values() for f in fs]

    def skipped_summary(self) -> str | None:
        """One line: how many entries were skipped, by reason, with an example each."""
        if not self.skipped:
            return None
        by: dict[str, list[Path]] = defaultdict(list)
        for path, why in self.skipped:
            by[why].append(path)
        parts = [
            f"{len(ps)} {why} (e.g. {ps[0].relative_to(self.root)})"
            for why, ps in sorted(by.items())
        ]
        return f"skipped in {self.root}: " + "; ".join(parts)


def _inside(real: Path, root_real: Path) -> bool:
    return real == root_real or root_real in real.parents


def walk_images(folder: Path, ctx: dict, links: bool, visiting: tuple = ()) -> list[Path]:
    """Image files under ``folder``. Without ``links``: the files that are really there. With
    ``links``: also what links lead to, when they stay inside the root, close no cycle and
    reach a file not counted yet (a file is never counted twice)."""
    out = []
    root_real, counted, suffixes, skipped = (
        ctx["root"],
        ctx["counted"],
        ctx["suffixes"],
        ctx["skipped"],
    )
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise DatasetNotFoundError(
            f"cannot list {folder} ({type(e).__name__}); check permissions"
        ) from None
    here = Path(os.path.realpath(folder))
    for entry in entries:
        path = Path(entry.path)
        if is_system(entry.name):
            if not links:
                skipped.append((path, "hidden or system entries"))
            continue
        link = entry.is_symlink()
        real = Path(os.path.realpath(path))
        if link and not links:
            continue  # the second pass decides
        if link and (not _inside(real, root_real) or not real.exists()):
            skipped.append((path, "links leading outside the root or nowhere"))
            continue
        if entry.is_dir(follow_symlinks=True):
            if link and (real in visiting or real == here or _inside(here, real)):
                skipped.append((path, "links closing a cycle"))
                continue
            out += walk_images(path, ctx, links, (*visiting, here))
        elif entry.is_file(follow_symlinks=True):
            if real in counted:
                if link:
                    skipped.append((path, "links to a file counted at its own place"))
                continue
            if path.suffix.lower() not in suffixes:
                if not links or link:
                    skipped.append((path, "files in a format Pillow does not open"))
                continue
            counted.add(real)
            out.append(path)
    return out


def _class_dirs(folder: Path, skipped: list) -> dict[str, list[Path]]:
    """Class name (NFC) -> its folders (a name typed in two Unicode forms is one class)."""
    dirs: dict[str, list[Path]] = defaultdict(list)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if is_system(entry.name):
            skipped.append((path, "hidden or system entries"))
        elif entry.is_dir(follow_symlinks=True) and entry.is_symlink():
            # inside the root its files are counted at their own place (or it closes a cycle);
            # outside the root it is not followed
            skipped.append((path, "linked class folders (a class must be a real folder)"))
        elif entry.is_dir(follow_symlinks=True):
            dirs[nfc(entry.name)].append(path)
        else:
            skipped.append((path, "files outside a class folder"))
    return dirs


def _read_classes(dirs_by_split: dict[str, dict[str, list[Path]]], ctx: dict) -> dict:
    """Two passes: the files really in each class folder, then what links add."""
    out: dict[str, dict[str, list[Path]]] = {s: defaultdict(list) for s in dirs_by_split}
    for links in (False, True):
        for split, classes in dirs_by_split.items():
            for name, dirs in classes.items():
                for d in dirs:
                    out[split][name] += walk_images(d, ctx, links)
    return {s: {c: sorted(fs) for c, fs in cl.items()} for s, cl in out.items()}


def scan_folder(root: str | Path) -> Scan:
    """The splits, classes and files of an image folder, or a one-line error naming the fix."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist; give a folder holding one sub-folder per class"
        )
    skipped: list[tuple[Path, str]] = []
    ctx = {
        "root": Path(os.path.realpath(root)),
        "counted": set(),
        "suffixes": image_suffixes(),
        "skipped": skipped,
    }
    top = _class_dirs(root, [])
    roles = {name: SPLIT_NAMES.get(name.lower()) for name in top}
    split_dirs = {name: role for name, role in roles.items() if role}
    if split_dirs:
        others = sorted(n for n, r in roles.items() if not r)
        used = sorted(split_dirs.values())
        if others or len(set(used)) != len(used) or "train" not in used or "test" not in used:
            what = f"class folders {', '.join(others)}" if others else "a missing or repeated split"
            raise DataFormatError(
                f"{root} mixes split folders ({', '.join(sorted(split_dirs))}) with {what}; lay "
                "it out as root/<class>/* or root/{train,val,test}/<class>/* (train and test "
                "needed; val, valid, validation or dev optional)"
            )
        dirs = {}
        for name, split in split_dirs.items():
            dirs[split] = _class_dirs(top[name][0], skipped)
            inner = [c for c in dirs[split] if c.lower() in SPLIT_NAMES]
            if inner:
                raise DataFormatError(
                    f"{top[name][0]} holds folders named like splits ({', '.join(inner)}): class "
                    "folders must be the classes; give the folder that holds the splits"
                )
        for name in top:  # the split folders' own loose files
            for entry in os.scandir(top[name][0]):
                if entry.is_file() and not is_system(entry.name):
                    skipped.append((Path(entry.path), "files outside a class folder"))
        carved = "val" not in dirs
    else:
        dirs = {"all": _class_dirs(root, skipped)}
        carved = False
    splits = _read_classes(dirs, ctx)
    classes = sorted({c for scan in splits.values() for c in scan})
    scan = Scan(root, splits, classes, skipped, carved)
    _check_scan(scan)
    return scan


def _check_scan(scan: Scan) -> None:
    if not scan.classes:
        raise DataFormatError(
            f"{scan.root} has no class sub-folders; lay images out as root/<class>/*.png"
        )
    for where, classes in scan.splits.items():
        empty = [c for c, files in classes.items() if not files]
        if empty:
            folder = scan.root if where == "all" else scan.root / where
            raise DataFormatError(
                f"class folder {empty[0]!r} in {folder} has no images Pillow opens; add images "
                "or remove it"
            )
    if len(scan.classes) < 2:
        raise DataFormatError(
            f"{scan.root} has a single class ({scan.classes[0]!r}); classification needs at "
            "least two class folders"
        )


# -- reading ----------------------------------------------------------------------------------
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


@dataclass
class Decoded:
    """One image as decoded: uint8 (H, W) gray or (H, W, 3) RGB, and what was changed."""

    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def has_colour(self) -> bool:
        """Whether the channels differ anywhere (an RGB file of a gray image has none)."""
        p = self.pixels
        return p.ndim == 3 and not (
            np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2])
        )


def _tiff_48bit(path: Path) -> np.ndarray | None:
    """A 16-bit-per-channel RGB TIFF at its real depth (Pillow would keep 8 bits)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if page.bitspersample > 8 and page.samplesperpixel >= 3:
            return page.asarray()[..., :3]
    return None


_MODE_NOTES = {
    "LA": "LA->gray (alpha dropped)",
    "P": "palette->colours",
    "PA": "palette->colours",
    "1": "1-bit->gray",
    "CMYK": "CMYK->RGB",
    "YCbCr": "YCbCr->RGB",
    "LAB": "LAB->RGB",
    "HSV": "HSV->RGB",
    "RGBA": "RGBA->RGB (alpha dropped)",
    "RGBX": "RGBX->RGB",
    "La": "La->gray",
}


def _decode_pil(path: Path, intensity: str, volume: bool) -> Decoded:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        pages = getattr(im, "n_frames", 1)
        if pages > 1 and not volume:
            raise DataFormatError(
                f"{path} has {pages} pages (a stack or an animation): a 2D image has one; "
                "save each page as its own file (or use it as a volume in 3D data)"
            )
        notes = ["EXIF orientation applied"] if _rotated(im) else []
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith(("I", "F")):
            scaled = f"{im.mode} scaled to 0-255 ({intensity})"
            return Decoded(to_uint8(np.asarray(im), intensity, path), [*notes, scaled])
        if path.suffix.lower() in (".tif", ".tiff") and im.mode == "RGB":
            deep = _tiff_48bit(path)
            if deep is not None:
                scaled = f"48-bit RGB scaled to 0-255 ({intensity})"
                return Decoded(to_uint8(deep, intensity, path), [*notes, scaled])
        if im.mode in ("L", "RGB"):
            return Decoded(np.asarray(im, dtype=np.uint8), notes)
        note = _MODE_NOTES.get(im.mode, f"{im.mode}->RGB")
        if im.mode in ("LA", "La", "1", "I;16"):
            return Decoded(np.asarray(im.convert("L"), dtype=np.uint8), [*notes, note])
        decoded = Decoded(np.asarray(im.convert("RGB"), dtype=np.uint8), [*notes, note])
        if im.mode in ("P", "PA") and not decoded.has_colour:  # a gray palette stays gray
            decoded = Decoded(decoded.pixels[..., 0].copy(), [*notes, "palette->gray"])
        return decoded


def _rotated(im) -> bool:
    try:
        return int(im.getexif().get(0x0112, 1)) not in (0, 1)
    except Exception:  # a malformed EXIF block: nothing to apply
        return False


def _decode_dicom(path: Path, intensity: str) -> Decoded:
    try:
        import pydicom
    except ImportError:
        raise ConfigError(
            f"{path} is DICOM: install the extra with pip install 'medbench[dicom]'"
        ) from None
    try:
        pixels = pydicom.dcmread(str(path)).pixel_array
    except Exception as e:  # pydicom raises many types for a bad file
        raise CorruptFileError(f"cannot read DICOM {path} ({type(e).__name__})") from None
    return Decoded(to_uint8(np.asarray(pixels), intensity, path), [f"DICOM scaled ({intensity})"])


def decode(path: Path, intensity: str = "minmax", volume: bool = False) -> Decoded:
    """A file at its own size as uint8 gray or RGB, with what was changed; one-line errors."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if intensity not in INTENSITY_MODES:
        raise ConfigError(
            f"data.intensity must be one of {', '.join(INTENSITY_MODES)}, got {intensity!r}"
        )
    try:
        if path.stat().st_size == 0:
            raise CorruptFileError(f"image {path} is empty (0 bytes); remove or replace the file")
        if path.suffix.lower() in DICOM_SUFFIXES:
            return _decode_dicom(path, intensity)
        return _decode_pil(path, intensity, volume)
    except Image.DecompressionBombError as e:
        raise DataFormatError(
            f"image {path} is over Pillow's decompression-bomb limit ({e}); if it is a real "
            "image, downscale it or raise the limit with data.max_pixels=<pixels>"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptFileError(
            f"cannot read image {path} ({type(e).__name__}); remove or replace the file"
        ) from None


def set_pixel_limit(max_pixels: int | None) -> None:
    """Pillow's decompression-bomb limit (None: Pillow's default)."""
    from PIL import Image

    if max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)


def fit(decoded: Decoded, size: tuple[int, int], channels: int) -> tuple[np.ndarray, list[str]]:
    """uint8 (H, W) or (H, W, 3) at ``size`` with ``channels`` (1 gray, 3 RGB), and notes."""
    from PIL import Image

    im = Image.fromarray(decoded.pixels)
    notes = list(decoded.notes)
    have = 1 if decoded.pixels.ndim == 2 else 3
    if have != channels:
        im = im.convert("L" if channels == 1 else "RGB")
        notes.append("rgb->gray" if channels == 1 else "gray->rgb")
    if (im.height, im.width) != tuple(size):
        notes.append(f"resized {im.height}x{im.width}->{size[0]}x{size[1]}")
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8), notes


def read_image(
    path: Path, size: int, color: str, intensity: str = "minmax"
) -> tuple[np.ndarray, list[str]]:
    """One file as training reads it: (size, size) gray or (size, size, 3) RGB, and notes."""
    return fit(decode(path, intensity), (size, size), 1 if color == "gray" else 3)
