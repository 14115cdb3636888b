"""Shared training logic: optimiser groups, schedules, finite-loss guard, evaluation outputs.

Per epoch a task reads from the accelerator once: validation outputs stay on the device, metrics
are computed there, and the training loss, validation loss and every metric come back to the
host in a single transfer at the end of validation.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from bench.errors import NonFiniteLossError
from bench.models.transfer import classifier_module_name
from bench.spec import DataSpec
from bench.tasks.schedules import optimizer_and_schedule
from bench.tasks.tta import TTA_MODES, tta_logits

COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune")


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

    Evaluation outputs are buffered per epoch on the device and scored once at the epoch's end.
    ``last_metrics[stage]`` holds the floats of the latest evaluation of a stage and
    ``predictions[stage]`` its per-sample outputs (on the CPU), for the run record.
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
        compile: bool | str = False,
        tta: str = "none",
    ) -> None:
        super().__init__()
        if tta not in TTA_MODES:
            raise ValueError(f"eval.tta must be one of {TTA_MODES}, got {tta!r}")
        self.tta = tta
        if compile not in COMPILE_MODES:
            raise ValueError(f"task.compile must be one of {COMPILE_MODES}, got {compile!r}")
        self.model = model
        self.spec = spec
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.backbone_lr_mult = backbone_lr_mult
        # channels-last (NHWC; NDHWC for volumes): the same arithmetic in another memory order
        self.memory_format = (
            (torch.channels_last if spec.spatial_dims == 2 else torch.channels_last_3d)
            if channels_last
            else None
        )
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.channels_last = bool(channels_last)
        mode = None if compile in (False, None) else ("default" if compile is True else compile)
        # kept out of the module tree (via __dict__) so checkpoints hold the plain model's keys
        self.__dict__["_compiled"] = torch.compile(self.model, mode=mode) if mode else None
        self._eval_outputs: dict[str, list[dict[str, torch.Tensor]]] = {}
        self._train_loss_sum: torch.Tensor | None = None
        self._train_count = 0
        self.keep_predictions = False
        self.predictions: dict[str, dict[str, torch.Tensor]] = {}
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.history: list[dict] = []
        self.finite_guard = FiniteLossGuard()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        compiled = self.__dict__.get("_compiled")
        return compiled(x) if compiled is not None and self.training else self.model(x)

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
        return optimizer_and_schedule(
            self.optimizer_factory, self.scheduler_factory, params, self.trainer.max_epochs
        )

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
        self._train_loss_sum, self._train_count = None, 0
        # the epoch's LR: Lightning steps epoch schedulers before the epoch's validation
        self._epoch_lr = self.trainer.optimizers[0].param_groups[-1]["lr"]

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = self.loss(self(x), y)
        self.finite_guard.update(loss, self.global_step)
        n = x.shape[0]
        weighted = loss.detach() * n
        self._train_loss_sum = (
            weighted if self._train_loss_sum is None else self._train_loss_sum + weighted
        )
        self._train_count += n
        # per step for the progress bar and loggers only: they read it when they refresh
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        return loss

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch) -> None:
        x, y, idx = batch
        if self.tta != "none" and self.trainer.state.fn != "fit":  # the final evaluation only
            logits = tta_logits(self, x, self.tta, self.spec.task, self.spec.spatial_dims)
        else:
            logits = self.eval_logits(x)
        loss = self.loss(logits, y, reduction="sum")
        out = self.eval_outputs(logits.float(), y, idx, stage)
        out["loss_sum"] = loss.detach().reshape(1)
        self._eval_outputs.setdefault(stage, []).append(out)

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def _gather(self, stage: str) -> dict[str, torch.Tensor]:
        parts = self._eval_outputs.pop(stage, [])
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if parts else {}
        if self.trainer.world_size > 1 and out:
            out = {k: self.all_gather(v).flatten(0, 1) for k, v in out.items()}
        return out

    def _end_eval_epoch(self, stage: str) -> None:
        outputs = self._gather(stage)
        if not outputs:
            return
        n = len(outputs["index"])
        metrics = {
            "loss": outputs.pop("loss_sum").sum() / max(n, 1),
            **self.metric_tensors(outputs),
        }
        train_loss = None
        in_fit = stage == "val" and self.trainer.state.fn == "fit"
        if in_fit and self._train_loss_sum is not None:
            train_loss = self._train_loss_sum / max(self._train_count, 1)
        names = list(metrics)
        stacked = torch.stack([metrics[k].float().reshape(()) for k in names])
        if train_loss is not None:
            stacked = torch.cat([stacked, train_loss.float().reshape(1)])
        values = stacked.tolist()  # the one host read of the epoch
        floats = dict(zip(names, values[: len(names)], strict=True))
        if in_fit and not self.trainer.sanity_checking:
            self._history_row(values[-1] if train_loss is not None else None, floats)
        # every rank scored the same gathered outputs; syncing only keeps Lightning content
        self.log_dict({f"{stage}/{k}": v for k, v in floats.items()}, sync_dist=False)
        if not self.trainer.sanity_checking:
            self.last_metrics[stage] = floats
            if self.keep_predictions:
                self.predictions[stage] = {k: v.cpu() for k, v in outputs.items()}

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def _history_row(self, train_loss: float | None, val: dict[str, float] | None) -> None:
        row = {"epoch": self.current_epoch, "step": self.global_step}
        if train_loss is not None:
            row["train_loss"] = train_loss
        for k, v in (val or {}).items():
            row[f"val_{k}"] = v
        row["lr"] = getattr(self, "_epoch_lr", None)
        self.history.append(row)

    def on_train_epoch_end(self) -> None:
        self.finite_guard.check()
        if not self.history or self.history[-1]["epoch"] != self.current_epoch:
            # no validation this epoch: the training loss alone
            loss = self._train_loss_sum
            self._history_row(
                float(loss / max(self._train_count, 1)) if loss is not None else None, None
            )

    # the curves so far travel with the resume checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["medbench_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("medbench_history", []))

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of an evaluation batch (segmentation: whole images by sliding windows)."""
        return self(x)

    # -- to implement --------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def eval_outputs(self, logits, y, idx, stage: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def metric_tensors(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
