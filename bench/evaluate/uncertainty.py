"""``bench-uncertainty``: MC-dropout on finished runs whose model has dropout.

    bench-uncertainty --runs-dir runs --samples 20

The best weights are scored ``samples`` times with dropout active (BatchNorm keeps its running
statistics). The mean probabilities give MC-dropout metrics; the predictive entropy and the
mutual information (the part of the entropy the samples disagree on) give two more confidence
scores whose risk-coverage areas (AURC, lower is better) stand beside the softmax confidence's.
Results go into ``evaluations.mc_dropout`` of each record.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from bench.confidence.calibration import confidence_and_correct
from bench.confidence.selective import aurc
from bench.errors import ConfigError
from bench.finished import Run
from bench.metrics import classification_metrics, hard_predictions
from bench.records import RunRecord, RunStore, load_runs
from bench.toolkit import resolve_device


def has_dropout(model: torch.nn.Module) -> bool:
    return any(
        isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()
    )


def _dropout_on(model: torch.nn.Module) -> None:
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.train()


def mc_dropout(record: RunRecord, samples: int = 20, device: str = "cpu", seed: int = 0) -> dict:
    if record.kind != "classification":
        raise ConfigError(f"{record.run_id}: MC-dropout is evaluated for classification runs")
    run = Run(record, device)
    model = run.model
    if not has_dropout(model):
        raise ConfigError(f"{record.run_id}: {record.model} has no dropout layer (p > 0)")
    images, y = run.test_arrays()
    task = run.spec.task
    torch.manual_seed(seed)
    _dropout_on(model)
    draws = [run.predict(images) for _ in range(samples)]  # dropout stays on
    model.eval()
    p = np.stack(draws)  # (T, N, C)
    mean = p.mean(0)
    eps = 1e-12
    if task == "multi-label":
        ent = -(mean * np.log(mean + eps) + (1 - mean) * np.log(1 - mean + eps)).sum(1)
        exp_ent = -(p * np.log(p + eps) + (1 - p) * np.log(1 - p + eps)).sum(2).mean(0)
        correct = (hard_predictions(torch.as_tensor(mean), task).numpy() == (y > 0.5)).all(1)
    else:
        ent = -(mean * np.log(mean + eps)).sum(1)
        exp_ent = -(p * np.log(p + eps)).sum(2).mean(0)
        correct = hard_predictions(torch.as_tensor(mean), task).numpy() == y.reshape(-1)
    mutual_info = ent - exp_ent
    conf, corr = confidence_and_correct(y, mean, task)
    return {
        "samples": samples,
        "test": classification_metrics(y, mean, task),
        "aurc_softmax": aurc(conf, corr),
        "aurc_entropy": aurc(-ent, correct),
        "aurc_mutual_info": aurc(-mutual_info, correct),
        "mean_mutual_info": float(mutual_info.mean()),
    }


def run(args) -> int:
    """The body of ``bench-uncertainty`` (its options: :mod:`bench.commands.uncertainty`)."""
    device = resolve_device(args.device)
    records = [
        r for r in load_runs(args.run_dir, args.runs_dir) if r.done and r.kind == "classification"
    ]
    if not records:
        raise ConfigError("no finished classification runs to evaluate")
    for r in records:
        try:
            r.evaluations["mc_dropout"] = mc_dropout(r, args.samples, device)
        except ConfigError as e:
            print(f"{r.run_id}: skipped: {e}", file=sys.stderr)
            continue
        RunStore(r.dir.parent).write(r)
        mc = r.evaluations["mc_dropout"]
        print(
            f"{r.run_id}: MC-dropout x{args.samples} test AUC {mc['test']['auc']:.4f} "
            f"(plain {r.test.get('auc', float('nan')):.4f}); AURC softmax "
            f"{mc['aurc_softmax']:.4f}, mutual information {mc['aurc_mutual_info']:.4f}"
        )
    return 0
