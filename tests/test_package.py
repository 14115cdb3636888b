"""The wheel: configs and reference tables ship inside it; an installed bench-train runs from
any folder (no checkout)."""

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT


def checkout_copy(dest: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) copied to ``dest``: the wheel is built
    from what a clone holds, and setuptools' build/ folder lands there, not in the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): build it as it is
        return ROOT
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_from_anywhere(tmp_path):
    dist = tmp_path / "dist"
    source = checkout_copy(tmp_path / "src")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("medbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bench/conf/train.yaml" in names and "bench/conf/model/paper_resnet18.yaml" in names
    assert "bench/reference/medmnist_v2.csv" in names
    assert "hydra_plugins/medbench_launcher/pack_launcher.py" in names
    assert not any(n.startswith("bench/conf/local/") and n.endswith(".yaml") for n in names)

    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # reuse the installed dependencies (not the checkout: .pth files there are not processed)
    (tmp_path / "venv").joinpath(purelib).mkdir(parents=True, exist_ok=True)
    with open(f"{purelib}/medbench_deps.pth", "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    inst = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]

    elsewhere = tmp_path / "somewhere_else"
    elsewhere.mkdir()
    where = subprocess.run(
        [
            str(py),
            "-c",
            "import bench, bench.paths as p; print(bench.__file__);"
            "print(p.conf_dir()); print(p.reference_dir())",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        check=True,
    ).stdout
    assert str(env_dir) in where and str(ROOT / "bench") not in where
    env = {"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [
            str(env_dir / "bin" / "bench-train"),
            "model=bccnn",
            "model.hidden=[16]",
            "logger=none",
            "trainer.max_epochs=1",
            "data.n_train=64",
            "data.n_val=32",
            "data.n_test=32",
            "data.batch_size=16",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((elsewhere / "runs").glob("*/record.json"))
    board = subprocess.run(
        [str(env_dir / "bin" / "bench-leaderboard"), "--reference", "--n-boot", "0"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
    )
    assert board.returncode == 0, board.stderr[-2000:]
