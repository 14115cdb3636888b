"""``bench-export``: the best checkpoint of a finished run as a deployable model and its card.

    bench-export runs/<run_id> --format onnx          # or torchscript
    bench-export runs/<run_id> --format onnx --out exported/pneumonia-bccnn

Writes ``model.onnx`` (or ``model.pt``) that takes raw pixel values (0-255, float, N x C x H x W
or N x C x D x H x W) and returns probabilities: the run's normalisation, resizing and softmax
(sigmoid for multi-label) are inside. ``model.json`` states the input spec, normalisation and
label names; ``MODEL_CARD.md`` the data, protocol, metrics with CIs, calibration and
robustness. The export is checked on the whole test split: ONNX Runtime's (TorchScript's)
outputs must equal PyTorch's within 1e-4, or the command fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.board import board_from_records
from bench.board.reference import run_protocol
from bench.console import install_noise_filters
from bench.errors import ConfigError
from bench.finished import Run, load_run
from bench.toolkit import BOOTSTRAP_RESAMPLES

TOLERANCE = 1e-4


class Deployable(nn.Module):
    """Raw pixels in, probabilities out: the run's preprocessing and output activation."""

    def __init__(
        self,
        model: nn.Module,
        mean: float,
        std: float,
        size: tuple[int, ...] | None,
        channels: int,
        task: str,
        resize_mode: str = "nearest",
    ) -> None:
        super().__init__()
        self.model, self.mean, self.std = model, float(mean), float(std)
        self.size, self.channels, self.task, self.resize_mode = size, channels, task, resize_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x / 255.0 - self.mean) / self.std
        if self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        if self.size is not None:
            x = nn.functional.interpolate(x, size=self.size, mode=self.resize_mode)
        logits = self.model(x)
        return torch.sigmoid(logits) if self.task == "multi-label" else torch.softmax(logits, 1)


def build_deployable(record, device: str = "cpu") -> tuple[Deployable, object]:

    run = Run(record, device)
    dm, model = run.datamodule, run.model
    base = dm.base_spec()
    size = tuple(dm.spec.input_size) if dm.resize else None
    mode = (
        dm.resize_mode
        if dm.resize_mode not in ("bilinear", "trilinear")
        else ("trilinear" if base.spatial_dims == 3 else "bilinear")
    )
    wrapped = Deployable(model, dm.mean, dm.std, size, dm.spec.in_channels, dm.spec.task, mode)
    return wrapped.eval(), dm


