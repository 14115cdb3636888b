"""``hparams_search=<preset>``: an Optuna study through Hydra's multirun (see bench.search).

Asks Optuna for ``n_jobs`` trials at a time, launches them as ordinary jobs through the
configured launcher (basic, joblib or colocate), tells Optuna each job's returned validation
score (or that it was pruned or failed), until the study holds ``n_trials`` finished trials.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("bench.search")


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str,
        n_trials: int = 20,
        n_jobs: int = 1,
        direction: str = "maximize",
        sampler_seed: int | None = 0,
        pruner: str | None = "median",
        params: dict | None = None,
        best_out: str = "results/hparams_search",
    ) -> None:
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.direction, self.sampler_seed, self.pruner = direction, sampler_seed, pruner
        self.params = dict(params or {})
        self.best_out = best_out

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _study(self):
        import optuna

        from bench.search import make_pruner

        if self.storage.startswith("sqlite:///"):
            Path(self.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            direction=self.direction,
            pruner=make_pruner(self.pruner),
            load_if_exists=True,
        )
        # a resumed study must not replay the random draws it already made: offset the seed
        seed = None if self.sampler_seed is None else self.sampler_seed + len(study.trials)
        study.sampler = optuna.samplers.TPESampler(seed=seed)
        return study

    def sweep(self, arguments: list[str]) -> Any:
        import optuna
        from optuna.trial import TrialState

        from bench.errors import ConfigError
        from bench.search import PRUNED_ATTR, override_value, suggest, write_best_experiment

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        if any(o.is_sweep_override() for o in parser.parse_overrides(arguments)):
            raise ConfigError(
                "hparams_search varies the parameters of its search space; pass single values "
                "on the command line (no a,b,c sweeps)"
            )
        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, Path(self.config.hydra.sweep.dir) / "multirun.yaml")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = self._study()
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

        def n_finished() -> int:
            return sum(t.state in finished for t in study.get_trials(deepcopy=False))

        # trials left RUNNING by an interrupted search are failed: they will not report
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
        if n_finished():
            log.info("study %s: resuming with %d finished trials", self.study_name, n_finished())
        # the jobs this sweep will launch (for the "job k of N" lines and the summary)
        from bench.io import atomic_write_text
        from bench.sweep import STATE_DIR

        todo = max(0, self.n_trials - n_finished())
        atomic_write_text(Path(self.config.hydra.sweep.dir) / STATE_DIR / "total", str(todo))
        job_idx = n_finished()
        returns = []
        while n_finished() < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - n_finished())
            trials = [study.ask() for _ in range(batch)]
            overrides = []
            for trial in trials:
                values = {k: suggest(trial, k, spec) for k, spec in self.params.items()}
                overrides.append(
                    [*arguments]
                    + [f"{k}={override_value(v)}" for k, v in values.items()]
                    + [
                        f"+hparams_search.trial_number={trial.number}",
                        f"+hparams_search.storage={self.storage}",
                        f"+hparams_search.study_name={self.study_name}",
                    ]
                )
            results = self.launcher.launch(overrides, initial_job_idx=job_idx)
            job_idx += len(results)
            for trial, ret in zip(trials, results, strict=True):
                # from the storage: Trial.user_attrs is the ask-time snapshot (Optuna 5) and
                # would miss the pruned mark the job's process wrote
                frozen = study._storage.get_trial(trial._trial_id)
                value = None
                try:
                    value = ret.return_value
                except Exception as e:  # the job itself crashed
                    log.warning("trial %d failed: %s", trial.number, e)
                if PRUNED_ATTR in frozen.user_attrs:
                    study.tell(trial.number, state=TrialState.PRUNED)
                elif value is None:
                    study.tell(trial.number, state=TrialState.FAIL)
                else:
                    study.tell(trial.number, float(value))
            returns.append(results)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.error("study %s: no trial completed", self.study_name)
            return returns
        best = study.best_trial
        params = {k: best.params[k] for k in self.params}
        fixed = [a for a in arguments if not a.startswith(("hparams_search", "hydra"))]
        metric = (self.config.get("hparams_search") or {}).get("metric", "auc")
        path = write_best_experiment(
            Path(self.best_out) / "experiment" / f"{self.study_name}.yaml",
            self.study_name,
            params,
            fixed,
            best.value,
            metric,
        )
        pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
        print(
            f"best of {len(complete)} completed trials ({pruned} pruned) in study "
            f"{self.study_name!r}: val {metric} {best.value:.4f} with "
            + " ".join(f"{k}={override_value(v)}" for k, v in params.items())
            + f"\nwrote {path}; reproduce with: bench-train --config-dir {path.parent.parent} "
            f"experiment={path.stem} " + " ".join(fixed),
            flush=True,
        )
        return returns
