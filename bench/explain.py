"""Grad-CAM maps for a trained 2D classifier (pytorch-grad-cam), rendered into a PNG grid.

    bench-explain --run-dir runs/<run_id> --n 16
writes ``runs/<run_id>/explain/gradcam.png``; ``bench-report`` embeds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.errors import ConfigError
from bench.finished import load_run
from bench.io import atomic_save


def last_conv(model: nn.Module) -> nn.Module:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("Grad-CAM needs a 2D CNN with Conv2d layers")
    return convs[-1]


def gradcam_maps(
    model: nn.Module,
    x: torch.Tensor,
    target_layer: nn.Module | None = None,
    targets: list[int] | None = None,
) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] at the input's spatial size."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    layer = target_layer or last_conv(model)
    with GradCAM(model=model, target_layers=[layer]) as cam:
        t = [ClassifierOutputTarget(int(c)) for c in targets] if targets is not None else None
        return cam(input_tensor=x, targets=t)


def explain_run(run_dir: str | Path, n: int = 16, out: str | Path | None = None) -> Path:
    """Rebuild the run's data and model, load its best checkpoint, render Grad-CAM for ``n`` test
    images as a PNG grid (input, overlay; true/predicted label in the title)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    spec = run.spec
    if spec.kind != "classification" or spec.spatial_dims != 2:
        raise ConfigError(
            f"bench-explain handles 2D classifiers; this run is {spec.spatial_dims}D {spec.kind}"
        )
    model, dm = run.model, run.datamodule
    ds = dm.splits["test"]
    idx = torch.arange(min(n, len(ds)))
    raw, y, _ = ds[idx]
    x, y = dm.preprocess(raw, y, training=False)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    maps = gradcam_maps(model, x, targets=pred.tolist())
    cols = min(8, len(idx))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows * 2, cols, figsize=(1.6 * cols, 3.3 * rows), squeeze=False)
    names = spec.label_names
    for i in range(len(idx)):
        r, c = divmod(i, cols)
        img = raw[i].float().mean(0).numpy() if raw[i].ndim == 3 else raw[i].float().numpy()
        if tuple(img.shape) != maps[i].shape:
            img = torch.nn.functional.interpolate(
                torch.tensor(img)[None, None], size=maps[i].shape, mode="nearest"
            )[0, 0].numpy()
        axes[2 * r, c].imshow(img, cmap="gray")
        axes[2 * r + 1, c].imshow(img, cmap="gray")
        axes[2 * r + 1, c].imshow(maps[i], cmap="jet", alpha=0.45)
        axes[2 * r, c].set_title(
            f"true {names[int(y[i])] if y.ndim == 1 else '-'}\npred {names[int(pred[i])]}",
            fontsize=6,
        )
    for a in axes.flat:
        a.axis("off")
    out = Path(out) if out else run_dir / "explain" / "gradcam.png"

    def save(f):
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")

    atomic_save(out, save)
    plt.close(fig)
    return out


def run(args) -> int:
    """The body of ``bench-explain`` (its options: :mod:`bench.commands.explain`)."""
    print(f"wrote {explain_run(args.run_dir, args.n, args.out)}")
    return 0
