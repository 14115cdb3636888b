import numpy as np
import pytest
import torch
from medmnist import INFO

from bench.data.augment import augment_batch, get_preset
from bench.data.base import stratified_subset
from bench.data.batching import BatchIndexSampler
from bench.data.folder import ImageFolderDataModule
from bench.data.medmnist import MedMNISTDataModule
from bench.data.segmentation import SyntheticSegDataModule
from bench.data.synthetic import SyntheticDataModule

from conftest import CONF, PNEUMONIA, needs_pneumonia
from helpers import COUNTS, write_medmnist_npz


@pytest.mark.parametrize(
    "flag,shape,multi",
    [
        ("breastmnist", (28, 28), False),  # 2D gray, binary
        ("dermamnist", (28, 28, 3), False),  # 2D RGB, multi-class
        ("chestmnist", (28, 28), True),  # multi-label (14)
        ("retinamnist", (28, 28, 3), False),  # ordinal regression
        ("nodulemnist3d", (28, 28, 28), False),  # 3D
    ],
)
def test_medmnist_loader_on_generated_files(tmp_path, flag, shape, multi):
    info = INFO[flag]
    write_medmnist_npz(tmp_path / f"{flag}.npz", shape, len(info["label"]), multi)
    dm = MedMNISTDataModule(flag, root=str(tmp_path), download=False, batch_size=8)
    dm.setup()
    spec = dm.spec
    assert spec.in_channels == info["n_channels"]
    assert spec.num_classes == len(info["label"])
    assert spec.spatial_dims == (3 if flag.endswith("3d") else 2)
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, spec.in_channels, *spec.input_size)
    assert y.shape == ((8, 14) if multi else (8,))
    xf, yf = dm.preprocess(x, y)
    assert xf.dtype == torch.float32 and -1.0 <= float(xf.min()) and float(xf.max()) <= 1.0
    assert len(dm.splits["val"]) == COUNTS["val"]


def test_flat_and_column_labels_load_alike(tmp_path):
    write_medmnist_npz(tmp_path / "a" / "breastmnist.npz", (28, 28), 2)
    flat = {f"{s}_labels": np.arange(n) % 2 for s, n in COUNTS.items()}
    write_medmnist_npz(tmp_path / "b" / "breastmnist.npz", (28, 28), 2, **flat)
    ys = []
    for sub in "ab":
        dm = MedMNISTDataModule("breastmnist", root=str(tmp_path / sub), download=False)
        dm.setup()
        ys.append(dm.splits["train"].targets)
    assert torch.equal(ys[0], ys[1]) and ys[0].ndim == 1


def test_as_rgb_and_resize_on_the_batch(tmp_path):
    write_medmnist_npz(tmp_path / "breastmnist.npz", (28, 28), 2)
    dm = MedMNISTDataModule(
        "breastmnist", root=str(tmp_path), download=False, as_rgb=True, resize=64, batch_size=4
    )
    dm.setup()
    assert dm.spec.in_channels == 3 and dm.spec.input_size == (64, 64)
    x, y, _ = next(iter(dm.val_dataloader()))
    xf, _ = dm.preprocess(x, y)
    assert xf.shape == (4, 3, 64, 64)
    # nearest upsampling keeps the original pixel values
    assert torch.allclose(xf[0, 0, 0, 0], (x[0, 0, 0, 0].float() / 255 - 0.5) / 0.5)


def test_md5_mismatch_warns_but_loads(tmp_path, caplog):
    write_medmnist_npz(tmp_path / "breastmnist.npz", (28, 28), 2)
    dm = MedMNISTDataModule("breastmnist", root=str(tmp_path), download=False)
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "differs from medmnist" in caplog.text
    assert len(dm.splits["train"]) == COUNTS["train"]


def test_mmap_mode_reads_batches_from_disk(tmp_path):
    write_medmnist_npz(tmp_path / "breastmnist_128.npz", (128, 128), 2)
    dm = MedMNISTDataModule(
        "breastmnist", size=128, root=str(tmp_path), download=False, batch_size=4
    )
    dm.setup()
    assert dm.mmap and isinstance(dm.splits["train"].images, np.memmap)
    x, _, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 128, 128) and x.dtype == torch.uint8


