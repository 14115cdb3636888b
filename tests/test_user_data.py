"""A user's own images read right or refused (issue: folders people really have, one reader for
training, checking and predicting, metrics that never score an absent class).

Each test names the numbered case it pins; each failed before the fix."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from bench.metrics import classification_metrics, per_class_table
from bench.records import load_record

from conftest import FAST, train_run
from helpers import write_medmnist_npz


# -- 5. macro metrics never score an absent class --------------------------------------------------
def test_absent_class_is_left_out_of_macro_recall_f1_and_balanced_accuracy():
    y = [0, 0, 1, 1]  # three classes, class 2 absent from the split
    scores = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, scores, "multi-class")
    # per-class recall 0.5 (class 0) and 1.0 (class 1): 0.75, not (0.5 + 1 + 0) / 3 = 0.5
    assert m["balanced_acc"] == pytest.approx(0.75) and m["recall"] == pytest.approx(0.75)
    # F1 2/3 and 0.8 over the two present classes
    assert m["f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    row = per_class_table(y, scores, "multi-class")[2]
    assert row["support"] == 0
    assert math.isnan(row["recall"]) and math.isnan(row["f1"]) and math.isnan(row["precision"])
    # a class predicted but absent keeps its precision 0: those were real false positives
    wrong = np.array([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    assert per_class_table(y, wrong, "multi-class")[2]["precision"] == 0.0


# -- 6. a val or test split without one of three or more classes -----------------------------------
def _retina(tmp_path, **labels):
    counts = {"train": 30, "val": 10, "test": 10}
    root = tmp_path / "mm"
    write_medmnist_npz(root / "retinamnist.npz", (28, 28, 3), 5, counts=counts, **labels)
    return ["data=retinamnist", f"data.root={root}", "model=bccnn", *FAST[:3]]


def test_val_split_without_a_trained_class_is_refused(tmp_path):
    val = (np.arange(10) % 4).reshape(10, 1)  # class 4 missing; train has all five
    out = train_run(tmp_path, _retina(tmp_path, val_labels=val))
    assert out.status == "failed" and out.exit_code == 2
    assert "val split of retinamnist has no samples of class '4'" in out.error.replace('"', "'")


def test_test_split_without_a_class_is_noted_and_left_out(tmp_path, caplog):
    test = (np.arange(10) % 4).reshape(10, 1)
    out = train_run(tmp_path, _retina(tmp_path, test_labels=test))
    rec = load_record(out.record_path)
    assert rec.status == "done"
    assert any("no samples of class" in n and "left out" in n for n in rec.notes), rec.notes
    absent = [r for r in rec.per_class["test"] if r["support"] == 0]
    assert len(absent) == 1 and math.isnan(absent[0]["recall"])
    assert "has no samples of class" in caplog.text


# -- helpers: folders as people have them ----------------------------------------------------------
def _img(path, value=0, size=(16, 16), mode="L", fmt=None, **save):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"{path}|{value}".encode()))
    if mode == "RGB":
        arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    else:
        arr = rng.integers(0, 256, size, dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format=fmt, **save)
    return path


def _classes(root, classes=("normal", "pneumonia"), n=6, suffix=".png"):
    for c in classes:
        for i in range(n):
            _img(root / c / f"{c}_{i}{suffix}", i)
    return root


def _folder_cfg(root, tmp_path, *extra):
    return [
        "data=folder", f"data.root={root}", "data.size=16", f"data.cache_dir={tmp_path / 'cache'}",
        "model=bccnn", "model.width=4", *FAST[:3], "data.batch_size=8", *extra,
    ]  # fmt: skip


# -- 1. split folders at the root ------------------------------------------------------------------
@pytest.mark.parametrize("val_name", [None, "val", "valid", "validation", "dev"])
def test_split_folders_are_splits_not_classes(tmp_path, val_name):
    from bench.data.images import scan_folder
    from bench.datacheck import check_folder

    root = tmp_path / "chest_xray"
    _classes(root / "train", n=8)
    _classes(root / "test", n=3)
    if val_name:
        _classes(root / val_name, n=3)
    scan = scan_folder(root)
    assert scan.classes == ["normal", "pneumonia"]
    assert sorted(scan.splits) == sorted(["train", "test", *(["val"] if val_name else [])])
    assert scan.carved_val == (val_name is None)
    report = check_folder(root)
    assert "train classes" in report.text() or "  train classes" in report.text()
    assert not any("test" in c for c in ("normal", "pneumonia"))
    out = train_run(tmp_path, _folder_cfg(root, tmp_path))
    rec = load_record(out.record_path)
    assert rec.spec["label_names"] == ["normal", "pneumonia"]
    assert rec.split_sizes["test"] == 6  # the test folder, untouched


def test_class_folders_named_like_splits_are_refused(tmp_path):
    from bench.data.images import scan_folder
    from bench.errors import DataFormatError

    root = tmp_path / "nested"
    _classes(root / "train", classes=("train", "test"))
    _classes(root / "test", classes=("train", "test"))
    with pytest.raises(DataFormatError, match="folders named like splits"):
        scan_folder(root)
    mixed = tmp_path / "mixed"
    _classes(mixed, classes=("train", "benign"))
    with pytest.raises(DataFormatError, match="mixes split folders"):
        scan_folder(mixed)


# -- 2. links never count a file twice -------------------------------------------------------------
def test_a_directory_link_to_the_root_is_not_a_class(tmp_path):
    from bench.data.images import scan_folder

    root = _classes(tmp_path / "r", n=15)
    (root / "loop").symlink_to(".")
    (root / "normal" / "again").symlink_to("..")  # a cycle inside a class
    (root / "normal" / "twin.png").symlink_to(root / "pneumonia" / "pneumonia_0.png")
    scan = scan_folder(root)
    assert scan.classes == ["normal", "pneumonia"] and len(scan.files) == 30
    reals = [f.resolve() for f in scan.files]
    assert len(set(reals)) == len(reals)
    assert "linked class folders" in scan.skipped_summary()
    assert "cycle" in scan.skipped_summary()


# -- 3. hidden and system folders are not data -----------------------------------------------------
def test_hidden_and_system_entries_are_skipped_and_said_once(tmp_path, caplog):
    from bench.data.images import scan_folder

    root = _classes(tmp_path / "r", n=4)
    _img(root / ".thumbnails" / "t.png")
    for junk in ("@eaDir", ".ipynb_checkpoints", "__MACOSX"):
        _img(root / "normal" / junk / "x.png")
    (root / "normal" / "._normal_0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    scan = scan_folder(root)
    assert scan.classes == ["normal", "pneumonia"] and len(scan.files) == 8
    assert scan.skipped_summary().count("hidden or system") == 1
    out = train_run(tmp_path, _folder_cfg(root, tmp_path))
    rec = load_record(out.record_path)
    assert rec.status == "done" and any("hidden or system" in n for n in rec.notes)


# -- 4. multi-page TIFFs are refused for 2D data ---------------------------------------------------
def test_a_multi_page_tiff_is_refused_by_training_check_and_predict(tmp_path):
    from PIL import Image

    from bench.datacheck import check_folder

    root = _classes(tmp_path / "r", n=4)
    pages = [Image.fromarray(np.full((16, 16), v, np.uint8)) for v in (0, 80, 160)]
    pages[0].save(root / "normal" / "stack.tif", save_all=True, append_images=pages[1:])
    out = train_run(tmp_path, _folder_cfg(root, tmp_path))
    assert out.status == "failed" and out.exit_code == 2
    assert "stack.tif has 3 pages" in out.error
    assert any("stack.tif has 3 pages" in p for p in check_folder(root).problems)


# -- 7. one class name in two Unicode forms --------------------------------------------------------
def test_nfc_and_nfd_class_names_are_one_class(tmp_path):
    import unicodedata

    from bench.data.images import scan_folder

    root = tmp_path / "r"
    for split, form, n in (("train", "NFC", 6), ("val", "NFD", 3), ("test", "NFD", 3)):
        for c in ("café", "thé"):
            for i in range(n):
                _img(root / split / unicodedata.normalize(form, c) / f"{i}.png", i)
    scan = scan_folder(root)
    assert scan.classes == ["café", "thé"]
    assert all(len(cl) == 2 for cl in scan.splits.values())


# -- 8. duplicates on pixels, and near-duplicates --------------------------------------------------
def test_check_finds_a_reencoded_copy_and_a_resized_one(tmp_path):
    from PIL import Image

    from bench.datacheck import check_folder

    root = tmp_path / "r"
    _classes(root / "train", n=6)
    _classes(root / "val", n=3)
    _classes(root / "test", n=3)
    src = root / "train" / "normal" / "normal_0.png"
    Image.open(src).save(root / "test" / "normal" / "copy.bmp")  # same pixels, other bytes
    big = Image.open(root / "train" / "pneumonia" / "pneumonia_1.png").resize((64, 64))
    big.save(root / "val" / "pneumonia" / "bigger.png")
    report = check_folder(root)
    assert any("appear in test and train" in p for p in report.problems), report.text()
    assert any("near-duplicate" in w and "distance" in w for w in report.warnings), report.text()


# -- 9. the check refuses what training refuses ----------------------------------------------------
def test_check_of_an_npz_with_string_labels_agrees_with_training(tmp_path):
    from bench.datacheck import check_npz

    path = write_medmnist_npz(
        tmp_path / "x.npz", (28, 28), 2, train_labels=np.array([["a"], ["b"]] * 20)
    )
    report = check_npz(path)
    assert any("text labels" in p for p in report.problems), report.text()
    floats = write_medmnist_npz(
        tmp_path / "f.npz", (28, 28), 2, val_labels=np.array([[0.0]] * 6 + [[0.5]] * 6)
    )
    problem = next(p for p in check_npz(floats).problems if "non-integral" in p)
    assert "e.g. 0.5" in problem  # the bad label is quoted, not a good one


# -- 11. content replaced at the same size and mtime -----------------------------------------------
def test_a_file_replaced_at_the_same_size_and_mtime_is_seen(tmp_path):
    import os

    from bench.data.fingerprint import files_fingerprint

    root = _classes(tmp_path / "r", n=2)
    f = root / "normal" / "normal_0.png"
    before = files_fingerprint(root, [f], tmp_path / "digests")
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    replacement = f.with_name("tmp.png")
    replacement.write_bytes(bytes(data))
    os.replace(replacement, f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert files_fingerprint(root, [f], tmp_path / "digests") != before
    assert not list(root.rglob(".*sha256"))  # no digest beside the user's data


# -- 12. every format Pillow opens -----------------------------------------------------------------
def test_webp_and_gif_are_read_and_unknown_files_listed(tmp_path):
    from bench.data.images import scan_folder

    root = tmp_path / "r"
    for i in range(4):
        _img(root / "a" / f"{i}.webp", i, fmt="WEBP", lossless=True)
        _img(root / "b" / f"{i}.gif", i, fmt="GIF")
    (root / "a" / "notes.txt").write_text("not an image")
    scan = scan_folder(root)
    assert [len(fs) for fs in scan.splits["all"].values()] == [4, 4]
    assert "format Pillow does not open (e.g. a/notes.txt)" in scan.skipped_summary()


# -- 13. colour is kept when the images have it ----------------------------------------------------
def test_colour_is_the_default_when_images_have_it(tmp_path):
    from PIL import Image

    root = tmp_path / "r"
    for c, hue in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        for i in range(8):
            arr = np.clip(np.array(hue) + np.random.default_rng(i).integers(-20, 20, 3), 0, 255)
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.tile(arr.astype(np.uint8), (16, 16, 1))).save(root / c / f"{i}.png")
    out = train_run(tmp_path, _folder_cfg(root, tmp_path))
    rec = load_record(out.record_path)
    assert rec.spec["in_channels"] == 3
    assert any("data.color=auto read the images as rgb" in n for n in rec.notes)
    gray = _classes(tmp_path / "g", n=6)
    rec = load_record(train_run(tmp_path, _folder_cfg(gray, tmp_path)).record_path)
    assert rec.spec["in_channels"] == 1


# -- also: endless epochs, EXIF orientation, image modes, 48-bit TIFF ------------------------------
def test_endless_epochs_need_a_limit(tmp_path):
    out = train_run(tmp_path, ["model=bccnn", *FAST, "trainer.max_epochs=-1"])
    assert out.status == "failed" and "trainer.max_time" in out.error


def test_exif_orientation_is_applied_everywhere(tmp_path):
    from PIL import Image

    from bench.data.images import decode

    arr = np.zeros((10, 20), np.uint8)
    arr[:, :5] = 255
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    d = decode(tmp_path / "r.jpg")
    assert d.pixels.shape == (20, 10) and "EXIF orientation applied" in d.notes


@pytest.mark.parametrize(
    "mode, note", [("LA", "LA->gray"), ("P", "palette->"), ("1", "1-bit->gray"), ("CMYK", "CMYK")]
)
def test_modes_are_named_as_they_are(tmp_path, mode, note):
    from bench.data.images import decode

    path = _img(tmp_path / f"x_{mode}.{'jpg' if mode == 'CMYK' else 'png'}", mode=mode)
    d = decode(path)
    assert any(n.startswith(note) for n in d.notes), d.notes
    assert "rgb->gray" not in d.notes


def test_a_48_bit_tiff_is_scaled_by_the_intensity_setting(tmp_path):
    import tifffile

    from bench.data.images import decode

    deep = np.zeros((8, 8, 3), np.uint16)
    deep[..., 0] = np.linspace(0, 4095, 64).reshape(8, 8).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", deep, photometric="rgb")
    d = decode(tmp_path / "deep.tif", "minmax")
    assert d.pixels[..., 0].max() == 255 and "48-bit RGB scaled" in d.notes[-1]
    assert decode(tmp_path / "deep.tif", "dtype").pixels[..., 0].max() == round(4095 / 65535 * 255)


# -- noisy inputs: one line, the right exit code ---------------------------------------------------
def test_empty_files_and_bombs_are_one_line_errors(tmp_path):
    from PIL import Image

    from bench.data.images import decode
    from bench.errors import BenchError

    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(BenchError, match="zero.png is empty"):
        decode(tmp_path / "zero.png")
    _img(tmp_path / "big.png", size=(64, 64))
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100
    try:
        with pytest.raises(BenchError, match="decompression-bomb limit.*data.max_pixels"):
            decode(tmp_path / "big.png")
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_object_labels_say_objects_not_corruption(tmp_path):
    from bench.data.npz import open_npz, read_array
    from bench.errors import DataFormatError

    path = tmp_path / "o.npz"
    np.savez(path, train_labels=np.array([["a"], [1]], dtype=object))
    with pytest.raises(DataFormatError, match="holds Python objects"):
        read_array(open_npz(path), "train_labels", path)


def test_ctrl_c_in_a_tool_is_one_line_and_130(capsys):
    from bench.toolkit import exit_code_of

    def interrupted():
        raise KeyboardInterrupt

    assert exit_code_of(interrupted) == 130
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err


# -- the one reader: random folder trees -----------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

CLASS_NAMES = ["benign", "malignant", "café", "Ωmega", "normal"]
FORMATS = [("png", "PNG", "L"), ("bmp", "BMP", "RGB"), ("gif", "GIF", "P"),
           ("webp", "WEBP", "RGB"), ("tif", "TIFF", "LA")]  # fmt: skip


@st.composite
def folder_trees(draw):
    """A layout, its classes and images, and the junk people's folders hold."""
    classes = draw(st.lists(st.sampled_from(CLASS_NAMES), min_size=2, max_size=3, unique=True))
    split = draw(st.booleans())
    val = draw(st.sampled_from([None, "val", "valid", "validation", "dev"])) if split else None
    splits = (["train", "test"] + ([val] if val else [])) if split else [None]
    images = {
        (s, c): draw(st.lists(st.sampled_from(FORMATS), min_size=2, max_size=4))
        for s in splits
        for c in classes
    }
    junk = draw(st.sets(st.sampled_from(["hidden", "eadir", "appledouble", "txt", "loop",
                                         "twin", "nfd"])))  # fmt: skip
    return classes, images, junk


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(tree=folder_trees())
def test_random_folder_trees_are_read_as_laid_out(tree, tmp_path_factory):
    """Each image counted once, the classes exactly the intended folders, the splits as laid
    out, and the check counts what training reads -- or a one-line refusal."""
    import unicodedata

    from bench.data.folder import ImageFolderDataModule
    from bench.data.images import scan_folder
    from bench.datacheck import check_folder
    from bench.errors import BenchError

    classes, images, junk = tree
    root = tmp_path_factory.mktemp("tree")
    made = []
    for (split, c), files in images.items():
        name = unicodedata.normalize("NFD", c) if "nfd" in junk and split == "test" else c
        folder = root / split / name if split else root / name
        for i, (ext, fmt, mode) in enumerate(files):
            made.append(_img(folder / f"{i}.{ext}", i, mode=mode, fmt=fmt))
    first = made[0].parent
    if "hidden" in junk:
        _img(root / ".thumbnails" / "t.png")
    if "eadir" in junk:
        _img(first / "@eaDir" / "x.png")
    if "appledouble" in junk:
        (first / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    if "txt" in junk:
        (first / "readme.txt").write_text("notes")
    if "loop" in junk:
        (first / "loop").symlink_to("..")
    if "twin" in junk:
        (first / "twin.png").symlink_to(made[-1])
    try:
        scan = scan_folder(root)
    except BenchError as e:  # a refusal is one line
        assert "\n" not in str(e)
        return
    assert scan.classes == sorted(unicodedata.normalize("NFC", c) for c in classes)
    reals = [f.resolve() for f in scan.files]
    assert len(reals) == len(set(reals)) == len(made)
    assert set(reals) == {m.resolve() for m in made}
    laid_out = {s for s, _ in images}
    want = {"all"} if laid_out == {None} else {SPLIT_ROLE[s] for s in laid_out}
    assert set(scan.splits) == want
    try:
        module = ImageFolderDataModule(str(root), size=8, cache_dir=f"{root}_cache")
        splits = module.load_splits()
    except BenchError as e:
        assert "\n" not in str(e)
        return
    report = check_folder(root)
    for s, (_, y) in splits.items():
        counted = dict(zip(*np.unique(np.asarray(y), return_counts=True), strict=True))
        trained = {scan.classes[int(k)]: int(v) for k, v in counted.items()}
        assert report.counts[s] == trained, (s, report.counts, trained)


SPLIT_ROLE = {"train": "train", "test": "test", "val": "val", "valid": "val",
              "validation": "val", "dev": "val"}  # fmt: skip


def test_check_of_a_folder_with_an_empty_file_is_one_problem_line(tmp_path):
    from bench.datacheck import check_folder

    root = _classes(tmp_path / "r", n=4)
    (root / "normal" / "broken.png").write_bytes(b"")
    (root / "normal" / "._normal_1.png").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble: skipped
    report = check_folder(root)
    assert [p for p in report.problems if "broken.png is empty" in p]
    assert "hidden or system entries" in " ".join(report.warnings)


def test_predict_of_a_2d_run_on_volumes_is_one_line(bccnn_run, tmp_path):
    from bench.errors import DataFormatError
    from bench.predict import predict_table

    np.savez(tmp_path / "vol.npz", images=np.zeros((2, 28, 28, 28), np.uint8))
    with pytest.raises(DataFormatError, match="this run takes 2D images"):
        predict_table(bccnn_run.dir, [str(tmp_path / "vol.npz")])


def test_a_reused_sweep_dir_counts_only_this_sweep(tmp_path):
    from conftest import run_cli

    args = ["bench-train", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "model=bccnn",
            "model.width=4", *FAST, "seed=0,1"]  # fmt: skip
    run_cli(args, tmp_path, check=True)
    again = run_cli([*args[:-1], "seed=2,3"], tmp_path, check=True)
    text = again.stdout + again.stderr
    assert "job 1 of 2: done" in text and "(1 done, 0 failed, 0 skipped" in text, text[-2000:]
