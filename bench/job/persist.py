"""Persist what a job measured: predictions, history, per-class rows, best weights, trackers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.confidence.calibration import confidence_and_correct, temperature_scale
from bench.confidence.selective import aurc
from bench.costs import gmacs, param_counts
from bench.io import atomic_save
from bench.job.build import Job
from bench.job.execute import Outcome
from bench.metrics import dice_iou_from_overlaps, per_class_table
from bench.records import Cost, RunFiles, RunRecord
from bench.tracking import log_run_summary

N_SAMPLES = 16  # sample predictions shown in W&B


def predictions_frame(outputs: dict[str, torch.Tensor]) -> pd.DataFrame | None:
    """One row per sample: ``index``, ``target``/``target_j``, ``score_j`` (classification) or
    per-class overlap counts ``inter_c``/``pred_c``/``true_c`` and, on test, ``hd95_c``/``nsd_c``
    (segmentation, per case)."""
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
        if "surface" in outputs:
            surface = outputs["surface"].numpy()
            for c in range(surface.shape[1]):
                cols[f"hd95_{c + 1}"] = surface[:, c, 0]
                cols[f"nsd_{c + 1}"] = surface[:, c, 1]
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


def persist_outputs(
    run_dir: Path, spec, predictions: dict, record: RunRecord, test_images=None
) -> None:
    """Predictions files, per-class rows, AURC and temperature scaling from per-sample outputs;
    for segmentation the notes on undefined surface metrics and the best/worst test cases
    (``test_images``: the test split's uint8 images, for the report's overlays)."""
    for stage, outputs in predictions.items():
        df = predictions_frame(outputs)
        if df is not None:
            write_csv(RunFiles(run_dir).predictions(stage), df)
        if spec.kind == "classification" and "score" in outputs:
            record.per_class[stage] = per_class_table(
                outputs["target"], outputs["score"], spec.task, list(spec.label_names)
            )
    if spec.kind == "classification":
        add_confidence_metrics(record, predictions, spec.task)
    else:
        record.notes += surface_notes(predictions.get("test") or {}, spec)
        save_case_examples(run_dir, predictions.get("test") or {}, test_images)


def surface_notes(outputs: dict, spec) -> list[str]:
    """One note per foreground class with test cases whose HD95/surface Dice is undefined."""
    if "surface" not in outputs:
        return []
    hd95 = outputs["surface"][..., 0]
    notes = []
    for c in range(hd95.shape[1]):
        n = int(torch.isnan(hd95[:, c]).sum())
        if n:
            name = spec.label_names[c + 1] if c + 1 < len(spec.label_names) else str(c + 1)
            notes.append(
                f"HD95 and surface Dice of class {name!r} are undefined (NaN, left out of the "
                f"means) in {n} of {len(hd95)} test cases: truth or prediction is empty there"
            )
    return notes


def save_case_examples(run_dir: Path, outputs: dict, images=None) -> None:
    """The best and the worst test case by mean foreground Dice (image, truth, prediction,
    index) for the report's overlays, in ``test_cases.npz``; 3D cases keep their middle
    slice."""
    if "pred" not in outputs or "overlaps" not in outputs:
        return
    dice, _ = dice_iou_from_overlaps(outputs["overlaps"].double())
    case = dice.nanmean(1)
    if torch.isnan(case).all():
        return
    order = torch.argsort(torch.nan_to_num(case, nan=-1.0))
    picks = {"best": int(order[-1]), "worst": int(order[0])}

    def plane(t: torch.Tensor) -> np.ndarray:
        a = t.numpy()
        return a[a.shape[0] // 2] if a.ndim == 3 else a

    arrays = {}
    for name, i in picks.items():
        arrays[f"{name}_index"] = np.int64(outputs["index"][i])
        arrays[f"{name}_dice"] = np.float64(case[i])
        arrays[f"{name}_truth"] = plane(outputs["target"][i])
        arrays[f"{name}_pred"] = plane(outputs["pred"][i])
        if images is not None:
            j = int(outputs["index"][i])
            img = images[j : j + 1]
            img = np.asarray(img.cpu() if isinstance(img, torch.Tensor) else img)[0]
            img = img[0] if img.shape[0] in (1, 3) and img.ndim >= 3 else img  # first channel
            arrays[f"{name}_image"] = img[img.shape[0] // 2] if img.ndim == 3 else img
    atomic_save(run_dir / "test_cases.npz", lambda f: np.savez_compressed(f, **arrays))


def persist(job: Job, outcome: Outcome, record: RunRecord) -> None:
    """Write the run folder's files and fill the record's per-class rows (rank 0 only)."""
    if job.trainer.global_rank != 0:
        return
    run_dir = job.run_dir
    spec = job.spec
    persist_outputs(
        run_dir, spec, outcome.predictions, record, job.datamodule.splits["test"].images
    )
    if outcome.history:
        write_csv(RunFiles(run_dir).history, pd.DataFrame(outcome.history))
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


def describe_job(record: RunRecord, job: Job) -> None:
    """What the record says of a built job before it trains: data, scheme, size, cost."""
    record.spec = job.spec.to_dict()
    record.dataset, record.task, record.kind = job.spec.name, job.spec.task, job.spec.kind
    record.scheme = job.info.scheme
    record.cv = job.datamodule.cv_info
    record.split_sizes = {k: len(x) for k, (x, _) in job.datamodule.prepared_splits().items()}
    record.cost = Cost(
        **param_counts(job.model),
        gmacs=gmacs(job.model, job.spec),
        input_size=list(job.spec.input_size),
    )
    record.notes = list(job.datamodule.notes)


def record_outcome(record: RunRecord, job: Job, outcome: Outcome) -> None:
    """Put what the job measured into the record and write the run folder's files."""
    record.val, record.test, record.test_last = outcome.val, outcome.test, outcome.test_last
    record.best_epoch, record.epochs_run = outcome.best_epoch, outcome.epochs_run
    for k, v in outcome.cost.items():
        setattr(record.cost, k, v)
    record.env.device = outcome.device
    record.cv = job.datamodule.cv_info
    persist(job, outcome, record)