def test_every_flag_yaml_matches_medmnist_info():
    import yaml

    for flag, info in INFO.items():
        cfg = yaml.safe_load((CONF / "data" / f"{flag}.yaml").read_text())
        assert cfg["flag"] == flag
        dm = MedMNISTDataModule(flag, download=False)
        spec = dm.base_spec()
        assert spec.in_channels == info["n_channels"]
        assert spec.num_classes == len(info["label"])
        task = info["task"]
        assert spec.task == ("multi-label" if task.startswith("multi-label") else task)
        sizes = (28, 64) if flag.endswith("3d") else (28, 64, 128, 224)
        for size in sizes:
            suffix = "" if size == 28 else f"_{size}"
            assert info[f"url{suffix}"] and info[f"MD5{suffix}"]


@needs_pneumonia()
def test_real_pneumoniamnist_loads_with_official_counts():
    dm = MedMNISTDataModule("pneumoniamnist", root=str(PNEUMONIA.parent), download=False)
    dm.setup()
    n = {k: len(v) for k, v in dm.splits.items()}
    assert n == INFO["pneumoniamnist"]["n_samples"]
    assert dm.spec.task == "binary-class" and dm.spec.in_channels == 1


def test_stratified_subset_keeps_proportions():
    labels = np.array([0] * 900 + [1] * 100)
    idx = stratified_subset(labels, 100, seed=3)
    assert len(idx) == 100 and len(set(idx)) == 100
    assert (labels[idx] == 1).sum() == 10
    assert np.array_equal(idx, stratified_subset(labels, 100, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 100, seed=4))


def test_fraction_and_limit_subset_train_only(tmp_path):
    write_medmnist_npz(tmp_path / "breastmnist.npz", (28, 28), 2)
    dm = MedMNISTDataModule(
        "breastmnist", root=str(tmp_path), download=False, fraction=0.5, limit=15
    )
    dm.setup()
    assert len(dm.splits["train"]) == 15 and len(dm.splits["val"]) == COUNTS["val"]


def test_sampler_is_seeded_per_epoch_and_keeps_the_last_batch():
    # RetinaMNIST at batch 128: 1080 = 8 x 128 + 56; every image is trained on each epoch
    s = BatchIndexSampler(1080, 128, shuffle=True, seed=1)
    s.set_epoch(0)
    a = [b.tolist() for b in s]
    s.set_epoch(1)
    b = [b.tolist() for b in s]
    s.set_epoch(0)
    assert a == [b.tolist() for b in s] and a != b
    assert len(a) == len(s) == 9 and [len(x) for x in a[-2:]] == [128, 56]
    assert sorted(i for batch in a for i in batch) == list(range(1080))
    # only a lone last sample (which BatchNorm cannot normalise) is left out
    lone = BatchIndexSampler(33, 8, shuffle=True, seed=1)
    assert len(lone) == 4 and [len(x) for x in lone] == [8, 8, 8, 8]
    ev = BatchIndexSampler(33, 8, shuffle=False)
    assert sum(len(x) for x in ev) == 33 and len(ev) == 5


def test_the_datamodule_trains_on_every_image_each_epoch(tmp_path):
    write_medmnist_npz(
        tmp_path / "retinamnist.npz", (28, 28, 3), 5, counts={"train": 1080, "val": 12, "test": 12}
    )
    dm = MedMNISTDataModule("retinamnist", root=str(tmp_path), download=False, batch_size=128)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 9 and sum(len(b[2]) for b in batches) == 1080


def test_balanced_sampler_draws_classes_evenly():
    weights = torch.tensor([1 / 90] * 90 + [1 / 10] * 10, dtype=torch.double)
    s = BatchIndexSampler(100, 50, shuffle=True, seed=0, weights=weights)
    drawn = torch.cat([torch.cat(list(s)) for _ in range(20) if not s.set_epoch(_)])
    minority = (drawn >= 90).float().mean()
    assert 0.45 < float(minority) < 0.55  # 10% of the data, half of the draws


def test_sampler_puts_indices_on_the_datas_device_once_per_epoch():
    # "meta" stands in for a GPU: the same permutation, moved as one tensor before it is split
    cpu = BatchIndexSampler(33, 8, shuffle=True, seed=1)
    dev = BatchIndexSampler(33, 8, shuffle=True, seed=1, device=torch.device("meta"))
    batches = list(dev)
    assert all(b.device.type == "meta" for b in batches)
    assert [b.shape for b in batches] == [b.shape for b in cpu]
    assert all(b.device.type == "cpu" for b in cpu)


