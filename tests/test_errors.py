"""Bad input: each case raises the named error with a one-line message naming the thing and fix."""

import errno
import os

import numpy as np
import pytest

from bench.cli import precheck_overrides
from bench.data.folder import ImageFolderDataModule
from bench.data.medmnist import MedMNISTDataModule
from bench.data.segmentation import SegmentationNpzDataModule
from bench.errors import (
    BenchError,
    ConfigError,
    CorruptFileError,
    DataFormatError,
    DatasetNotFoundError,
    ModelDataMismatchError,
    OutputPathError,
    RecordWriteError,
    UnknownOptionError,
    WeightsError,
)
from bench.io import atomic_write_text
from bench.models import build_model
from bench.spec import DataSpec

from conftest import run_cli
from helpers import COUNTS, write_medmnist_npz

G28 = DataSpec("g", "binary-class", 2, 1, 2, (28, 28))
VOL = DataSpec("v", "binary-class", 3, 1, 2, (28, 28, 28))


def _breast(tmp, **overrides):
    write_medmnist_npz(tmp / "breastmnist.npz", (28, 28), 2, **overrides)
    dm = MedMNISTDataModule("breastmnist", root=str(tmp), download=False)
    dm.setup()


def _truncated(tmp):
    p = write_medmnist_npz(tmp / "breastmnist.npz", (28, 28), 2)
    p.write_bytes(p.read_bytes()[:5000])
    MedMNISTDataModule("breastmnist", root=str(tmp), download=False).setup()


def _missing_key(tmp):
    p = write_medmnist_npz(tmp / "x.npz", (28, 28), 2)
    arrays = dict(np.load(p))
    del arrays["val_labels"]
    np.savez(tmp / "breastmnist.npz", **arrays)
    MedMNISTDataModule("breastmnist", root=str(tmp), download=False).setup()


def _folder(tmp, classes):
    from PIL import Image

    for c, n in classes.items():
        (tmp / "imgs" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp / "imgs" / c / f"{i}.png")
    ImageFolderDataModule(str(tmp / "imgs"), cache_dir=str(tmp / "c")).setup()


def _weights(tmp, obj):
    import torch

    torch.save(obj, tmp / "w.pth")
    build_model("bccnn", G28, weights=str(tmp / "w.pth"))


def _seg_mask_size(tmp):
    arrays = {}
    for s, n in COUNTS.items():
        arrays[f"{s}_images"] = np.zeros((n, 32, 32), np.uint8)
        arrays[f"{s}_label"] = np.zeros((n, 16, 16), np.uint8)
    np.savez(tmp / "seg.npz", **arrays)
    SegmentationNpzDataModule(str(tmp / "seg.npz"), num_classes=2).setup()


def _not_writable(tmp):
    (tmp / "file").write_text("x")
    atomic_write_text(tmp / "file" / "runs" / "record.json", "{}")


CASES = [
    ("unknown flag", lambda t: MedMNISTDataModule("foomnist"), UnknownOptionError, "valid flags"),
    (
        "invalid size",
        lambda t: MedMNISTDataModule("pneumoniamnist", size=32),
        ConfigError,
        "valid sizes",
    ),
    (
        "3D flag, 2D size",
        lambda t: MedMNISTDataModule("organmnist3d", size=224),
        ConfigError,
        "valid sizes: 28, 64",
    ),
    (
        "npz missing",
        lambda t: MedMNISTDataModule("breastmnist", root=str(t), download=False).setup(),
        DatasetNotFoundError,
        "copy the file there",
    ),
    (
        "download fails offline",
        lambda t: MedMNISTDataModule(
            "breastmnist", root=str(t / "nowhere" / "x"), download=True
        ).setup(),
        DatasetNotFoundError,
        "run once online",
    ),
    ("truncated npz", _truncated, CorruptFileError, "download it again"),
    ("npz missing a key", _missing_key, DataFormatError, "has no array 'val_labels'"),
    (
        "wrong dtype",
        lambda t: _breast(t, train_images=np.zeros((40, 28, 28), np.float32)),
        DataFormatError,
        "expected uint8",
    ),
    (
        "count mismatch",
        lambda t: _breast(t, train_labels=np.zeros((39, 1))),
        DataFormatError,
        "39 labels for 40 images",
    ),
    (
        "labels out of range",
        lambda t: _breast(t, test_labels=np.full((12, 1), 7)),
        DataFormatError,
        "2 classes",
    ),
    (
        "2D model on volumes",
        lambda t: build_model("resnet50", VOL),
        ModelDataMismatchError,
        "use one of: cnn3d",
    ),
    (
        "U-Net on labels",
        lambda t: build_model("unet", G28),
        ModelDataMismatchError,
        "pick a classification model",
    ),
    (
        "num_classes contradicts",
        lambda t: build_model("bccnn", G28, num_classes=4),
        ConfigError,
        "remove the override",
    ),
    (
        "unknown model",
        lambda t: build_model("resnet51", G28),
        UnknownOptionError,
        "registered models",
    ),
    (
        "empty class folder",
        lambda t: _folder(t, {"a": 3, "b": 0}),
        DataFormatError,
        "has no images",
    ),
    ("single-class folder", lambda t: _folder(t, {"a": 3}), DataFormatError, "single class"),
    ("weights not a state dict", lambda t: _weights(t, [1, 2]), WeightsError, "not a state dict"),
    (
        "weights shapes do not fit",
        lambda t: _weights(t, build_model("bccnn", G28, width=8).state_dict()),
        WeightsError,
        "does not fit",
    ),
    ("mask size differs", _seg_mask_size, DataFormatError, "spatial size"),
    ("non-writable output", _not_writable, OutputPathError, "choose a writable folder"),
    (
        "override typo",
        lambda t: precheck_overrides(["model=[resnet50"]),
        ConfigError,
        "cannot parse override",
    ),
    (
        "unknown group option",
        lambda t: precheck_overrides(["data=pneumonia"]),
        UnknownOptionError,
        "valid options:",
    ),
    (
        "unknown augmentation",
        lambda t: MedMNISTDataModule("breastmnist", augment="strong"),
        UnknownOptionError,
        "light",
    ),
]


@pytest.mark.parametrize("name,fn,exc,fix", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_named_one_line_error(tmp_path, name, fn, exc, fix):
    with pytest.raises(exc) as info:
        fn(tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, BenchError)
    assert "\n" not in msg, msg
    assert fix in msg, msg


def test_disk_full_leaves_no_half_written_record(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    atomic_write_text(target, '{"status": "running"}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RecordWriteError, match="free disk space"):
        atomic_write_text(target, '{"status": "done"}' * 1000)
    assert target.read_text() == '{"status": "running"}'
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_cli_prints_one_line_for_config_mistakes(tmp_path):
    proc = run_cli(["bench-train", "model=resnet5O"], tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]
        and "model=resnet5O is not a config in conf/model/" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_a_value_the_trainer_refuses_is_one_line_naming_the_group(tmp_path):
    from conftest import FAST, train_run

    out = train_run(
        tmp_path, ["model=bccnn", "model.width=4", *FAST, "trainer.gradient_clip_val=abc"]
    )
    assert out.status == "failed" and out.exit_code == 2
    assert out.error.startswith(
        "ConfigError: trainer: Trainer refused a value: `gradient_clip_val`"
    )
