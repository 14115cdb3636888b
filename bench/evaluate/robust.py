"""``bench-robust``: evaluate finished runs on corrupted copies of their test split.

    bench-robust --runs-dir runs                    # every finished 2D classification run
    bench-robust --run-dir runs/<run_id> --severities 1 3 5
    bench-robust --runs-dir runs --out results/pneumoniamnist/robustness.csv

For each run: the best checkpoint is scored on the clean test split and on every corruption x
severity MedMNIST-C defines for the dataset (bench/evaluate/corruptions.py); a 2D dataset MedMNIST-C
does not cover (synthetic, a user's folder) gets the documented generic set (OrganAMNIST's
severities), and the record says which set was used. Reported as
MedMNIST-C reports it: balanced error (1 - balanced accuracy, per label averaged for
multi-label) per corruption averaged over severities (BE) and its excess over the clean balanced
error (RBE). MedMNIST-C also divides both by AlexNet's; that needs an AlexNet run as reference,
so the record keeps the unnormalised values. The results go into the run record
(``evaluations.robustness``) and a table per dataset (model x corruption x severity).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from bench.board.robustness import robustness_table, summary_table
from bench.errors import ConfigError
from bench.evaluate.corruptions import (
    NOT_IMPLEMENTED,
    corrupt,
    corruption_set,
    corruptions_for,
    family_of,
)
from bench.finished import Run
from bench.metrics import classification_metrics
from bench.records import RunRecord, RunStore, load_runs
from bench.toolkit import resolve_device

log = logging.getLogger("bench.robust")
METRICS = ("acc", "auc", "balanced_acc")


def _metrics(y, score, task) -> dict[str, float]:
    m = classification_metrics(y, score, task, METRICS)
    m["balanced_error"] = 1.0 - m["balanced_acc"]
    return m


def evaluate_run(
    record: RunRecord,
    severities: tuple[int, ...] = (1, 2, 3, 4, 5),
    device: str = "cpu",
    cache: dict | None = None,
    only: tuple[str, ...] | None = None,
) -> dict:
    """The robustness section of the record; ``cache`` shares corrupted sets between runs;
    ``only`` restricts the corruptions (default: all MedMNIST-C defines for the dataset)."""
    if record.kind != "classification" or (record.spec or {}).get("spatial_dims") != 2:
        raise ConfigError(f"{record.run_id}: robustness needs a 2D classification run")
    flag = (record.config.get("data") or {}).get("flag")
    table = corruptions_for(flag)
    run = Run(record, device)
    images, y = run.test_arrays()
    task = run.spec.task
    clean = _metrics(y, run.predict(images), task)
    out: dict = {"clean": clean, "corruptions": {}, "be": {}, "rbe": {}, "families": {}}
    cache = {} if cache is None else cache
    for name in [n for n in table if only is None or n in only]:
        per_sev = {}
        for sev in severities:
            key = (flag, images.shape, name, sev)
            if key not in cache:
                cache[key] = corrupt(images, name, sev, flag)
            per_sev[str(sev)] = _metrics(y, run.predict(cache[key]), task)
        be = float(np.mean([m["balanced_error"] for m in per_sev.values()]))
        out["corruptions"][name] = per_sev
        out["be"][name] = be
        out["rbe"][name] = be - clean["balanced_error"]
        out["families"][name] = family_of(name)
    out["mean_be"] = float(np.mean(list(out["be"].values())))
    out["mean_rbe"] = float(np.mean(list(out["rbe"].values())))
    out["image_size"] = int(images.shape[-1])
    out["spatial_scale"] = images.shape[-1] / 224
    out["not_implemented"] = list(NOT_IMPLEMENTED)
    out["set"] = corruption_set(flag)
    return out


def run(args) -> int:
    """The body of ``bench-robust`` (its options: :mod:`bench.commands.robust`)."""
    device = resolve_device(args.device)
    if any(s not in range(0, 6) for s in args.severities):
        raise ConfigError("--severities are 0 (clean) to 5")
    records = [
        r
        for r in load_runs(args.run_dir, args.runs_dir)
        if r.done
        and r.kind == "classification"
        and (r.spec or {}).get("spatial_dims") == 2
        and (not args.dataset or r.dataset in args.dataset)
    ]
    if not records:
        raise ConfigError("no finished 2D classification runs to evaluate")
    cache: dict = {}
    for r in records:
        if (r.evaluations or {}).get("robustness") and not args.force:
            continue
        try:
            r.evaluations["robustness"] = evaluate_run(r, tuple(args.severities), device, cache)
        except ConfigError as e:  # one run without a checkpoint must not stop the others
            print(f"{r.run_id}: skipped: {e}", file=sys.stderr)
            continue
        RunStore(r.dir.parent).write(r)
        rob = r.evaluations["robustness"]
        print(
            f"{r.run_id}: clean balanced error {rob['clean']['balanced_error']:.3f}, "
            f"mean BE {rob['mean_be']:.3f}, mean RBE {rob['mean_rbe']:+.3f} over "
            f"{len(rob['be'])} corruptions x {len(args.severities)} severities"
        )
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        robustness_table(records).to_csv(out, index=False, float_format="%.5g")
        summary = out.with_name(out.stem + "_summary.csv")
        summary_table(records).to_csv(summary, index=False, float_format="%.5g")
        print(f"wrote {out} (per corruption x severity) and {summary} (per run row)")
    return 0
