"""Persist what a job measured: predictions, history, per-class rows, best weights, trackers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.confidence.calibration import confidence_and_correct, temperature_scale
from bench.confidence.selective import aurc
from bench.io import atomic_save
from bench.job.build import Job
from bench.job.execute import Outcome
from bench.metrics import per_class_table
from bench.records import RunRecord
from bench.tracking import log_run_summary

N_SAMPLES = 16  # sample predictions shown in W&B


def predictions_frame(outputs: dict[str, torch.Tensor]) -> pd.DataFrame | None:
    """One row per sample: ``index``, ``target``/``target_j``, ``score_j`` (classification) or
    per-class overlap counts ``inter_c``/``pred_c``/``true_c`` (segmentation, per case)."""
    cols: dict[str, np.ndarray] = {"index": outputs["index"].numpy()}
    if "score" in outputs:
        target = outputs["target"].numpy()
        if target.ndim == 1:
            cols["target"] = target
        else:
            for j in range(target.shape[1]):
                cols[f"target_{j}"] = target[:, j]
        score = outputs["score"].numpy()
        for j in range(score.shape[1]):
            cols[f"score_{j}"] = score[:, j]
    elif "overlaps" in outputs:
        ov = outputs["overlaps"].numpy()
        for c in range(ov.shape[1]):
            for j, name in enumerate(("inter", "pred", "true")):
                cols[f"{name}_{c + 1}"] = ov[:, c, j].astype(np.int64)
    else:
        return None
    return pd.DataFrame(cols).sort_values("index")


def add_confidence_metrics(record: RunRecord, predictions: dict, task: str) -> None:
    """AURC of the test outputs, and temperature scaling fitted on val and applied to test
    (ECE/Brier/NLL after scaling as ``*_ts``; the fit in ``evaluations["calibration"]``)."""

    test, val = predictions.get("test"), predictions.get("val")
    if not test or "score" not in test:
        return
    yt, st = test["target"].numpy(), test["score"].numpy()
    record.test["aurc"] = aurc(*confidence_and_correct(yt, st, task))
    if val and "score" in val:
        result = temperature_scale((val["target"].numpy(), val["score"].numpy()), (yt, st), task)
        record.test.update(result.test)
        record.evaluations["calibration"] = {
            "temperature": result.temperature,
            "fitted_on": "val",
            "val_nll_before": result.val_nll_before,
            "val_nll_after": result.val_nll_after,
            "val_ece_before": result.val_ece_before,
            "val_ece_after": result.val_ece_after,
        }


def write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_save(path, lambda f: f.write(df.to_csv(index=False, float_format="%.6g").encode()))


def persist_outputs(run_dir: Path, spec, predictions: dict, record: RunRecord) -> None:
    """Predictions files, per-class rows, AURC and temperature scaling from per-sample outputs."""
    for stage, outputs in predictions.items():
        df = predictions_frame(outputs)
        if df is not None:
            write_csv(run_dir / f"predictions_{stage}.csv", df)
        if spec.kind == "classification" and "score" in outputs:
            record.per_class[stage] = per_class_table(
                outputs["target"], outputs["score"], spec.task, list(spec.label_names)
            )
    if spec.kind == "classification":
        add_confidence_metrics(record, predictions, spec.task)


def persist(job: Job, outcome: Outcome, record: RunRecord) -> None:
    """Write the run folder's files and fill the record's per-class rows (rank 0 only)."""
    if job.trainer.global_rank != 0:
        return
    run_dir = job.run_dir
    spec = job.spec
    persist_outputs(run_dir, spec, outcome.predictions, record)
    if outcome.history:
        write_csv(run_dir / "history.csv", pd.DataFrame(outcome.history))
    job.checkpoint.write_best(job.task.model)
    if job.loggers:
        test_preds = outcome.predictions.get("test")
        samples = None
        if test_preds:
            idx = test_preds["index"][:N_SAMPLES].long()
            raw = job.datamodule.splits["test"].images
            samples = np.asarray(
                raw[idx.to(raw.device)].cpu() if isinstance(raw, torch.Tensor) else raw[idx.numpy()]
            )
        log_run_summary(
            job.loggers,
            test=record.test,
            cost={k: v for k, v in vars(record.cost).items()},
            spec=spec,
            predictions=test_preds,
            samples=samples,
        )
