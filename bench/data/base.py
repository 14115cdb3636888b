"""The in-memory datamodule every source builds on: uint8 tensors, whole-batch preprocessing."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.data.augment import augment_batch, get_preset
from bench.data.batching import BatchIndexSampler, TensorBatchDataset
from bench.data.folds import fold_assignment, indices_digest
from bench.data.patches import PATCH_SAMPLERS, check_patch_size, crop, patch_origins
from bench.errors import ConfigError, DataFormatError
from bench.spec import DataSpec

SAMPLERS = ("random", "balanced")

log = logging.getLogger(__name__)

# Datasets up to this size are moved to the GPU once (device_resident=auto).
DEVICE_RESIDENT_MAX_BYTES = 4 << 30


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of size ``n`` keeping class proportions (multi-label: random)."""
    rng = np.random.default_rng(seed)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    if labels.ndim != 1:
        return np.sort(rng.choice(total, n, replace=False))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / total * n).astype(int)
    # hand out the rounding remainder to the largest fractional parts, keep every class present
    rest = n - quota.sum()
    frac = counts / total * n - quota
    quota[np.argsort(-frac)[:rest]] += 1
    quota = np.maximum(quota, np.minimum(1, counts))
    picked = [
        rng.choice(np.flatnonzero(labels == c), min(q, cnt), replace=False)
        for c, q, cnt in zip(classes, quota, counts, strict=True)
    ]
    idx = np.concatenate(picked)
    if len(idx) > n:  # keeping rare classes present can overshoot by a few
        idx = rng.choice(idx, n, replace=False)
    return np.sort(idx)