@pytest.mark.parametrize("preset", ["light", "heavy"])
def test_augment_batch_2d_3d_and_masks(preset):
    torch.manual_seed(0)
    x2 = torch.randn(6, 1, 32, 32)
    m2 = torch.randint(0, 3, (6, 32, 32))
    y2, mm = augment_batch(x2, get_preset(preset), m2)
    assert y2.shape == x2.shape and mm.shape == m2.shape and mm.dtype == torch.long
    assert set(mm.unique().tolist()) <= {0, 1, 2}
    assert not torch.equal(y2, x2)
    x3 = torch.randn(2, 1, 16, 16, 16)
    y3, _ = augment_batch(x3, get_preset(preset))
    assert y3.shape == x3.shape


def test_synthetic_sets_are_deterministic_and_cached(tmp_path):
    kw = dict(n_train=30, n_val=10, n_test=10, cache_dir=str(tmp_path))
    a, b = SyntheticDataModule(**kw), SyntheticDataModule(**kw, seed=5)
    a.setup(), b.setup()
    assert torch.equal(a.splits["train"].images, b.splits["train"].images)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    v = SyntheticDataModule(spatial_dims=3, size=16, **kw)
    v.setup()
    assert v.spec.spatial_dims == 3 and v.splits["train"].images.shape[1:] == (1, 16, 16, 16)
    seg = SyntheticSegDataModule(size=32, n_train=6, n_val=2, n_test=2, cache_dir=str(tmp_path))
    seg.setup()
    masks = seg.splits["train"].targets
    assert masks.shape == (6, 32, 32) and set(masks.unique().tolist()) == {0, 1, 2}


def test_synthetic_segmentation_volumes(tmp_path):
    from bench.errors import ConfigError

    kw = {"size": 16, "n_train": 4, "n_val": 2, "n_test": 2, "cache_dir": str(tmp_path)}
    vol = SyntheticSegDataModule(spatial_dims=3, **kw)
    vol.setup()
    images, masks = vol.splits["train"].images, vol.splits["train"].targets
    assert vol.spec.spatial_dims == 3 and vol.spec.input_size == (16, 16, 16)
    assert images.shape == (4, 1, 16, 16, 16) and masks.shape == (4, 16, 16, 16)
    assert set(masks.unique().tolist()) == {0, 1, 2}
    # lesions are brighter (class 1) or darker (class 2) than the background around them
    x = images.float()[:, 0]
    assert x[masks == 1].mean() > x[masks == 0].mean() > x[masks == 2].mean()
    flat = SyntheticSegDataModule(**kw)  # 2D and 3D caches are separate files
    flat.setup()
    assert flat.splits["train"].targets.shape == (4, 16, 16)
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    with pytest.raises(ConfigError, match="data.spatial_dims must be 2"):
        SyntheticSegDataModule(spatial_dims=4, **kw)


def _write_folder(root, patients=6, per_patient=3, classes=("benign", "malignant")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for p in range(patients):
            for k in range(per_patient):
                img = Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8))
                img.save(root / c / f"SOB_{c[0]}_{c}-{p:03d}-{k}.png")


def test_folder_loader_never_leaks_a_patient(tmp_path):
    _write_folder(tmp_path / "imgs", patients=10)
    dm = ImageFolderDataModule(
        str(tmp_path / "imgs"),
        size=16,
        group_regex=r"-(\d+)-\d+\.png$",
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.2,
        test_fraction=0.2,
        batch_size=4,
    )
    dm.setup()
    assert dm.spec.num_classes == 2 and dm.spec.label_names == ("benign", "malignant")
    assert dm.splits["train"].images.shape[1:] == (1, 16, 16)
    npz = np.load(dm._cache)
    groups = {s: {f"{g}" for g in npz[f"{s}_groups"]} for s in ("train", "val", "test")}
    # group key = class-agnostic patient number, but regex output includes it; check disjointness
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(npz[f"{s}_labels"]) for s in ("train", "val", "test")) == 2 * 10 * 3
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_folder_with_split_subfolders(tmp_path):
    for s in ("train", "val", "test"):
        _write_folder(tmp_path / "imgs" / s, patients=1, per_patient=2)
    dm = ImageFolderDataModule(
        str(tmp_path / "imgs"), size=8, color="rgb", cache_dir=str(tmp_path / "cache")
    )
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 4, "val": 4, "test": 4}
    assert dm.spec.in_channels == 3