def _export_onnx(model, example: torch.Tensor, out: Path, x_all: np.ndarray):
    """``model.onnx`` (any batch size) and its outputs on ``x_all`` through onnxruntime."""
    import onnxruntime as ort

    path = out / "model.onnx"
    # torch.export-based exporter (the TorchScript one is deprecated); any batch size
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["probabilities"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
    except ImportError as e:
        raise ConfigError(
            f"ONNX export needs onnx and onnxscript ({e}); pip install 'medbench[export]'"
        ) from e
    except Exception as e:  # torch.export's errors are pages long: say it in one line
        raise ConfigError(
            f"ONNX export of this model failed: {type(e).__name__}: {str(e).splitlines()[0]}; "
            "--format torchscript may still work"
        ) from e
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate(
        [session.run(None, {"pixels": x_all[i : i + 256]})[0] for i in range(0, len(x_all), 256)]
    )
    return path, got


def _export_torchscript(model, example: torch.Tensor, out: Path, x_all: np.ndarray):
    """``model.pt`` (traced) and its outputs on ``x_all`` after loading it back."""
    path = out / "model.pt"
    traced = torch.jit.trace(model, example)
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        got = torch.cat(
            [loaded(torch.as_tensor(x_all[i : i + 256])) for i in range(0, len(x_all), 256)]
        ).numpy()
    return path, got


EXPORTERS = {"onnx": _export_onnx, "torchscript": _export_torchscript}


def _metadata(record, dm, fmt: str, path: Path, n: int, max_diff: float) -> dict:
    spec = dm.spec
    return {
        "run_id": record.run_id,
        "format": fmt,
        "file": path.name,
        "input": {
            "name": "pixels",
            "shape": ["batch", dm.base_spec().in_channels, *dm.base_spec().input_size],
            "dtype": "float32",
            "value_range": [0, 255],
            "layout": "NCHW" if spec.spatial_dims == 2 else "NCDHW",
        },
        "preprocessing_inside": {
            "normalise": {"mean": dm.mean, "std": dm.std},
            "resize": dm.resize,
            "as_rgb": dm.as_rgb,
        },
        "output": {"name": "probabilities", "task": spec.task, "labels": list(spec.label_names)},
        "check": {
            "split": "test",
            "samples": n,
            "max_abs_diff_vs_pytorch": max_diff,
            "tolerance": TOLERANCE,
        },
    }


def export(run_dir: Path, fmt: str, out: Path | None = None) -> dict:
    """Export a finished classifier (raw 0-255 pixels in, probabilities out), check it against
    PyTorch on the whole test split and write ``model.json`` and ``MODEL_CARD.md``."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"--format {fmt!r}: choose onnx or torchscript")
    run = load_run(Path(run_dir))
    record = run.record
    if record.kind != "classification":
        raise ConfigError("bench-export exports classifiers; this run is segmentation")
    model, dm = build_deployable(record)
    out = Path(out or Path(run_dir) / "export")
    out.mkdir(parents=True, exist_ok=True)
    x_all = run.test_arrays()[0].astype(np.float32)
    example = torch.as_tensor(x_all[:2])
    # the reference is the run's own evaluation path (the datamodule's preprocessing), so the
    # check also covers the preprocessing that Deployable carries into the exported model
    reference = run.predict(x_all, batch=256, model=model.model)
    path, got = EXPORTERS[fmt](model, example, out, x_all)
    max_diff = float(np.abs(got - reference).max())
    if not max_diff <= TOLERANCE:
        raise ConfigError(
            f"the exported {fmt} model differs from PyTorch by {max_diff:.2e} "
            f"(> {TOLERANCE}) on the test split; not exported"
        )
    meta = _metadata(record, dm, fmt, path, int(len(x_all)), max_diff)
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    (out / "MODEL_CARD.md").write_text(model_card(record, meta))
    return meta


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(record, meta: dict) -> str:
    """Data, protocol, metrics with CIs, calibration and robustness of the exported run."""

    board = board_from_records([record], n_boot=BOOTSTRAP_RESAMPLES).table
    row = board.iloc[0] if len(board) else {}
    proto = run_protocol(record)
    cal = record.evaluations.get("calibration") or {}
    norm = meta["preprocessing_inside"]["normalise"]
    t = record.test
    rob = record.evaluations.get("robustness") or {}
    lines = [
        f"# Model card: {record.model} on {record.dataset}",
        "",
        f"Exported from run `{record.run_id}` (commit {record.env.git_sha or 'unknown'}, "
        f"trained on {record.env.device}) as `{meta['file']}` ({meta['format']}). "
        "Not for clinical use: a benchmark model.",
        "",
        "## Input and output",
        f"- input `pixels`: {meta['input']['shape']} float32 raw values 0-255 "
        f"({meta['input']['layout']}); normalisation (mean {norm['mean']}, std {norm['std']}) "
        "is inside the model",
        f"- output `probabilities`: {meta['output']['task']} over {meta['output']['labels']}",
        f"- checked on {meta['check']['samples']} test images: max |exported - PyTorch| = "
        f"{meta['check']['max_abs_diff_vs_pytorch']:.2e}",
        "",
        "## Data and protocol",
        f"- dataset: {record.dataset} (train/val/test {record.split_sizes or 'see record'})",
        *[f"- {k}: {v}" for k, v in proto.items()],
        f"- best validation epoch: {record.best_epoch}; scheme: {record.scheme}",
        "",
        "## Test metrics (best-validation weights)",
    ]
    for m, v in record.test.items():
        lo, hi = (
            row.get(f"test_{m}_ci95_lo") if len(board) else None,
            row.get(f"test_{m}_ci95_hi") if len(board) else None,
        )
        ci = f" (95% CI [{lo:.3f}, {hi:.3f}])" if lo is not None and lo == lo else ""
        lines.append(f"- {m}: {_fmt(v)}{ci}")
    lines += ["", "## Calibration"]
    if cal:
        lines.append(
            f"- temperature scaling fitted on val: T = {cal['temperature']:.3f}; test ECE "
            f"{t.get('ece', float('nan')):.4f} -> {t.get('ece_ts', float('nan')):.4f}, "
            f"Brier {t.get('brier', float('nan')):.4f} -> {t.get('brier_ts', float('nan')):.4f}"
        )
    else:
        lines.append("- not evaluated")
    lines += ["", "## Robustness (MedMNIST-C corruptions)"]
    if rob:
        lines.append(
            f"- clean balanced error {rob['clean']['balanced_error']:.4f}; mean corrupted "
            f"balanced error (BE) {rob['mean_be']:.4f}; mean RBE {rob['mean_rbe']:+.4f}"
        )
        worst = sorted(rob["be"].items(), key=lambda kv: -kv[1])[:3]
        lines.append("- worst corruptions: " + ", ".join(f"{k} {v:.3f}" for k, v in worst))
    else:
        lines.append("- not evaluated (bench-robust --run-dir ...)")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    """The body of ``bench-export`` (its options: :mod:`bench.commands.export`)."""
    install_noise_filters()
    meta = export(Path(args.run_dir), args.format, Path(args.out) if args.out else None)
    print(
        f"exported {meta['format']} model: max |exported - PyTorch| = "
        f"{meta['check']['max_abs_diff_vs_pytorch']:.2e} over {meta['check']['samples']} "
        f"test images; wrote {meta['file']}, model.json, MODEL_CARD.md"
    )
    return 0
