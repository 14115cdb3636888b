"""A packed job's resume point as K ordinary resume checkpoints, one in each member's run folder.

:func:`split` turns the packed Lightning checkpoint into the ``last.ckpt`` an unpacked run of
member ``k`` would have written at the same epoch: its weights under the task's keys, its slice
of the optimizer state, its best weights, score and epoch, its curve. :func:`join` stacks K such
checkpoints (written packed or not) back into one the packed module restores. So a killed packed
job resumes every member from its own last checkpoint, packed or one by one.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import torch

from bench.callbacks import SaveClock
from bench.errors import BenchError
from bench.io import atomic_save
from bench.records import RunFiles
from bench.tasks.packed import PackedTask

MODEL_PREFIX = "model."  # an unpacked task's network keys
TIMER_KEY = "ThroughputTimer"


def _best_key(task: PackedTask) -> str:
    return f"BestAndResume[{task.monitor}]"


def _packed_param_shapes(task: PackedTask) -> list[torch.Size]:
    return [p.shape for p in task.net.parameters()]


def _split_optimizer(state: dict, shapes: list[torch.Size], k: int) -> dict:
    """Member ``k``'s slice of an elementwise optimizer's state over stacked parameters."""
    out = {"param_groups": copy.deepcopy(state["param_groups"]), "state": {}}
    for i, per_param in state["state"].items():
        out["state"][i] = {
            name: v[k].clone()
            if isinstance(v, torch.Tensor) and v.shape == shapes[i] and name != "step"
            else (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v))
            for name, v in per_param.items()
        }
    return out


def _join_optimizer(states: list[dict], shapes: list[torch.Size]) -> dict:
    out = {"param_groups": copy.deepcopy(states[0]["param_groups"]), "state": {}}
    for i, per_param in states[0]["state"].items():
        joined = {}
        for name, v in per_param.items():
            if isinstance(v, torch.Tensor) and v.shape == shapes[i][1:] and name != "step":
                joined[name] = torch.stack([s["state"][i][name] for s in states])
            else:
                joined[name] = v
        out["state"][i] = joined
    return out


def split(checkpoint: dict, task: PackedTask) -> list[dict]:
    """K unpacked resume checkpoints from the packed one."""
    shapes = _packed_param_shapes(task)
    packed = checkpoint["medbench_packed"]
    names = {**task.net._pnames, **task.net._bnames}  # network key -> packed attribute
    out = []
    for k in range(task.k):
        ck = {
            key: copy.deepcopy(v)
            for key, v in checkpoint.items()
            if key not in ("state_dict", "optimizer_states", "callbacks", "medbench_packed")
        }
        ck["state_dict"] = {
            MODEL_PREFIX + n: checkpoint["state_dict"][f"net.{a}"][k].clone()
            for n, a in names.items()
        }
        ck["optimizer_states"] = [
            _split_optimizer(s, shapes, k) for s in checkpoint["optimizer_states"]
        ]
        best = packed["best"][k]
        ck["callbacks"] = {
            key: copy.deepcopy(v) for key, v in checkpoint["callbacks"].items() if key == TIMER_KEY
        }
        ck["callbacks"][_best_key(task)] = {
            "best_score": best["score"],
            "best_epoch": best["epoch"],
            "best_state": best["state"],
        }
        ck["medbench_history"] = list(packed["histories"][k])
        ck["medbench_packed_member"] = {"k": k, "of": task.k, "seeds": list(task.seeds)}
        out.append(ck)
    return out


def join(checkpoints: list[dict], task: PackedTask) -> dict:
    """The packed checkpoint from K members' unpacked ones (all at the same epoch)."""
    steps = {(c.get("epoch"), c.get("global_step")) for c in checkpoints}
    if len(steps) != 1:
        raise BenchError(
            f"the members' resume checkpoints are at different points {sorted(steps)}; "
            "resume them unpacked (execution.pack_seeds=1)"
        )
    first = checkpoints[0]
    shapes = _packed_param_shapes(task)
    names = {**task.net._pnames, **task.net._bnames}
    out = {
        key: v
        for key, v in first.items()
        if key not in ("state_dict", "optimizer_states", "callbacks", "medbench_history")
    }
    out.pop("medbench_packed_member", None)
    out["state_dict"] = {
        f"net.{a}": torch.stack([c["state_dict"][MODEL_PREFIX + n] for c in checkpoints])
        for n, a in names.items()
    }
    out["optimizer_states"] = [
        _join_optimizer([c["optimizer_states"][i] for c in checkpoints], shapes)
        for i in range(len(first["optimizer_states"]))
    ]
    out["callbacks"] = {k: v for k, v in first["callbacks"].items() if k == TIMER_KEY}
    bests = [c["callbacks"].get(_best_key(task)) or {} for c in checkpoints]
    out["medbench_packed"] = {
        "seeds": list(task.seeds),
        "histories": [list(c.get("medbench_history", [])) for c in checkpoints],
        "best": [
            {
                "score": b.get("best_score"),
                "epoch": b.get("best_epoch"),
                "state": b.get("best_state"),
            }
            for b in bests
        ],
    }
    return out


def read_member_checkpoints(run_dirs: list[Path]) -> list[dict] | None:
    """Every member's ``last.ckpt``, or None when any member has none (start afresh)."""
    paths = [RunFiles(d).resume for d in run_dirs]
    if not all(p.exists() for p in paths):
        return None
    return [torch.load(p, map_location="cpu", weights_only=False) for p in paths]


class PackedResume(L.Callback):
    """At the end of a validation, once ``every_minutes`` have passed, write each member's
    ordinary ``last.ckpt`` into its own run folder (atomically)."""

    def __init__(self, run_dirs: list[Path], every_minutes: float = 5.0) -> None:
        self.run_dirs = [Path(d) for d in run_dirs]
        self.clock = SaveClock(every_minutes)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.restart()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self.clock.due(trainer):
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: PackedTask) -> list[Path]:
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        paths = []
        for run_dir, member in zip(self.run_dirs, split(checkpoint, pl_module), strict=True):
            path = RunFiles(run_dir).resume
            atomic_save(path, lambda f, m=member: torch.save(m, f))
            paths.append(path)
        self.clock.restart()
        return paths
