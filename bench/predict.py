"""``bench-predict``: a finished run (or its ONNX export) applied to new images, one CSV row each.

Inputs are image files (PNG, JPEG, TIFF and BMP, 16-bit included; DICOM with the ``dicom``
extra), folders of them (searched recursively) or npz files (``images`` or ``test_images``,
uint8 (N, H, W[, C])). Each image is brought to what the run trained on the way its data was:
high-bit-depth images scaled to 0-255 (``--intensity``, as ``data.intensity``), converted to the
run's channels and resized (bilinear) to its stored size; the ``adjusted`` column says what was
done. Then the run's own preprocessing and best weights (or the exported model) give the
probabilities.

Columns: ``path``, ``adjusted``, ``predicted`` (class name), ``p_<class>`` (the model's
probabilities, as ``predictions_test.csv`` stores them), ``p_cal_<class>`` (after the run's
validation temperature, when it has one), ``confidence`` (the top calibrated probability) and,
with ``--coverage c``, ``abstain``: True where the confidence is below the threshold that keeps
a fraction ``c`` of the run's validation images (its risk-coverage curve), i.e. the cases to
hand to a human reader.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.confidence.calibration import confidence_and_correct
from bench.data.images import (
    INTENSITY_MODES,
    Decoded,
    Scan,
    decode,
    fit,
    image_suffixes,
    walk_images,
)
from bench.errors import ConfigError, DataFormatError, DatasetNotFoundError
from bench.finished import Run, load_finished_record, load_run
from bench.io import atomic_write_text
from bench.metrics import hard_predictions, scores_from_logits
from bench.records import RunFiles
from bench.spec import DataSpec
from bench.stats import read_predictions
from bench.toolkit import resolve_device

log = logging.getLogger(__name__)

NPZ_KEYS = ("images", "test_images")


# -- inputs -----------------------------------------------------------------------------------
def list_inputs(inputs: list[str]) -> list[Path]:
    """Image and npz files named by ``inputs`` (folders searched recursively as training scans
    a class folder: hidden and system entries skipped, links only inside, no file twice)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            skipped: list = []
            ctx = {
                "root": Path(os.path.realpath(p)),
                "counted": set(),
                "suffixes": image_suffixes() | {".npz"},
                "skipped": skipped,
            }
            found = sorted(walk_images(p, ctx, False) + walk_images(p, ctx, True))
            if skipped:
                log.warning("%s", Scan(p, {}, [], skipped).skipped_summary())
            if not found:
                raise DatasetNotFoundError(f"{p} holds no image Pillow opens (nor DICOM, npz)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetNotFoundError(f"input {p} does not exist; give image files or folders")
    return files


def fit_to_run(decoded: Decoded, spec: DataSpec) -> tuple[np.ndarray, list[str]]:
    """A decoded image -> (C, H, W) uint8 at the run's stored size and channels, and what
    changed (the training reader's :func:`bench.data.images.fit`)."""
    if spec.spatial_dims != 2:
        raise ConfigError(
            f"this run was trained on {spec.spatial_dims}D data; bench-predict reads 2D images "
            "and npz files of volumes in the run's layout"
        )
    arr, notes = fit(decoded, tuple(spec.input_size), spec.in_channels)
    arr = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return arr, notes


def _hwc(img: np.ndarray, key: str, spec: DataSpec) -> np.ndarray:
    """One stored npz image as (H, W) or (H, W, 3); another dimensionality is a one-line error."""
    if img.ndim == 3 and img.shape[-1] not in (1, 3) and img.shape[0] in (1, 3):
        img = np.moveaxis(img, 0, -1)  # channels first
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise DataFormatError(
            f"{key} has shape {img.shape}: this run takes 2D images ({spec.in_channels} "
            f"channel(s), {spec.input_size[0]}x{spec.input_size[1]}); a volume or a stack "
            "needs a run trained on 3D data"
        )
    return img


def read_npz_images(path: Path, spec: DataSpec) -> tuple[np.ndarray, list[str]]:
    with np.load(path, allow_pickle=False) as npz:
        key = next((k for k in NPZ_KEYS if k in npz.files), None)
        if key is None:
            raise DataFormatError(
                f"{path} has no {' or '.join(NPZ_KEYS)} array (it has {sorted(npz.files)})"
            )
        images = npz[key]
    if images.dtype != np.uint8:
        raise DataFormatError(f"{path}: {key} has dtype {images.dtype}, expected uint8")
    names = [f"{path}[{key}][{i}]" for i in range(len(images))]
    return images, names


def load_inputs(files: list[Path], spec: DataSpec, intensity: str) -> tuple[np.ndarray, list, list]:
    """(images uint8 (N, C, H, W), names, adjustments) for the run's 2D stored spec."""
    arrays, names, adjusted = [], [], []
    for f in files:
        if f.suffix.lower() == ".npz":
            images, keys = read_npz_images(f, spec)
            for img, key in zip(images, keys, strict=True):
                arr, notes = fit_to_run(Decoded(_hwc(img, key, spec)), spec)
                arrays.append(arr)
                names.append(key)
                adjusted.append("; ".join(notes))
            continue
        arr, notes = fit_to_run(decode(f, intensity), spec)
        arrays.append(arr)
        names.append(str(f))
        adjusted.append("; ".join(notes))
    if not arrays:
        raise DatasetNotFoundError("no images to predict")
    return np.stack(arrays), names, adjusted


# -- models -------------------------------------------------------------------------------------
class OnnxModel:
    """An export folder of ``bench-export --format onnx``: model.onnx + model.json."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        self.meta = json.loads((folder / "model.json").read_text())
        if self.meta.get("format") != "onnx":
            raise ConfigError(
                f"{folder} holds a {self.meta.get('format')} export; give an ONNX one"
            )
        self.session = ort.InferenceSession(
            str(folder / self.meta["file"]), providers=["CPUExecutionProvider"]
        )
        shape = self.meta["input"]["shape"]
        labels = self.meta["output"]["labels"]
        self.spec = DataSpec(
            self.meta["run_id"],
            self.meta["output"]["task"],
            len(shape) - 2,
            int(shape[1]),
            len(labels),
            tuple(int(s) for s in shape[2:]),
            tuple(labels),
        )

    def probabilities(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        out = [
            self.session.run(None, {"pixels": images[i : i + batch].astype(np.float32)})[0]
            for i in range(0, len(images), batch)
        ]
        return np.concatenate(out)


def stored_spec(run: Run) -> DataSpec:
    """The spec of the run's data as stored (before its resize/as_rgb preprocessing)."""
    return run.datamodule.base_spec()


def abstain_threshold(record, task: str, coverage: float, temperature: float | None) -> float:
    """Confidence threshold that keeps ``coverage`` of the run's validation images."""
    path = RunFiles(Path(record.dir)).predictions("val")
    if not path.exists():
        raise ConfigError(f"--coverage needs {path} (validation predictions of the run)")
    _, _, s = read_predictions(path)
    conf = image_confidence(calibrate(s, task, temperature), task)
    return float(np.quantile(conf, 1 - coverage, method="lower"))


def image_confidence(probs: np.ndarray, task: str) -> np.ndarray:
    """Per image: the top-label confidence (binary: of the 0.5 decision), the least confident
    label for multi-label data (the image is as uncertain as its most uncertain finding)."""
    if task == "multi-label":
        return np.where(probs > 0.5, probs, 1 - probs).min(1)
    dummy = np.zeros(len(probs), dtype=int)
    return confidence_and_correct(dummy, probs, task)[0]


def calibrate(probs: np.ndarray, task: str, temperature: float | None) -> np.ndarray:
    if not temperature:
        return probs
    from bench.confidence.calibration import logits_from_scores

    return scores_from_logits(logits_from_scores(probs, task) / float(temperature), task).numpy()


def predict_table(
    run_path: Path,
    inputs: list[str],
    coverage: float | None = None,
    device: str = "cpu",
    intensity: str = "minmax",
    masks_dir: Path | None = None,
) -> pd.DataFrame:
    """One row per input image (see the module docstring for the columns)."""
    if intensity not in INTENSITY_MODES:
        raise ConfigError(f"--intensity must be one of {', '.join(INTENSITY_MODES)}")
    if coverage is not None and not 0 < coverage <= 1:
        raise ConfigError(f"--coverage must be in (0, 1], got {coverage}")
    files = list_inputs(inputs)
    onnx = (run_path / "model.json").exists() and not RunFiles(run_path).record.exists()
    if onnx:
        model = OnnxModel(run_path)
        spec, task = model.spec, model.spec.task
        record_dir = run_path.parent
        record = load_finished_record(record_dir) if RunFiles(record_dir).record.exists() else None
    else:
        run = load_run(run_path, device)
        record, task = run.record, run.spec.task
        if run.spec.spatial_dims != 2:
            raise ConfigError("bench-predict handles 2D runs (classification or segmentation)")
        if run.spec.kind == "segmentation":
            if coverage is not None:
                raise ConfigError("--coverage applies to classification runs; remove it")
            return segment_table(run, files, intensity, masks_dir)
        spec = stored_spec(run)
    images, names, adjusted = load_inputs(files, spec, intensity)
    probs = model.probabilities(images) if onnx else run.predict(images)
    calibration = ((record.evaluations or {}).get("calibration") or {}) if record else {}
    temperature = calibration.get("temperature")
    labels = list(spec.label_names) or [str(i) for i in range(probs.shape[1])]
    df = pd.DataFrame({"path": names, "adjusted": adjusted})
    cal = calibrate(probs, task, temperature)
    pred = hard_predictions(torch.as_tensor(cal), task).numpy()
    if task == "multi-label":
        df["predicted"] = [";".join(labels[j] for j in np.flatnonzero(row)) for row in pred]
    else:
        df["predicted"] = [labels[int(i)] for i in pred]
    for j, name in enumerate(labels):
        df[f"p_{name}"] = probs[:, j]
    if temperature:
        for j, name in enumerate(labels):
            df[f"p_cal_{name}"] = cal[:, j]
    df["confidence"] = image_confidence(cal, task)
    if coverage is not None:
        if record is None:
            raise ConfigError("--coverage needs the run's record next to the export folder")
        threshold = abstain_threshold(record, task, coverage, temperature)
        df["abstain"] = df["confidence"] < threshold
        df.attrs["threshold"] = threshold
    df.attrs["calibrated"] = bool(temperature)
    return df


def segment_table(run: Run, files: list[Path], intensity: str, masks_dir: Path | None):
    """Segmentation: one PNG of class indices per image in ``masks_dir``; one row per image
    with its mask file and the fraction of pixels of each foreground class."""
    from PIL import Image

    if masks_dir is None:
        raise ConfigError("a segmentation run writes masks: give --masks-dir")
    spec = stored_spec(run)
    images, names, adjusted = load_inputs(files, spec, intensity)
    masks = run.segment(images)
    masks_dir.mkdir(parents=True, exist_ok=True)
    labels = list(spec.label_names) or [str(i) for i in range(spec.num_classes)]
    rows = []
    for i, (name, mask) in enumerate(zip(names, masks, strict=True)):
        stem = Path(name.split("[")[0]).stem
        out = masks_dir / f"{i:05d}_{stem}.png"
        Image.fromarray(mask.astype(np.uint8)).save(out)
        row = {"path": name, "adjusted": adjusted[i], "mask": str(out)}
        for c in range(1, spec.num_classes):
            row[f"frac_{labels[c]}"] = float((mask == c).mean())
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["masks_dir"] = str(masks_dir)
    return df


def run(args) -> int:
    """The body of ``bench-predict`` (its options: :mod:`bench.commands.predict`)."""
    device = resolve_device(args.device)
    out = Path(args.out)
    masks_dir = Path(args.masks_dir) if args.masks_dir else out.with_name(out.stem + "_masks")
    df = predict_table(
        Path(args.run_dir), args.inputs, args.coverage, device, args.intensity, masks_dir
    )
    atomic_write_text(out, df.to_csv(index=False, float_format="%.7g"))
    adjusted = int((df["adjusted"] != "").sum())
    extra = []
    if "masks_dir" in df.attrs:
        extra.append(f"masks in {df.attrs['masks_dir']} (PNG, pixel value = class index)")
    if adjusted:
        extra.append(f"{adjusted} resized/converted (see the adjusted column)")
    if df.attrs.get("calibrated"):
        extra.append("p_cal_* after the run's validation temperature")
    if "abstain" in df:
        extra.append(
            f"{int(df['abstain'].sum())} abstain at coverage {args.coverage} "
            f"(confidence < {df.attrs['threshold']:.4f})"
        )
    print(f"wrote {out} ({len(df)} images{'; ' + '; '.join(extra) if extra else ''})")
    return 0