class InMemoryDataModule(L.LightningDataModule):
    """Holds each split as uint8 images plus targets; batches are normalised on the device.

    Subclasses implement :meth:`load_splits` (returning channels-first uint8 arrays) and
    :meth:`base_spec`. Normalisation ``(x/255 - mean)/std``, ``as_rgb``, ``resize`` and
    augmentation run on whole batches in :meth:`on_after_batch_transfer`, i.e. after the batch
    reached the accelerator. ``fraction``/``limit`` take a stratified, seeded subset of train.

    ``cv={"folds": k, "fold": i, "seed": s}`` pools train and val, splits them into ``k``
    stratified (patient-grouped where the source has groups) folds seeded by ``s``, and trains on
    all folds but ``i``, which becomes the validation split; the test split is untouched.
    ``sampler="balanced"`` draws training samples with probability inversely proportional to
    their class frequency.
    """

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        augment: str = "none",
        as_rgb: bool = False,
        resize: int | None = None,
        resize_mode: str = "nearest",
        mean: float = 0.5,
        std: float = 0.5,
        fraction: float | None = None,
        limit: int | None = None,
        seed: int | None = 0,
        device_resident: str | bool = "auto",
        sampler: str = "random",
        cv: dict | None = None,
        patch_size: int | list[int] | None = None,
        patches_per_image: int | None = None,
        patch_sampler: str | None = None,
        foreground_fraction: float | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if fraction is not None and not 0 < fraction <= 1:
            raise ConfigError(f"data.fraction must be in (0, 1], got {fraction}")
        if limit is not None and limit < 1:
            raise ConfigError(f"data.limit must be >= 1, got {limit}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.augment_name = augment
        self.augment = get_preset(augment)
        self.as_rgb = as_rgb
        self.resize = resize
        self.resize_mode = resize_mode
        self.mean, self.std = mean, std
        self.fraction, self.limit = fraction, limit
        self.seed = 0 if seed is None else int(seed)
        self.device_resident = device_resident
        if sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.sampler = sampler
        self.cv = _check_cv(cv)
        self._patch_option = patch_size
        self.patches_per_image = int(patches_per_image or 1)
        if self.patches_per_image < 1:
            raise ConfigError(f"data.patches_per_image must be >= 1, got {patches_per_image}")
        self.patch_sampler = patch_sampler or "random"
        if self.patch_sampler not in PATCH_SAMPLERS:
            raise ConfigError(
                f"data.patch_sampler must be one of {PATCH_SAMPLERS}, got {patch_sampler!r}"
            )
        self.foreground_fraction = 0.5 if foreground_fraction is None else foreground_fraction
        if not 0 <= self.foreground_fraction <= 1:
            raise ConfigError(
                f"data.foreground_fraction must be in [0, 1], got {foreground_fraction}"
            )
        self.cv_info: dict | None = None
        self._raw: dict | None = None
        self.notes: list[str] = []
        self.splits: dict[str, TensorBatchDataset] | None = None

    # -- to implement --------------------------------------------------------------------------
    def base_spec(self) -> DataSpec:
        """The spec of the data as stored (before ``as_rgb``/``resize``)."""
        raise NotImplementedError

    def load_splits(self) -> dict[str, tuple[Any, Any]]:
        """``{split: (images uint8 (N,C,*spatial), targets)}`` for train/val/test."""
        raise NotImplementedError

    def split_groups(self) -> dict[str, np.ndarray] | None:
        """Group (patient) id per sample of each split, where the source knows them."""
        return None

    def source_notes(self) -> list[str]:
        """What the record must say about how the source was read (skipped files, choices)."""
        return []

    def forget_caches(self) -> None:
        """``+force=true``: read the source again, whatever a cache of it says."""

    def fingerprint(self) -> str | None:
        """Content hash of the data this module reads (it enters the run id); None when the
        data is generated from the config alone (synthetic sets)."""
        return None

    @property
    def patch_size(self) -> tuple[int, ...] | None:
        """Training patch size per spatial axis (segmentation), or None for whole images."""
        if self._patch_option is None:
            return None
        spec = self.spec
        if spec.kind != "segmentation":
            raise ConfigError("data.patch_size is for segmentation data; remove it")
        return check_patch_size(self._patch_option, spec.spatial_dims, spec.input_size)

    # -- spec ----------------------------------------------------------------------------------
    @property
    def spec(self) -> DataSpec:
        base = self.base_spec()
        channels = 3 if self.as_rgb else base.in_channels
        if self.as_rgb and base.in_channels not in (1, 3):
            raise ConfigError(f"data.as_rgb needs 1- or 3-channel images, got {base.in_channels}")
        size = tuple([int(self.resize)] * base.spatial_dims) if self.resize else base.input_size
        return dataclasses.replace(base, in_channels=channels, input_size=size)

    # -- Lightning hooks -----------------------------------------------------------------------
    def prepared_splits(self) -> dict[str, tuple[Any, Any]]:
        """The splits as trained on (folds and subsets applied), as host arrays; cached."""
        if self._raw is not None:
            return self._raw
        raw = self.load_splits()
        if self.cv is not None:
            raw = self._cv_split(raw)
        train_x, train_y = raw["train"]
        n = len(train_x)
        keep = n
        if self.fraction is not None:
            keep = max(1, round(n * self.fraction))
        if self.limit is not None:
            keep = min(keep, self.limit)
        if keep < n:
            y = np.asarray(train_y)
            labels = y if y.ndim <= 2 and self.base_spec().kind == "classification" else None
            idx = (
                stratified_subset(labels, keep, self.seed)
                if labels is not None
                else np.sort(np.random.default_rng(self.seed).choice(n, keep, replace=False))
            )
            raw["train"] = (train_x[idx], train_y[idx])
            log.info("using %d of %d training samples (stratified, seed %d)", keep, n, self.seed)
        self.notes = [*self.source_notes(), *class_coverage_notes(raw, self.base_spec())]
        self._raw = raw
        return raw

    @property
    def n_train(self) -> int:
        return len(self.prepared_splits()["train"][0])

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        raw = self.prepared_splits()
        device = self._resident_device(raw)
        self.splits = {
            name: TensorBatchDataset(self._as_tensor(x, device), self._as_tensor(y, device))
            for name, (x, y) in raw.items()
        }

    def _cv_split(self, raw: dict) -> dict:
        """Pool train+val and take fold ``cv.fold`` as validation."""
        if self.base_spec().kind != "classification":
            raise ConfigError("data.cv is for classification data; remove it for segmentation")
        (tx, ty), (vx, vy) = raw["train"], raw["val"]
        x = np.concatenate([np.asarray(tx), np.asarray(vx)])
        y = np.concatenate([np.asarray(ty), np.asarray(vy)])
        groups = self.split_groups()
        pooled_groups = (
            np.concatenate([groups["train"], groups["val"]]) if groups is not None else None
        )
        folds = fold_assignment(y, self.cv["folds"], self.cv["seed"], pooled_groups)
        val = folds == self.cv["fold"]
        self.cv_info = {
            **self.cv,
            "n_train": int((~val).sum()),
            "n_val": int(val.sum()),
            "grouped": pooled_groups is not None,
            "val_digest": indices_digest(np.flatnonzero(val)),
        }
        log.info(
            "cross-validation fold %d of %d: %d train, %d val (pooled train+val, seed %d)",
            self.cv["fold"],
            self.cv["folds"],
            self.cv_info["n_train"],
            self.cv_info["n_val"],
            self.cv["seed"],
        )
        return {**raw, "train": (x[~val], y[~val]), "val": (x[val], y[val])}

    def train_labels(self) -> np.ndarray:
        """Labels of the training split as used (after folds and subsets)."""
        return np.asarray(self.prepared_splits()["train"][1])

    def class_counts(self) -> np.ndarray:
        """Training samples per class (positives per label for multi-label)."""
        y = self.train_labels()
        k = self.spec.num_classes
        if y.ndim == 2 and y.shape[1] > 1:
            return y.sum(0).astype(np.int64)
        return np.bincount(y.reshape(-1).astype(np.int64), minlength=k)

    def _sample_weights(self) -> torch.Tensor:
        y = self.train_labels()
        if y.ndim == 2 and y.shape[1] > 1:
            raise ConfigError("data.sampler=balanced needs single-label classification data")
        y = y.reshape(-1).astype(np.int64)
        counts = np.bincount(y)
        return torch.as_tensor(1.0 / counts[y], dtype=torch.double)

    def _resident_device(self, raw) -> torch.device | None:
        trainer = getattr(self, "trainer", None)
        if trainer is None or self.device_resident is False:
            return None
        device = trainer.strategy.root_device
        if device.type == "cpu":
            return None
        nbytes = sum(
            np.asarray(x).nbytes if isinstance(x, np.ndarray) else 0 for x, _ in raw.values()
        )
        if self.device_resident == "auto" and (
            nbytes > DEVICE_RESIDENT_MAX_BYTES
            or any(isinstance(x, np.memmap) for x, _ in raw.values())
        ):
            return None
        log.info("moving the dataset (%.1f MB) to %s once", nbytes / 1e6, device)
        return device

    @staticmethod
    def _as_tensor(arr, device: torch.device | None):
        if isinstance(arr, np.memmap) or (
            isinstance(arr, np.ndarray) and not arr.flags.writeable and device is None
        ):
            return arr  # stays on disk; batches are read on demand
        t = torch.from_numpy(np.ascontiguousarray(arr))
        return t.to(device) if device is not None else t

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self.splits is None:
            self.setup()
        ds = self.splits[split]
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        on_gpu = isinstance(ds.images, torch.Tensor) and ds.images.is_cuda
        sampler = BatchIndexSampler(
            len(ds),
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
            device=ds.images.device if on_gpu else None,
            weights=self._sample_weights() if train and self.sampler == "balanced" else None,
            repeats=self.patches_per_image if train else 1,
        )
        workers = 0 if on_gpu else self.num_workers
        return DataLoader(
            ds,
            batch_size=None,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory and not on_gpu,
            persistent_workers=workers > 0,
            # each iter() draws a base seed: from the loader's own generator, not from torch's
            # stream, so augmentation and dropout draws depend on (seed, epoch) alone
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y, idx = batch
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        x, y = self.preprocess(x, y, training)
        return as_trainer_dtype(x, trainer), y, idx

    def preprocess(self, x: torch.Tensor, y: torch.Tensor, training: bool = False):
        """uint8 batch -> normalised float batch (resized, RGB, augmented as configured)."""
        x = (x.float() / 255.0 - self.mean) / self.std
        if self.as_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        seg = self.base_spec().kind == "segmentation"
        if self.resize and tuple(x.shape[2:]) != self.spec.input_size:
            mode = self.resize_mode
            if mode in ("bilinear", "trilinear"):
                mode = "trilinear" if x.ndim == 5 else "bilinear"
            x = F.interpolate(x, size=self.spec.input_size, mode=mode)
            if seg:
                y = F.interpolate(y[:, None].float(), size=self.spec.input_size, mode="nearest")
                y = y[:, 0].long()
        if training and seg and self.patch_size is not None:
            origins = patch_origins(
                y, self.patch_size, self.patch_sampler, self.foreground_fraction
            )
            x, y = crop(x, origins, self.patch_size), crop(y, origins, self.patch_size)
        if training and self.augment is not None:
            x, mask = augment_batch(x, self.augment, y if seg else None)
            if seg:
                y = mask
        return x.contiguous(), y


def as_trainer_dtype(x: torch.Tensor, trainer) -> torch.Tensor:
    """Images in float64 under ``trainer.precision=64-true`` (Lightning converts the batch
    before the transfer hook, where uint8 images become float32)."""
    if trainer is not None and str(getattr(trainer, "precision", "")).startswith("64"):
        return x.double()
    return x


def class_coverage_notes(raw: dict, spec: DataSpec) -> list[str]:
    """Check which classes each split holds (single-label classification).

    A validation split with fewer than two classes leaves AUC, the selection metric, undefined,
    and one that lacks a class the training split teaches would select the epoch on the other
    classes alone (val AUC 1.0 beside val accuracy 0.0): both are errors, raised before training.
    A test split with one class gets NaN AUC/MCC; a test split without some class has that class
    left out of its macro means (NaN per-class cells); a training split without a class the
    other splits have is warned about. These are returned as notes for the record.
    """
    if spec.kind != "classification" or spec.task == "multi-label":
        return []
    names = list(spec.label_names) or [str(i) for i in range(spec.num_classes)]
    present = {
        split: sorted(set(np.unique(np.asarray(y).reshape(-1)).astype(int).tolist()))
        for split, (_, y) in raw.items()
    }

    def label(classes):
        return ", ".join(repr(names[c]) if c < len(names) else str(c) for c in classes)

    if len(present.get("val", [0, 1])) < 2:
        raise DataFormatError(
            f"the val split of {spec.name} holds only class {label(present['val'])} "
            f"({len(raw['val'][1])} samples): validation AUC, by which the best epoch is "
            "selected, is undefined; give the val split samples of at least two classes"
        )
    lacking = sorted(set(present.get("train", [])) - set(present.get("val", present["train"])))
    if lacking:
        raise DataFormatError(
            f"the val split of {spec.name} has no samples of class {label(lacking)}, which the "
            "train split holds: the best epoch would be selected without it; give the val split "
            "samples of every class (or use data.cv.folds=5 for stratified folds)"
        )
    notes = []
    absent_test = sorted(set(range(len(names))) - set(present.get("test", range(len(names)))))
    if absent_test and len(present.get("test", [])) >= 2:
        notes.append(
            f"the test split of {spec.name} has no samples of class {label(absent_test)}: it is "
            "left out of the test macro means (AUC, recall, balanced accuracy, F1) and its "
            "per-class recall and F1 are NaN"
        )
    if len(present.get("test", [0, 1])) < 2:
        notes.append(
            f"the test split of {spec.name} holds only class {label(present['test'])}: test "
            "AUC and MCC are undefined and stored as NaN"
        )
    others = set(present.get("val", [])) | set(present.get("test", []))
    missing = sorted(others - set(present.get("train", [])))
    if missing:
        notes.append(
            f"the train split of {spec.name} has no samples of class {label(missing)}, which "
            "val/test hold: the model cannot learn it"
        )
    for note in notes:
        log.warning("%s", note)
    return notes


def _check_cv(cv: dict | None) -> dict | None:
    """``None`` or ``{"folds": k, "fold": i, "seed": s}`` with 0 <= i < k."""
    if not cv or cv.get("folds") in (None, 0):
        return None
    folds, fold = int(cv["folds"]), int(cv.get("fold") or 0)
    if not 0 <= fold < folds:
        raise ConfigError(f"data.cv.fold must be in 0..{folds - 1}, got {fold}")
    return {"folds": folds, "fold": fold, "seed": int(cv.get("seed") or 0)}
