"""MedMNIST-C corruptions (Di Salvo et al. 2024) reimplemented with maintained libraries.

The ``medmnistc`` package pins ``medmnist==3.0.1`` and ``scikit-image==0.23.2`` and needs
ImageMagick's ``wand`` for its motion blur, so medbench implements the same corruption families
with PIL, NumPy, SciPy and scikit-image, at the severities MedMNIST-C defines per dataset
(``SEVERITIES`` below; values from the MedMNIST-C registry, cited, not its code).

MedMNIST-C defines them on 224² images. Parameters measured in pixels (blur kernels, disk and
motion radii) are scaled by ``size / 224`` for smaller images; relative parameters (pixelate and
zoom factors, noise levels, JPEG quality, intensity factors) are used as they are. At 224² the
corruptions are MedMNIST-C's. Severity 0 is the clean image; 1-5 grow.

Not implemented: the microscopy/dermoscopy-specific ``stain_deposit``, ``bubble``,
``black_corner`` and ``characters`` (they need the package's ink assets).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance
from scipy import ndimage

FAMILIES = {
    "digital": ("pixelate", "jpeg_compression"),
    "noise": ("gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise"),
    "blur": ("defocus_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "color": ("brightness_up", "brightness_down", "contrast_up", "contrast_down", "saturate"),
    "task-specific": ("gamma_corr_up", "gamma_corr_down"),
}
NOT_IMPLEMENTED = ("stain_deposit", "bubble", "black_corner", "characters")

_BRIGHT = (1.1, 1.2, 1.3, 1.4, 1.5)
_DIM = (0.9, 0.8, 0.7, 0.6, 0.5)
_C_UP = (1.1, 1.2, 1.3, 1.4, 1.6)
_C_DOWN = (0.9, 0.8, 0.7, 0.6, 0.4)
_G_UP = (1.1, 1.2, 1.3, 1.4, 1.6)
_G_DOWN = (0.9, 0.8, 0.7, 0.6, 0.4)
_ORGAN = {
    "pixelate": (0.7, 0.6, 0.5, 0.40, 0.35),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.20),
    "speckle_noise": (0.05, 0.10, 0.20, 0.30, 0.40),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
    "shot_noise": (200, 100, 50, 25, 15),
    "gaussian_blur": (11, 13, 15, 17, 21),
    "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
    "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.60),
    "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
    "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
    "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
    "gamma_corr_down": _G_DOWN,
}
# dataset -> corruption -> five severity parameters (MedMNIST-C's per-dataset choice)
SEVERITIES: dict[str, dict[str, tuple]] = {
    "pneumoniamnist": {
        "pixelate": (0.8, 0.7, 0.6, 0.5, 0.40),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.05, 0.06, 0.07, 0.08),
        "speckle_noise": (0.05, 0.07, 0.10, 0.15, 0.20),
        "impulse_noise": (0.005, 0.01, 0.013, 0.017, 0.02),
        "shot_noise": (300, 200, 150, 100, 80),
        "gaussian_blur": (3, 5, 7, 9, 11),
        "brightness_up": _BRIGHT,
        "brightness_down": _DIM,
        "contrast_up": _C_UP,
        "contrast_down": _C_DOWN,
        "gamma_corr_up": _G_UP,
        "gamma_corr_down": _G_DOWN,
    },
    "chestmnist": {
        "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "gaussian_blur": (3, 5, 7, 9, 11),
        "brightness_up": _BRIGHT,
        "brightness_down": _DIM,
        "contrast_up": _C_UP,
        "contrast_down": _C_DOWN,
        "gamma_corr_up": _G_UP,
        "gamma_corr_down": _G_DOWN,
    },
    "retinamnist": {
        "pixelate": (0.8, 0.60, 0.50, 0.40, 0.35),
        "jpeg_compression": (30, 25, 20, 10, 5),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.20),
        "speckle_noise": (0.10, 0.15, 0.20, 0.25, 0.30),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
        "motion_blur": ((8, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "brightness_down": _DIM,
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "breastmnist": {
        "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "speckle_noise": (0.10, 0.15, 0.20, 0.25, 0.30),
        "motion_blur": ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)),
        "brightness_up": (1.4, 1.5, 1.6, 1.8, 2.0),
        "brightness_down": (0.55, 0.5, 0.45, 0.4, 0.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "octmnist": {
        "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
        "jpeg_compression": (30, 15, 10, 7, 5),
        "speckle_noise": (0.15, 0.30, 0.40, 0.50, 0.60),
        "defocus_blur": ((0.5, 0.6), (1, 0.5), (1.5, 0.1), (2.0, 0.5), (2.5, 0.1)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "contrast_down": (0.6, 0.4, 0.3, 0.2, 0.15),
    },
    "tissuemnist": {
        "pixelate": (0.40, 0.30, 0.20, 0.15, 0.10),
        "jpeg_compression": (25, 20, 15, 10, 7),
        "impulse_noise": (0.01, 0.015, 0.02, 0.025, 0.03),
        "gaussian_blur": (13, 15, 17, 21, 25),
        "brightness_up": (1.3, 1.4, 1.5, 1.6, 1.7),
        "brightness_down": (0.8, 0.7, 0.6, 0.5, 0.4),
        "contrast_up": _C_UP,
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
    "dermamnist": {
        "pixelate": (0.7, 0.5, 0.40, 0.30, 0.25),
        "jpeg_compression": (30, 20, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
        "motion_blur": ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1.10, 0.01), (1.15, 0.01), (1.20, 0.02), (1.25, 0.02), (1.30, 0.03)),
        "brightness_up": _BRIGHT,
        "brightness_down": _DIM,
        "contrast_up": _C_UP,
        "contrast_down": (0.8, 0.7, 0.6, 0.5, 0.4),
    },
    "bloodmnist": {
        "pixelate": (0.6, 0.5, 0.40, 0.30, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((2, 0.01), (3, 0.1), (4, 0.1), (5, 0.1), (6, 0.1)),
        "motion_blur": ((3, 3), (5, 5), (10, 5), (10, 7), (10, 9)),
        "brightness_up": (1.1, 1.2, 1.3, 1.35, 1.4),
        "brightness_down": _DIM,
        "contrast_up": (1.1, 1.15, 1.2, 1.25, 1.3),
        "contrast_down": _DIM,
        "saturate": (0.05, 0.10, 0.15, 0.17, 0.20),
    },
    "pathmnist": {
        "pixelate": (0.8, 0.6, 0.40, 0.30, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3)),
        "motion_blur": ((5, 5), (10, 5), (15, 5), (15, 8), (15, 12)),
        "brightness_up": (1.1, 1.15, 1.2, 1.22, 1.25),
        "brightness_down": (0.85, 0.80, 0.75, 0.72, 0.70),
        "contrast_up": _C_UP,
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "saturate": (0.05, 0.10, 0.15, 0.20, 0.25),
    },
}


def family_of(name: str) -> str:
    return next(f for f, names in FAMILIES.items() if name in names)


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img)


def _to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    # rounded, not floored: a float round trip must not darken every pixel by one level
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    x = _to_float(img)
    if x.ndim == 3:
        out = np.stack(
            [ndimage.convolve(x[..., c], kernel, mode="reflect") for c in range(x.shape[2])], -1
        )
    else:
        out = ndimage.convolve(x, kernel, mode="reflect")
    return _to_uint8(out)


def pixelate(img, factor, rng, scale):
    h, w = img.shape[:2]
    small = _pil(img).resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def jpeg_compression(img, quality, rng, scale):
    buf = io.BytesIO()
    _pil(img).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(buf))


def gaussian_noise(img, c, rng, scale):
    x = _to_float(img)
    return _to_uint8(x + rng.normal(0, c, x.shape))


def speckle_noise(img, c, rng, scale):
    x = _to_float(img)
    return _to_uint8(x + x * rng.normal(0, c, x.shape))


def impulse_noise(img, amount, rng, scale):
    from skimage.util import random_noise

    return _to_uint8(random_noise(_to_float(img), mode="s&p", amount=amount, rng=rng))


def shot_noise(img, mult, rng, scale):
    x = _to_float(img)
    return _to_uint8(rng.poisson(x * mult) / mult)


def gaussian_blur(img, kernel, rng, scale):
    # torchvision's sigma for a kernel of this size at 224², scaled to the image; ``img`` is a
    # batch (N, H, W) or (N, H, W, C): the batch and channel axes are not blurred
    sigma = (0.3 * ((kernel - 1) * 0.5 - 1) + 0.8) * scale
    axes = (0, sigma, sigma, 0)[: img.ndim]
    return _to_uint8(ndimage.gaussian_filter(_to_float(img), axes, mode="reflect"))


def _disk(radius: float, alias_blur: float, supersample: int = 9) -> np.ndarray:
    """A disk kernel whose weights are each pixel's covered area (so sub-pixel radii, as a
    224² radius scaled to 28², still blur), softened by ``alias_blur``."""
    half = int(np.ceil(radius)) + 1
    fine = (np.arange((2 * half + 1) * supersample) + 0.5) / supersample - half - 0.5
    xx, yy = np.meshgrid(fine, fine)
    inside = (xx**2 + yy**2) <= radius**2
    disk = inside.reshape(2 * half + 1, supersample, 2 * half + 1, supersample).mean((1, 3))
    disk = ndimage.gaussian_filter(disk, max(alias_blur, 1e-3))
    return disk / disk.sum()


def defocus_blur(img, params, rng, scale):
    radius, alias = params
    return _convolve(img, _disk(radius * scale, alias))


def _motion_kernel(radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """A one-sided, Gaussian-weighted line (ImageMagick's motion blur) at ``angle_deg``."""
    length = max(1, int(np.ceil(radius)))
    size = 2 * length + 1
    k = np.zeros((size, size))
    t = np.arange(0, length + 1)
    w = np.exp(-(t**2) / (2 * max(sigma, 1e-3) ** 2))
    a = np.deg2rad(angle_deg)
    for ti, wi in zip(t, w, strict=True):
        x = int(round(length + ti * np.cos(a)))
        y = int(round(length + ti * np.sin(a)))
        k[y, x] += wi
    return k / k.sum()


def motion_blur(img, params, rng, scale):
    radius, sigma = params
    return _convolve(img, _motion_kernel(radius * scale, sigma * scale, rng.uniform(-45, 45)))


def zoom_blur(img, params, rng, scale):
    max_factor, step = params
    x = _to_float(img)
    h = x.shape[0]
    out = np.zeros_like(x)
    factors = np.arange(1.0, max_factor + 1e-9, step)
    for z in factors:
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        crop = x[top : top + ch, top : top + ch]
        zoom = (z, z, 1) if x.ndim == 3 else (z, z)
        zoomed = ndimage.zoom(crop, zoom, order=1)
        trim = (zoomed.shape[0] - h) // 2
        out += zoomed[trim : trim + h, trim : trim + h]
    return _to_uint8((x + out) / (len(factors) + 1))


def _enhance(kind):
    def apply(img, factor, rng, scale):
        return np.asarray(kind(_pil(img)).enhance(factor))

    return apply


def gamma(img, g, rng, scale):
    return _to_uint8(_to_float(img) ** g)


def saturate(img, amount, rng, scale):
    from skimage.color import hsv2rgb, rgb2hsv

    if img.ndim != 3:
        return img
    hsv = rgb2hsv(_to_float(img))
    hsv[..., 1] = np.clip(hsv[..., 1] + amount, 0, 1)
    return _to_uint8(hsv2rgb(hsv))


CORRUPTIONS: dict[str, Callable] = {
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "gaussian_noise": gaussian_noise,
    "speckle_noise": speckle_noise,
    "impulse_noise": impulse_noise,
    "shot_noise": shot_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "brightness_up": _enhance(ImageEnhance.Brightness),
    "brightness_down": _enhance(ImageEnhance.Brightness),
    "contrast_up": _enhance(ImageEnhance.Contrast),
    "contrast_down": _enhance(ImageEnhance.Contrast),
    "gamma_corr_up": gamma,
    "gamma_corr_down": gamma,
    "saturate": saturate,
}


# Datasets MedMNIST-C does not cover (synthetic sets, a user's folder, MedSegBench images) get
# this documented generic set: MedMNIST-C's OrganAMNIST severities (13 corruptions in the digital,
# noise, blur, colour and gamma families), none of which assumes a modality or a colour space.
GENERIC = "generic"


def corruption_set(flag: str | None) -> str:
    """``medmnist-c:<flag>`` where MedMNIST-C defines the dataset, else ``generic``."""
    return f"medmnist-c:{flag}" if flag in SEVERITIES else GENERIC


def corruptions_for(flag: str | None) -> dict[str, tuple]:
    """The corruptions (and their five severities) MedMNIST-C defines for ``flag``; the
    generic set (OrganAMNIST's) for any other 2D dataset."""
    return SEVERITIES.get(flag, _ORGAN) if flag else _ORGAN


# elementwise (or batch-aware) corruptions: applied to the whole batch at once
BATCHED = {gaussian_noise, speckle_noise, impulse_noise, shot_noise, gaussian_blur, gamma}


def corrupt(
    images: np.ndarray, name: str, severity: int, flag: str | None, seed: int = 0
) -> np.ndarray:
    """Corrupt channels-first uint8 images (N, C, H, W) at ``severity`` (0 = unchanged).

    Seeded per (corruption, severity): every model sees the same corrupted test set.
    """
    if severity == 0:
        return images
    params = corruptions_for(flag)[name][severity - 1]
    fn = CORRUPTIONS[name]
    rng = np.random.default_rng([seed, severity, sum(map(ord, name))])
    scale = images.shape[-1] / 224
    if fn in BATCHED:  # (N, C, H, W) -> (N, H, W[, C]) and back
        hwc = images[:, 0] if images.shape[1] == 1 else np.moveaxis(images, 1, -1)
        res = np.asarray(fn(hwc, params, rng, scale), dtype=np.uint8)
        return res[:, None] if images.shape[1] == 1 else np.moveaxis(res, -1, 1)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        hwc = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
        res = np.asarray(fn(hwc, params, rng, scale), dtype=np.uint8)
        if res.ndim == 3 and img.shape[0] == 1:
            res = res[..., 0]
        out[i] = res[None] if img.shape[0] == 1 else np.moveaxis(res, -1, 0)
    return out
