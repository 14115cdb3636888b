"""What every ``bench-speed`` table shares: the machine facts of a row, medians and ratios of
repeated timings, Markdown rendering, and writing a table that keeps rows measured before."""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from bench.records import Env

BASE_BATCH, BASE_LR = 128, 1e-3  # the MedMNIST v2 recipe
FACTS = ("epochs", "train_images", "device", "cpu_threads", "machine", "torch")


def setting_dtype(setting: str) -> str:
    """The peak a setting (or a Lightning precision) is measured against: bf16 or fp32."""
    return "bf16" if str(setting).startswith("bf16") else "fp32"


def machine_facts(device: str) -> dict:
    """The device, the machine (GPU or CPU model), torch threads and versions of a row
    (:class:`bench.records.Env`, what every run record holds)."""
    env = Env.current()
    return {
        "device": device,
        "machine": env.device if device == "cuda" else env.cpu,
        "cpu_threads": env.cpu_threads,
        "torch": env.torch,
        "python": env.python,
    }


def summarise(reps, warmup: int = 0):
    """Median per (model, method, precision) after dropping warm-up repetitions; ratios."""

    df = reps[reps["rep"] >= warmup] if "rep" in reps else reps
    if "error" in df:
        df = df[df["error"].isna()]
    df = df.copy()
    if "batch_size" not in df:  # tables measured before batch scaling: all at the base batch
        df["batch_size"] = BASE_BATCH
    df["batch_size"] = df["batch_size"].fillna(BASE_BATCH).astype(int)
    keys = ["model", "method", "precision", "batch_size"]
    num = [c for c in df.columns if c not in (*keys, "rep", "error", "traceback", "ran_on")]
    num = [c for c in num if pd.api.types.is_numeric_dtype(df[c])]
    out = df.groupby(keys)[num].median().reset_index()
    for c in ("epoch_time_s", "fit_time_s"):
        if c in out:
            mins = df.groupby(keys)[c].min().reset_index(drop=True)
            maxs = df.groupby(keys)[c].max().reset_index(drop=True)
            out[f"{c}_min"], out[f"{c}_max"] = mins.values, maxs.values
    out["reps"] = df.groupby(keys).size().values
    for c in ("cpu_threads", "epochs", "train_images"):  # counts: medians of them stay integers
        if c in out:
            out[c] = out[c].round().astype("Int64")
    paired = paired_harness_over_raw(df, keys)
    by = out.set_index(keys)["epoch_time_s"]
    auc = out.set_index(keys)["val_auc"] if "val_auc" in out else None
    ratios = []
    for (model, method, prec, batch), t in by.items():
        raw = by.get((model, "raw", prec, batch))
        ref = by.get((model, "reference", "32", BASE_BATCH))
        base = None if auc is None else auc.get((model, method, "32", BASE_BATCH))
        own = None if auc is None else auc.get((model, method, prec, batch))
        ratios.append(
            {
                "harness_over_raw": (
                    paired[(model, prec, batch)][0]
                    if (model, prec, batch) in paired
                    else round(t / raw, 3)
                )
                if method == "harness" and raw
                else None,
                # the spread of the per-repetition ratios (empty without paired repetitions)
                "harness_over_raw_min": paired.get((model, prec, batch), (None,) * 3)[1]
                if method == "harness"
                else None,
                "harness_over_raw_max": paired.get((model, prec, batch), (None,) * 3)[2]
                if method == "harness"
                else None,
                "reference_over_harness": round(ref / t, 3)
                if method == "harness" and ref
                else None,
                # a fast setting keeps accuracy when this stays near 0 (same seed, same epochs)
                "val_auc_vs_fp32": round(own - base, 4)
                if base is not None and own is not None and (prec, batch) != ("32", BASE_BATCH)
                else None,
            }
        )
    return pd.concat([out, pd.DataFrame(ratios)], axis=1)


def paired_harness_over_raw(df, keys: list[str]) -> dict[tuple, tuple[float, float, float]]:
    """(model, precision, batch) -> (median, min, max) of harness/raw per repetition.

    A repetition times the harness and the raw loop back to back (order rotated), so their
    ratio within one repetition cancels the drift of a shared machine's speed between
    repetitions, which the ratio of the two medians does not."""
    if "rep" not in df:
        return {}
    t = df.pivot_table(
        index=[k for k in keys if k != "method"] + ["rep"],
        columns="method",
        values="epoch_time_s",
        aggfunc="median",
    )
    if not {"harness", "raw"} <= set(t.columns):
        return {}
    ratios = (t["harness"] / t["raw"]).dropna()
    return {key: ratio_spread(r.tolist(), 3) for key, r in ratios.groupby(level=[0, 1, 2])}


def ratio_spread(ratios: list[float], digits: int) -> tuple[float, float, float]:
    """(median, min, max) of per-repetition ratios, rounded to ``digits``."""
    return tuple(round(float(f(ratios)), digits) for f in (statistics.median, min, max))


def markdown(summary) -> str:
    cols = [
        "model",
        "method",
        "precision",
        "batch_size",
        "epoch_time_s",
        "train_samples_per_sec",
        "gpu_util_pct",
        "val_auc",
        "val_auc_vs_fp32",
        "harness_over_raw",
        "reference_over_harness",
    ]
    cols = [c for c in cols if c in summary]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(
                "" if v is None or v != v else f"{v:.4g}" if isinstance(v, float) else str(v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_replacing(path: Path, table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Write ``table`` to ``path``, keeping the rows already there whose ``keys`` it does not
    measure again (other rows and models measured before); returns what was written."""
    if path.exists():
        old = pd.read_csv(path)
        again = old.set_index(keys).index.isin(table.set_index(keys).index)
        table = pd.concat([old[~again], table], ignore_index=True)
    table.to_csv(path, index=False)
    return table
