"""Shared training logic: optimiser groups, schedules, finite-loss guard, prediction buffers."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from bench.errors import NonFiniteLossError
from bench.models.transfer import classifier_module_name
from bench.spec import DataSpec


class FiniteLossGuard:
    """Remembers the first step whose loss was NaN/inf and raises when it is read.

    On an accelerator the flag stays on the device and is read every ``check_every`` steps and at
    the end of each epoch: reading it each step (``bool(tensor)``) would make the CPU wait for
    the GPU at every step. On the CPU it is read at once.
    """

    def __init__(self, check_every: int = 50, defer: bool | None = None) -> None:
        self.check_every = max(1, int(check_every))
        self.defer = defer
        self._first_bad: torch.Tensor | None = None

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach())
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        self._first_bad = torch.where(bad & (self._first_bad < 0), step, self._first_bad)
        defer = loss.device.type != "cpu" if self.defer is None else self.defer
        if not defer or (step + 1) % self.check_every == 0:
            self.check()

    def check(self) -> None:
        if self._first_bad is None:
            return
        step = int(self._first_bad)
        if step >= 0:
            self._first_bad = None
            raise NonFiniteLossError(
                f"non-finite loss at step {step}; lower task.optimizer.lr or use precision 32"
            )


class BaseTask(L.LightningModule):
    """Trains any ``model`` on data described by ``spec``; subclasses define loss and metrics.

    Evaluation outputs are buffered per epoch and scored once at the epoch's end (no per-step
    metric sync); the last test/val predictions stay on ``self.predictions`` for the run record.
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        model: nn.Module,
        spec: DataSpec,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        backbone_lr_mult: float = 1.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone_lr_mult = backbone_lr_mult
        if channels_last and spec.spatial_dims == 2:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.channels_last = channels_last and spec.spatial_dims == 2
        # kept out of the module tree (via __dict__) so checkpoints hold the plain model's keys
        self.__dict__["_compiled"] = torch.compile(self.model) if compile else None
        self._buffers: dict[str, list] = {}
        self.predictions: dict[str, dict[str, torch.Tensor]] = {}
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.history: list[dict] = []
        self.finite_guard = FiniteLossGuard()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        compiled = self.__dict__.get("_compiled")
        return compiled(x) if compiled is not None else self.model(x)

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.backbone_lr_mult != 1.0:
            head = classifier_module_name(self.model)
            head_ids = {id(p) for p in self.model.get_submodule(head).parameters()}
            base_lr = self.optimizer_factory.keywords.get("lr", 1e-3)
            params = [
                {
                    "params": [p for p in params if id(p) not in head_ids],
                    "lr": base_lr * self.backbone_lr_mult,
                },
                {"params": [p for p in params if id(p) in head_ids]},
            ]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs > 0 else 1
        scheduler = self.scheduler_factory(optimizer, max_epochs=max_epochs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }

    def on_train_start(self) -> None:
        # the device-side finite-loss flag is read when Lightning logs anyway
        self.finite_guard.check_every = self.trainer.log_every_n_steps

    def on_train_epoch_start(self) -> None:
        # frozen layers keep their BatchNorm statistics (a true linear probe)
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in m.parameters()
            ):
                m.eval()

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = self.loss(self(x), y)
        self.finite_guard.update(loss, self.global_step)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0]
        )
        return loss

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch) -> None:
        x, y, idx = batch
        logits = self(x)
        loss = self.loss(logits, y)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=x.shape[0],
            sync_dist=True,
        )
        self._buffers.setdefault(stage, []).append(self.eval_outputs(logits.float(), y, idx))

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def _gather(self, stage: str) -> dict[str, torch.Tensor]:
        parts = self._buffers.pop(stage, [])
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        if self.trainer.world_size > 1 and out:
            out = {k: self.all_gather(v).flatten(0, 1) for k, v in out.items()}
        return {k: v.cpu() for k, v in out.items()}

    def _end_eval_epoch(self, stage: str) -> None:
        outputs = self._gather(stage)
        if not outputs:
            return
        metrics = self.compute_metrics(outputs)
        # every rank scored the same gathered outputs; syncing only keeps Lightning content
        self.log_dict(
            {f"{stage}/{k}": v for k, v in metrics.items()}, sync_dist=self.trainer.world_size > 1
        )
        if not self.trainer.sanity_checking:
            self.predictions[stage] = outputs
            self.last_metrics[stage] = metrics

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def on_train_epoch_end(self) -> None:
        self.finite_guard.check()
        row = {"epoch": self.current_epoch, "step": self.global_step}
        loss = self.trainer.callback_metrics.get("train/loss_epoch")
        if loss is not None:
            row["train_loss"] = float(loss)
        for k, v in self.last_metrics.get("val", {}).items():
            row[f"val_{k}"] = v
        vloss = self.trainer.callback_metrics.get("val/loss")
        if vloss is not None:
            row["val_loss"] = float(vloss)
        row["lr"] = self.trainer.optimizers[0].param_groups[-1]["lr"]
        self.history.append(row)

    # -- to implement --------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def eval_outputs(self, logits, y, idx) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError
