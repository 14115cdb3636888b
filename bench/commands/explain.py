"""``bench-explain``: Grad-CAM maps of a trained 2D classifier, as a PNG grid."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool


def parser():
    p = new_parser("bench-explain", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--run-dir", required=True, help="runs/<run_id> of a finished 2D classifier")
    p.add_argument("--n", type=int, default=16, help="test images to explain")
    p.add_argument("--out", default=None, help="PNG path (default <run-dir>/explain/gradcam.png)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.explain", argv)


def cli() -> None:
    exit_with(main)
