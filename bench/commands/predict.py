"""``bench-predict``: a finished run (or its ONNX export) applied to new images, a row each."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool
from bench.toolkit import add_device_option

EXAMPLES = """examples:
  bench-predict runs/<run_id> scans/ --out predictions.csv
  bench-predict runs/<run_id> a.png b.tif --coverage 0.9 --out predictions.csv
  bench-predict runs/<run_id>/export scans/ --out predictions.csv    # through onnxruntime
  bench-predict runs/<segmentation run> slices/ --out masks.csv --masks-dir masks/  # PNG masks"""


def parser():
    p = new_parser("bench-predict", __doc__.splitlines()[0].split(": ", 1)[1], EXAMPLES)
    p.add_argument("run_dir", help="a finished run folder, or its ONNX export folder")
    p.add_argument("inputs", nargs="+", help="image files, folders of them, or npz files")
    p.add_argument("--out", default="predictions.csv", help="CSV to write")
    p.add_argument(
        "--coverage",
        type=float,
        default=None,
        help="add an abstain column: keep this fraction of cases by the run's validation "
        "risk-coverage threshold (e.g. 0.9)",
    )
    p.add_argument(
        "--intensity",
        default="minmax",
        choices=["minmax", "dtype"],
        help="16-bit/float images: each image's range or the container's range -> 0-255",
    )
    p.add_argument(
        "--masks-dir",
        default=None,
        help="segmentation runs: folder for the predicted masks, one PNG of class indices per "
        "image (default: <out without .csv>_masks)",
    )
    add_device_option(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.predict", argv)


def cli() -> None:
    exit_with(main)
