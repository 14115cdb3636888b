"""``bench-export``: a finished classifier as ONNX or TorchScript, checked, with a model card."""

from __future__ import annotations

from bench.commands._common import exit_with, new_parser, run_tool


def parser():
    p = new_parser("bench-export", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("run_dir", help="a finished run folder (runs/<run_id>)")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", default=None, help="output folder (default <run_dir>/export)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_tool(parser(), "bench.export", argv)


def cli() -> None:
    exit_with(main)
