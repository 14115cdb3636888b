"""Hyperparameter search over a current Optuna, driven by Hydra's multirun.

Hydra's own ``hydra-optuna-sweeper`` pins ``optuna<3``, so medbench ships a thin sweeper
(``hydra_plugins.medbench_launcher.optuna_sweeper``) over today's Optuna; this module holds its
logic. A trial is an ordinary run in the run store (its run id depends on its hyperparameters
only); the study lives in a storage file (SQLite) so an interrupted search resumes where it
stopped; the objective is the run's validation metric (never a test metric); hopeless trials are
pruned from their per-epoch validation scores; the best trial is printed and written as an
experiment YAML that reproduces it.

A search space in ``conf/hparams_search/<preset>.yaml`` names each parameter's distribution:

    task.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    data.batch_size: {type: categorical, choices: [32, 64, 128]}
    model.width: {type: int, low: 16, high: 64, step: 16}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from bench.callbacks import fit_validation_score
from bench.errors import ConfigError

log = logging.getLogger("bench.search")

PRUNED_ATTR = "medbench_pruned_at_epoch"


def suggest(trial, name: str, spec: dict) -> Any:
    """One value for ``name`` from its distribution ``spec`` (float, int or categorical)."""
    kind = spec.get("type")
    if kind == "float":
        return trial.suggest_float(
            name,
            float(spec["low"]),
            float(spec["high"]),
            log=bool(spec.get("log", False)),
            step=spec.get("step"),
        )
    if kind == "int":
        return trial.suggest_int(
            name,
            int(spec["low"]),
            int(spec["high"]),
            step=int(spec.get("step", 1)),
            log=bool(spec.get("log", False)),
        )
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec["choices"]))
    raise ConfigError(f"search space {name}: type {kind!r} is not one of float, int, categorical")


def override_value(value: Any) -> str:
    """A value as a Hydra override string (lists in brackets, floats in full precision)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def make_pruner(name: str | None):
    import optuna

    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    raise ConfigError(f"hparams_search pruner {name!r} is not one of none, median, hyperband")


def write_best_experiment(
    path: Path, study_name: str, params: dict, fixed: list[str], value: float, metric: str
) -> Path:
    """An experiment YAML (``# @package _global_``) that reproduces the best trial."""
    nested: dict = {}
    for key, v in params.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    header = [
        "# @package _global_",
        f"# Best trial of the Optuna study {study_name!r}: val {metric} = {value:.4f}.",
        f"# Searched with: {' '.join(fixed) or '(defaults)'}",
        f"#   bench-train --config-dir {path.parent.parent} experiment={path.stem} "
        + " ".join(a for a in fixed if not a.startswith(("hparams_search", "hydra"))),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(nested, sort_keys=True))
    return path


class OptunaPruning(L.Callback):
    """Report each epoch's validation score to the trial; stop a hopeless trial."""

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_number: int,
        monitor: str,
        pruner: str | None = "median",
    ) -> None:
        import optuna

        self.monitor = monitor
        # the pruner is not stored with the study: the sweeper passes its name along
        self.study = optuna.load_study(
            study_name=study_name, storage=storage, pruner=make_pruner(pruner)
        )
        self.trial_id = next(
            t._trial_id for t in self.study.get_trials(deepcopy=False) if t.number == trial_number
        )
        self.trial = optuna.trial.Trial(self.study, self.trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        value = fit_validation_score(trainer, self.monitor)
        if value is None:
            return
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.study._storage.set_trial_user_attr(self.trial_id, PRUNED_ATTR, epoch)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: val score {float(value):.4f}")
