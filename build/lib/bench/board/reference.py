"""Paper deltas only at the paper's protocol.

``results/reference/medmnist_v2.csv`` states each published row's protocol in columns. A
leaderboard row gets ``ref_auc``/``ref_acc`` and ``delta_*`` only when its runs were trained
and evaluated that way; otherwise the deltas stay empty and ``ref_note`` says what differs
(``epochs 2≠100; stem 7x7+maxpool≠3x3``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.paths import reference_dir
from bench.records import RunRecord

# the protocol fields a reference row may state, in the order differences are reported
PROTOCOL_FIELDS = (
    "stem",
    "init",
    "input",
    "train_set",
    "epochs",
    "optimizer",
    "lr",
    "schedule",
    "batch_size",
    "augmentation",
    "pretrained",
    "precision",
)


def default_reference() -> Path:
    return reference_dir() / "medmnist_v2.csv"


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    return pd.read_csv(path or default_reference(), comment="#", dtype=str, keep_default_na=False)


def _target_name(cfg: dict | None) -> str:
    target = (cfg or {}).get("_target_", "")
    return target.rsplit(".", 1)[-1]


def run_protocol(record: RunRecord) -> dict[str, str]:
    """The protocol a run followed, in the reference table's vocabulary."""
    cfg = record.config or {}
    model = cfg.get("model") or {}
    data = cfg.get("data") or {}
    task = cfg.get("task") or {}
    trainer = cfg.get("trainer") or {}
    if record.model.endswith("_3d"):
        stem = "3x3"  # converted from the paper's 28² net
    elif "small_input_stem" in model:
        stem = "3x3" if model.get("small_input_stem") else "7x7+maxpool"
    else:
        stem = "own"
    size = data.get("size")
    resize = data.get("resize")
    inp = f"{size}" if not resize else f"{size}->{resize} {data.get('resize_mode')}"
    if data.get("as_rgb"):
        inp += " rgb"
    subset = [
        f"fraction {data['fraction']}" if data.get("fraction") else "",
        f"limit {data['limit']}" if data.get("limit") else "",
        f"cv {((data.get('cv') or {}).get('folds'))}-fold"
        if (data.get("cv") or {}).get("folds")
        else "",
        "balanced sampler" if data.get("sampler") == "balanced" else "",
        "class weights" if task.get("class_weights") not in (None, "none") else "",
    ]
    opt = task.get("optimizer") or {}
    sched = task.get("scheduler") or {}
    if _target_name(sched) == "multistep_at_fractions":
        fractions = ",".join(str(f) for f in sched.get("fractions", []))
        schedule = f"multistep {fractions} x{sched.get('gamma')}"
    else:
        schedule = _target_name(sched) or "none"
    pretrained = (
        "weights" if model.get("weights") else "imagenet" if model.get("pretrained") else "none"
    )
    wd = opt.get("weight_decay") or 0
    return {
        "stem": stem,
        "init": str(model.get("init", "default")),
        "input": inp,
        "train_set": "; ".join(s for s in subset if s) or "full",
        "epochs": str(trainer.get("max_epochs")),
        "optimizer": _target_name(opt).lower() + (f" wd{wd}" if wd else ""),
        "lr": f"{float(opt.get('lr', 0)):g}",
        "schedule": schedule,
        "batch_size": str(data.get("batch_size")),
        "augmentation": str(data.get("augment", "none")),
        "pretrained": pretrained,
        "precision": str(trainer.get("precision")),
    }


def protocol_differences(run: dict[str, str], ref: pd.Series) -> list[str]:
    """``["epochs 2≠100", ...]`` for every field the reference states and the run does not."""
    diffs = []
    for field in PROTOCOL_FIELDS:
        want = str(ref.get(field, "")).strip()
        if not want:
            continue
        got = run.get(field, "")
        if field == "lr":
            same = float(got or 0) == float(want)
        else:
            same = got == want
        if not same:
            diffs.append(f"{field} {got}≠{want}")
    return diffs


def add_reference(
    board: pd.DataFrame, records: dict[str, RunRecord], ref_path: str | Path | None = None
) -> pd.DataFrame:
    """Add ``ref_auc``/``ref_acc``/``delta_auc``/``delta_acc``/``ref_note``/``ref_model``.

    A row is matched to the paper's row of the same dataset, input size and model; the deltas
    are filled only when the protocols agree. They compare the weights the reference row's
    ``selection`` names: ``best-val`` the best-validation test metrics (``test_*``), ``last``
    those of the last epoch (``last_*``).
    """
    ref = load_reference(ref_path)
    board = board.copy()
    for col in ("ref_model", "ref_auc", "ref_acc", "delta_auc", "delta_acc", "ref_note"):
        board[col] = None
    for i, row in board.iterrows():
        if row.get("ensemble"):
            continue
        record = records[row["_first_run"]]
        data = (record.config or {}).get("data") or {}
        flag = data.get("flag") or data.get("name") or row["dataset"]
        size = str(data.get("size", row["input_size"]))
        hits = ref[
            (ref["dataset"] == flag) & (ref["size"] == size) & (ref["model"] == row["model"])
        ]
        if hits.empty:
            continue
        proto = run_protocol(record)
        # the input the network saw picks the paper's row (28 or 224); then the closest one
        same_input = hits[hits["input"] == proto["input"]]
        hits = same_input if not same_input.empty else hits
        best, best_diffs = None, None
        for _, r in hits.iterrows():
            diffs = protocol_differences(proto, r)
            if best_diffs is None or len(diffs) < len(best_diffs):
                best, best_diffs = r, diffs
        board.at[i, "ref_model"] = best["paper_model"]
        if best_diffs:
            board.at[i, "ref_note"] = "; ".join(best_diffs)
            continue
        prefix = "last" if best.get("selection") == "last" else "test"
        board.at[i, "ref_auc"] = float(best["auc"])
        board.at[i, "ref_acc"] = float(best["acc"])
        board.at[i, "delta_auc"] = row.get(f"{prefix}_auc_mean") - float(best["auc"])
        board.at[i, "delta_acc"] = row.get(f"{prefix}_acc_mean") - float(best["acc"])
        which = "last-epoch" if prefix == "last" else "best-validation"
        board.at[i, "ref_note"] = f"matches the paper's protocol (Δ on the {which} weights)"
    return board
