"""A finished run as an object: its record, config, data spec, best weights and data, and
predictions through the run's own preprocessing.

    import bench
    run = bench.load_run("runs/<run_id>")
    probs = run.predict(images)          # uint8 (N, C, H, W) -> probabilities (N, K)

Every after-the-fact tool (explain, robust, tta, uncertainty, export, predict, report) loads runs
here; none imports another tool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import ConfigError
from bench.metrics import scores_from_logits
from bench.models.transfer import read_state_dict
from bench.records import RECORD_FILE, RunFiles, RunRecord, load_record
from bench.spec import DataSpec

log = logging.getLogger(__name__)


def load_finished_record(run_dir: str | Path) -> RunRecord:
    """The record of a finished run, or a one-line error saying what is wrong with the folder."""
    try:
        record = load_record(Path(run_dir))
    except (OSError, ValueError, TypeError):
        raise ConfigError(f"{run_dir} has no readable record.json; pass a run folder") from None
    if not record.done:
        raise ConfigError(f"run {record.run_id} is {record.status}, not done")
    return record


def best_checkpoint(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints/best.ckpt``, or a one-line error when the run kept none."""
    path = RunFiles(Path(run_dir)).best
    if not path.exists():
        raise ConfigError(
            f"{path} is missing (the run kept no checkpoint); rerun it with checkpoint.keep=best"
        )
    return path


@dataclass
class Run:
    """A finished run; the model and the data are built on first use (CPU unless moved)."""

    record: RunRecord
    device: str = "cpu"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def dir(self) -> Path:
        return Path(self.record.dir)

    @property
    def config(self) -> dict:
        return self.record.config

    @property
    def spec(self) -> DataSpec:
        """What the model sees (after ``data.resize``/``as_rgb``)."""
        return DataSpec.from_dict(self.record.spec)

    @property
    def checkpoint(self) -> Path:
        return best_checkpoint(self.dir)

    @property
    def temperature(self) -> float | None:
        """The temperature fitted on validation outputs at the end of the run, if any."""
        return ((self.record.evaluations or {}).get("calibration") or {}).get("temperature")

    @cached_property
    def model(self) -> torch.nn.Module:
        """The network with the run's best weights, in eval mode, on :attr:`device`."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(self.config)
        model = instantiate(cfg.model, _partial_=True, _convert_="all")(spec=self.spec)
        model.load_state_dict(read_state_dict(self.checkpoint, like=model))
        return model.to(self.device).eval()

    @cached_property
    def datamodule(self):
        """The run's datamodule, set up (its splits loaded into memory, on the CPU). A warning
        says so when the data no longer has the content hash the run recorded."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        data = dict(self.config.get("data") or {})
        recorded = data.pop("fingerprint", None)  # identity, not an option of the datamodule
        dm = instantiate(OmegaConf.create(data))
        if recorded is not None and dm.fingerprint() != recorded:
            log.warning(
                "run %s was trained on data with fingerprint %s; the data at this path now has "
                "%s (replaced or edited since): its numbers are not reproducible on it",
                self.record.run_id,
                recorded,
                dm.fingerprint(),
            )
        dm.setup("test")
        return dm

    def to(self, device: str) -> Run:
        """Move the model (built or not yet built) to ``device``."""
        self.device = device
        if "model" in self.__dict__:
            self.__dict__["model"] = self.__dict__["model"].to(device)
        return self

    def test_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images (N, C, ...), targets) of the test split, as the run read them."""
        ds = self.datamodule.splits["test"]
        return tuple(
            np.asarray(a.cpu() if isinstance(a, torch.Tensor) else a)
            for a in (ds.images, ds.targets)
        )

    def preprocess(self, images) -> torch.Tensor:
        """uint8 images -> the float batch the model was evaluated on (the run's own path)."""
        x = torch.as_tensor(np.asarray(images)).to(self.device)
        seg = self.spec.kind == "segmentation"
        shape = (len(x), *x.shape[2:]) if seg else (len(x),)
        dummy = torch.zeros(shape, dtype=torch.long, device=self.device)
        return self.datamodule.preprocess(x, dummy)[0]

    def logits(self, images, batch: int = 512, model: torch.nn.Module | None = None):
        """Raw outputs of ``model`` (default: the run's, in its current train/eval mode)."""
        net = model if model is not None else self.model
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                out.append(net(self.preprocess(images[i : i + batch])).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def segment(self, images, batch: int = 4) -> np.ndarray:
        """Label maps (N, *spatial) uint8 for uint8 images (N, C, ...) of a segmentation run:
        whole images, by sliding windows of the training patch size where it trained on
        patches (as its val/test evaluation did)."""
        from bench.tasks.segmentation import whole_image_logits

        task = self.config.get("task") or {}
        patch = self.datamodule.patch_size
        whole = getattr(self.model, "whole_image", False)
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = self.preprocess(images[i : i + batch])
                logits = whole_image_logits(
                    self.model, x, None if whole else patch, task.get("sliding_window")
                )
                out.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0,), np.uint8)

    def predict(
        self,
        images,
        batch: int = 512,
        calibrated: bool = False,
        model: torch.nn.Module | None = None,
    ) -> np.ndarray:
        """Probabilities for uint8 images (N, C, ...) through the run's preprocessing; with
        ``calibrated``, divided by the run's validation temperature first (when it has one)."""
        logits = self.logits(images, batch, model)
        if calibrated and self.temperature:
            logits = logits / float(self.temperature)
        return scores_from_logits(logits, self.spec.task).numpy()


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """The finished run in ``path`` (a run folder or its record.json)."""
    path = Path(path)
    if path.name == RECORD_FILE:
        path = path.parent
    return Run(load_finished_record(path), device)
