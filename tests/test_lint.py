import subprocess

from conftest import BIN, ROOT


def test_ruff_clean():
    proc = subprocess.run(
        [str(BIN / "ruff"), "check", "bench", "tests", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
