"""K seeds of one classification configuration trained as one LightningModule.

The members' networks are stacked into one :class:`~bench.models.packed.PackedNetwork`; each
member keeps its own task (loss, metrics, class weights), its own data order (its seed's
sampler), its own augmentation stream and its own best-validation weights. One forward and one
backward serve all members; the loss is the sum of the members' own losses, so each member's
gradient is exactly its own, and an elementwise optimiser over the stacked tensors updates each
member as its own optimiser would.

Training batches arrive as a list of K ``(x, y, index)`` batches (one per member's loader) and
are stacked to ``(K, B, ...)`` after the transfer; evaluation batches are shared by all members.
"""

from __future__ import annotations

import contextlib

import lightning as L
import torch
from torch import nn

from bench.callbacks import epoch_seed
from bench.data.base import as_trainer_dtype
from bench.models.packed import PackedNetwork
from bench.tasks.base import BaseTask, FiniteLossGuard
from bench.tasks.schedules import optimizer_and_schedule


@contextlib.contextmanager
def member_rng(states: list, k: int, device: torch.device):
    """Run a block on member ``k``'s own torch RNG stream (CPU, and the GPU in use), then put
    the process's stream back."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        cpu, gpu = states[k]
        torch.set_rng_state(cpu)
        if gpu is not None:
            torch.cuda.set_rng_state(gpu, device)
        yield
        states[k] = (
            torch.get_rng_state(),
            torch.cuda.get_rng_state(device) if devices else None,
        )


class PackedTask(L.LightningModule):
    """Train ``members`` (tasks of one architecture, one per seed) as one packed network.

    ``datamodules[k]`` feeds member ``k`` (its seed's order and augmentation); evaluation uses
    ``datamodules[0]``'s val split, which every member shares. ``best[k]`` holds member ``k``'s
    best validation score, epoch and weights; ``histories[k]`` its per-epoch curve.
    """

    def __init__(self, members: list[BaseTask], datamodules: list, seeds: list[int]) -> None:
        super().__init__()
        if not len(members) == len(datamodules) == len(seeds) >= 1:
            raise ValueError("one task, datamodule and seed per member")
        # plain lists: the members' own modules stay out of this module's tree and checkpoint
        self.__dict__["members"] = list(members)
        self.__dict__["datamodules"] = list(datamodules)
        self.seeds = [int(s) for s in seeds]
        self.k = len(members)
        self.net = PackedNetwork([t.model for t in members])
        lead = members[0]
        self.monitor, self.monitor_mode = lead.monitor, lead.monitor_mode
        self.optimizer_factory = lead.optimizer_factory
        self.scheduler_factory = lead.scheduler_factory
        self.best: list[dict] = [{"score": None, "epoch": None, "state": None} for _ in seeds]
        self.histories: list[list[dict]] = [[] for _ in seeds]
        self.history: list[dict] = []  # the members' mean per epoch, for the console
        self._rng: list = []
        self._train_loss_sum: torch.Tensor | None = None
        self._train_count = 0
        self._eval: list[list[dict]] = [[] for _ in seeds]
        self.finite_guard = FiniteLossGuard()

    # -- data ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        for dm in self.datamodules:
            dm.trainer = self.trainer  # data may then live on the accelerator
            dm.setup(stage)

    def train_dataloader(self):
        from lightning.pytorch.utilities import CombinedLoader

        loaders = [dm.train_dataloader() for dm in self.datamodules]
        return CombinedLoader(loaders, mode="min_size")

    def val_dataloader(self):
        return self.datamodules[0].val_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not (self.trainer.training and isinstance(batch[0], (list, tuple))):
            x, y, idx = batch
            x, y = self.datamodules[0].preprocess(x, y, False)
            return as_trainer_dtype(x, self.trainer), y, idx
        xs, ys, idxs = [], [], []
        for k, (x, y, idx) in enumerate(batch):
            with member_rng(self._rng, k, self.device):
                x, y = self.datamodules[k].preprocess(x, y, True)
            xs.append(x)
            ys.append(y)
            idxs.append(idx)
        return as_trainer_dtype(torch.stack(xs), self.trainer), torch.stack(ys), torch.stack(idxs)

    # -- training ------------------------------------------------------------------------------
    def configure_optimizers(self):
        return optimizer_and_schedule(
            self.optimizer_factory,
            self.scheduler_factory,
            list(self.net.parameters()),
            self.trainer.max_epochs,
        )

    def on_fit_start(self) -> None:
        for task in self.members:  # class weights and metric buffers next to the data
            task.to(self.device)

    def on_train_start(self) -> None:
        self.finite_guard.check_every = self.trainer.log_every_n_steps

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        # dropout of all members draws from the packed stream, which EpochSeed reseeded from
        # the first seed; each member's augmentation from its own seed's epoch stream (the bits
        # its unpacked run draws when nothing else uses the RNG)
        self._rng = []
        for s in self.seeds:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(epoch_seed(s, epoch))
                gpu = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
                self._rng.append((torch.get_rng_state(), gpu))
        self._train_loss_sum, self._train_count = None, 0
        self._epoch_lr = self.trainer.optimizers[0].param_groups[-1]["lr"]

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        return self.net(x, shared=shared)

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        logits = self(x)
        losses = torch.stack([self.members[k].loss(logits[k], y[k]) for k in range(self.k)])
        loss = losses.sum()  # each member's gradient is its own loss's
        self.finite_guard.update(loss, self.global_step)
        n = x.shape[1]
        weighted = losses.detach() * n
        self._train_loss_sum = (
            weighted if self._train_loss_sum is None else self._train_loss_sum + weighted
        )
        self._train_count += n
        self.log("train/loss", losses.mean(), on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=n)  # fmt: skip
        return loss

    # -- evaluation during fit -------------------------------------------------------------------
    def validation_step(self, batch, batch_idx):
        x, y, idx = batch
        logits = self(x, shared=True)
        for k, task in enumerate(self.members):
            out = task.eval_outputs(logits[k].float(), y, idx, "val")
            out["loss_sum"] = task.loss(logits[k], y, reduction="sum").detach().reshape(1)
            self._eval[k].append(out)

    def on_validation_epoch_end(self) -> None:
        rows = []
        for k, task in enumerate(self.members):
            parts, self._eval[k] = self._eval[k], []
            if not parts:
                return
            outputs = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
            n = len(outputs["index"])
            metrics = {
                "loss": outputs.pop("loss_sum").sum() / max(n, 1),
                **task.metric_tensors(outputs),
            }
            rows.append({key: float(v) for key, v in metrics.items()})
        if self.trainer.sanity_checking:
            return
        key = self.monitor.split("/", 1)[1]
        epoch = self.current_epoch
        train = (
            (self._train_loss_sum / max(self._train_count, 1)).tolist()
            if self._train_loss_sum is not None
            else [None] * self.k
        )
        for k, floats in enumerate(rows):
            row = {"epoch": epoch, "step": self.global_step}
            if train[k] is not None:
                row["train_loss"] = train[k]
            row.update({f"val_{m}": v for m, v in floats.items()})
            row["lr"] = getattr(self, "_epoch_lr", None)
            self.histories[k].append(row)
            self._keep_if_best(k, floats.get(key), epoch)
        mean = {m: sum(r[m] for r in rows) / self.k for m in rows[0]}
        self.log_dict({f"val/{m}": v for m, v in mean.items()})
        self.history.append({**self.histories[0][-1], **{f"val_{m}": v for m, v in mean.items()}})
        if train[0] is not None:
            self.history[-1]["train_loss"] = sum(train) / self.k

    def _keep_if_best(self, k: int, score: float | None, epoch: int) -> None:
        if score is None or score != score:  # NaN never improves
            return
        best = self.best[k]["score"]
        better = best is None or (score > best if self.monitor_mode == "max" else score < best)
        if better:
            self.best[k] = {"score": score, "epoch": epoch, "state": self.net.member_state_dict(k)}

    def on_train_epoch_end(self) -> None:
        self.finite_guard.check()

    # -- what a resume checkpoint carries --------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["medbench_packed"] = {
            "seeds": list(self.seeds),
            "histories": [list(h) for h in self.histories],
            "best": [
                {
                    "score": b["score"],
                    "epoch": b["epoch"],
                    "state": None
                    if b["state"] is None
                    else {n: v.detach().cpu() for n, v in b["state"].items()},
                }
                for b in self.best
            ],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        packed = checkpoint["medbench_packed"]
        self.histories = [list(h) for h in packed["histories"]]
        self.best = [dict(b) for b in packed["best"]]

    def member_network(self, k: int) -> nn.Module:
        """Member ``k``'s network with its latest weights (its own task's model)."""
        model = self.members[k].model
        model.load_state_dict(self.net.member_state_dict(k))
        return model
