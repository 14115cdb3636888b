"""``cpu_fast.md``: what ``trainer=cpu_fast`` buys on this CPU and whether it is still right,
every figure read from the speed CSVs (the roofline, the peaks, the harness at the fast setting,
the data path, the fp32 parity and the roofline of a CPU without native bf16)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.speed.tables import setting_dtype


def _fmt(v, spec: str) -> str:
    return "" if v is None or v != v else format(v, spec)


# the grid's model names -> the roofline's (the same networks)
GRID_TO_ROOFLINE = {"bccnn": "bccnn", "resnet18_ss": "resnet18_28", "mobilenet": "mobilenetv2",
                    "xception": "xception", "resnet50": "resnet50"}  # fmt: skip


def _peaks(path: Path) -> dict[tuple[str, int], float]:
    if not path.exists():
        return {}
    return {(r.dtype, int(r.threads)): float(r.gflops) for r in pd.read_csv(path).itertuples()}


def _harness_frac_peak(row, roof: pd.DataFrame, peaks: dict) -> float | None:
    """The harness's achieved training GFLOP/s over the peak of its dtype and threads."""
    name = GRID_TO_ROOFLINE.get(row.model)
    flops = roof.loc[roof["model"] == name, "gflop_per_sample_train"]
    dtype = setting_dtype(row.precision)
    peak = peaks.get((dtype, int(row.cpu_threads)))
    if flops.empty or not peak:
        return None
    return float(row.train_samples_per_sec) * float(flops.iloc[0]) / peak


def cpu_page(out: Path) -> Path | None:
    """``cpu_fast.md``: what ``trainer=cpu_fast`` buys on this CPU and whether it is still
    right, every figure read from ``cpu_roofline.csv``, ``cpu_peak.csv``,
    ``cpu_fast/speed.csv``, ``cpu_datapath.csv``, ``precision_parity.csv`` and the roofline of a
    CPU without native bf16 in ``cpu_avx2/`` (those present)."""
    roof_path = out / "cpu_roofline.csv"
    if not roof_path.exists():
        return None
    roof = pd.read_csv(roof_path)
    roof = roof[roof["error"].isna()]
    lines = _speedup_section(roof) + _harness_section(out, roof) + _outside_section(out)
    lines += _parity_section(out) + _no_bf16_section(out)
    page = out / "cpu_fast.md"
    page.write_text("\n".join(lines) + "\n")
    return page


# the roofline measured on a CPU without native bf16, where cpu_fast falls back to fp32
NO_BF16_DIR = "cpu_avx2"


def _no_bf16_section(out: Path) -> list[str]:
    """What cpu_fast trains on a CPU without native bf16: fp32, in the layout its table gives;
    the speed-up of each layout (and of emulated bf16 where measured) over fp32 NCHW."""
    roof_path, peak_path = (
        out / NO_BF16_DIR / "cpu_roofline.csv",
        out / NO_BF16_DIR / "cpu_peak.csv",
    )
    if not (roof_path.exists() and peak_path.exists()):
        return []
    roof = pd.read_csv(roof_path)
    roof = roof[roof["error"].isna() & ~roof["setting"].str.contains("compile")]
    threads = int(roof["threads"].max())
    at = roof[roof["threads"] == threads].set_index(["model", "setting"])
    peaks = pd.read_csv(peak_path)
    peaks = peaks[peaks["threads"] == threads].set_index("dtype")
    cpu = peaks.iloc[0]
    lines = [
        "",
        f"## On a CPU without native bf16 (`{NO_BF16_DIR}/cpu_roofline.csv`, "
        f"[{NO_BF16_DIR}/cpu_roofline.md]({NO_BF16_DIR}/cpu_roofline.md))",
        "",
        f"CPU: {cpu['machine']}; torch's CPU capability: {cpu.get('cpu_capability', '?')}; "
        f"native bf16: {'yes' if bool(cpu['bf16_native']) else 'no'}; GEMM peak at {threads} "
        f"threads: fp32 {peaks.loc['fp32', 'gflops']:.1f}, bf16 {peaks.loc['bf16', 'gflops']:.1f} "
        "GFLOP/s. There `trainer=cpu_fast` trains fp32 (it picks bf16 only where the CPU",
        "computes it natively) in the layout its table gives for the model; a test keeps that",
        "layout the fastest fp32 one measured here (within 5 %).",
        "",
        "| model | fp32 channels-last | bf16 (emulated) | bf16 + channels-last (emulated) | "
        "fastest fp32 layout | its × fp32 NCHW | of the fp32 peak |",
        "|---|---|---|---|---|---|---|",
    ]
    gains = []
    for model in dict.fromkeys(m for m, _ in at.index):
        cells = [_fmt(at.loc[(model, s), "train_speedup"], ".2f") if (model, s) in at.index
                 else "" for s in ("fp32_cl", "bf16", "bf16_cl")]  # fmt: skip
        best = max(
            (s for s in ("fp32", "fp32_cl") if (model, s) in at.index),
            key=lambda s: at.loc[(model, s), "train_samples_per_sec"],
        )
        gain = at.loc[(model, best), "train_speedup"]
        gains.append(gain)
        lines.append(
            f"| {model} | {' | '.join(cells)} | {'channels-last' if best == 'fp32_cl' else 'NCHW'}"
            f" | {gain:.2f} | {_fmt(at.loc[(model, best), 'train_frac_peak'], '.0%')} |"
        )
    bf16 = at[at.index.get_level_values("setting").str.startswith("bf16")]["train_speedup"]
    lines += ["", f"The fp32 fallback trains × {min(gains):.2f} to × {max(gains):.2f} as fast as "
              f"fp32 NCHW across the {len(gains)} models."]  # fmt: skip
    if not bf16.empty:
        lines.append(
            f"Emulated bf16, where measured, trains at × {bf16.min():.2f} to × {bf16.max():.2f} "
            "of fp32 NCHW: " + ("never faster, which is why the preset does not pick it here."
                                 if bf16.max() < 1 else "faster in some cells; see the table.")
        )  # fmt: skip
    return lines + _repeats_section(out / NO_BF16_DIR) + _compile_section(out / NO_BF16_DIR)


def fp32_layout_readings(folder: Path) -> pd.DataFrame:
    """Training speed of fp32 channels-last over fp32 NCHW, one row per model and roofline
    process: ``folder/cpu_roofline.csv`` and each ``folder/*/cpu_roofline.csv`` (measured in a
    process of its own), at each file's largest thread count; ``peak`` is that process's fp32
    GEMM peak, ``source`` the file's folder relative to ``folder``."""
    rows = []
    for path in [folder / "cpu_roofline.csv", *sorted(folder.glob("*/cpu_roofline.csv"))]:
        if not path.exists():
            continue
        cells = pd.read_csv(path)
        cells = cells[cells["error"].isna()]
        cells = cells[cells["threads"] == cells["threads"].max()].set_index(["model", "setting"])
        source = path.parent.relative_to(folder).as_posix()
        for model in dict.fromkeys(m for m, _ in cells.index):
            if (model, "fp32") in cells.index and (model, "fp32_cl") in cells.index:
                nchw, cl = cells.loc[(model, "fp32")], cells.loc[(model, "fp32_cl")]
                rows.append({
                    "model": model, "source": "." if source == "." else f"{source}/",
                    "peak": float(nchw["peak_gflops"]),
                    "cl_over_nchw": cl["train_speedup"] / nchw["train_speedup"],
                })  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "source", "peak", "cl_over_nchw"])


def _repeats_section(folder: Path) -> list[str]:
    """Models whose fp32 layout was measured in more than one process: each reading, and
    the layout the preset may take from them (channels-last only where every process had it
    faster)."""
    readings = fp32_layout_readings(folder)
    repeated = readings.groupby("model").filter(lambda g: len(g) > 1)
    if repeated.empty:
        return []
    sources = list(dict.fromkeys(repeated["source"]))
    head = " | ".join(f"`{s if s != '.' else 'cpu_roofline.csv'}`" for s in sources)
    lines = [
        "",
        "Measured again, each in a process of its own (this shared machine's speed drifts",
        "between processes; in brackets the fp32 GEMM peak, GFLOP/s, of the process): fp32",
        "channels-last over fp32 NCHW in training.",
        "",
        f"| model | {head} | layout for cpu_fast |",
        "|---|" + "---|" * (len(sources) + 1),
    ]
    for model, g in repeated.groupby("model", sort=False):
        by, peak = g.set_index("source")["cl_over_nchw"], g.set_index("source")["peak"]
        cells = " | ".join(f"{by[s]:.2f} ({peak[s]:.0f})" if s in by else "" for s in sources)
        if (by > 1).all():
            verdict = "channels-last (faster in every process)"
        elif (by < 1).all():
            verdict = "NCHW (faster in every process)"
        else:
            verdict = f"NCHW, the baseline (× {by.min():.2f} to × {by.max():.2f}: either way)"
        lines.append(f"| {model} | {cells} | {verdict} |")
    lines += [
        "",
        "Channels-last is taken on this CPU only where every process measured it faster; where",
        "the readings fall on both sides of 1 the layout's effect is smaller than the drift",
        "between processes, and the preset keeps the baseline, which cannot be slower than",
        "fp32 NCHW. A test holds the preset's table to this rule.",
    ]
    return lines


def _compile_section(folder: Path) -> list[str]:
    """torch.compile on this CPU: the best compiled setting of each model over its best eager
    one, from ``folder/compile/cpu_roofline.csv``."""
    path = folder / "compile" / "cpu_roofline.csv"
    if not path.exists():
        return []
    cells = pd.read_csv(path)
    cells = cells[cells["error"].isna()]
    compiled = cells["setting"].str.endswith("+compile")
    ratios = {
        col: {
            model: rows.loc[compiled[rows.index], col].max()
            / rows.loc[~compiled[rows.index], col].max()
            for model, rows in cells.groupby("model", sort=False)
        }
        for col in ("train_samples_per_sec", "infer_samples_per_sec")
    }
    train, infer = ratios["train_samples_per_sec"], ratios["infer_samples_per_sec"]
    listed = ", ".join(f"{m} × {r:.2f}" for m, r in train.items())
    page = f"{path.parent.relative_to(folder.parent).as_posix()}/cpu_roofline.md"
    lines = [
        "",
        f"`torch.compile` here ([{page}]({page}),"
        " each eager fp32 layout next to its `+compile` twin in one process): the best compiled",
        f"training setting over the best eager one: {listed}; "
        + ("compiling never speeds training up on this CPU either, so cpu_fast leaves "
           "`task.compile` off." if max(train.values()) < 1
           else "faster for some models; see the table.")
        + f" In inference (which the harness runs eagerly) × {min(infer.values()):.2f} to "
          f"× {max(infer.values()):.2f}.",
    ]  # fmt: skip
    return lines


def _speedup_section(roof: pd.DataFrame) -> list[str]:
    """The page's title and each model's training speed-up per setting, and what cpu_fast picks."""
    roof = roof[roof["error"].isna()]
    threads = int(roof["threads"].max())
    at = roof[roof["threads"] == threads].set_index(["model", "setting"])
    lines = [
        "# trainer=cpu_fast on this CPU: is it faster, and is it still right?",
        "",
        "Generated by `bench-speed parity` from the CSVs named in each table; no figure is typed.",
        "",
        f"## Training speed-up over fp32 NCHW ({threads} threads, `cpu_roofline.csv`)",
        "",
        "| model | fp32 channels-last | bf16 | bf16 + channels-last | cpu_fast picks | "
        "its fraction of peak |",
        "|---|---|---|---|---|---|",
    ]
    for model in dict.fromkeys(m for m, _ in at.index):
        cells = [_fmt(at.loc[(model, s), "train_speedup"], ".2f") if (model, s) in at.index
                 else "" for s in ("fp32_cl", "bf16", "bf16_cl")]  # fmt: skip
        best = max(
            (s for s in ("fp32", "fp32_cl", "bf16", "bf16_cl") if (model, s) in at.index),
            key=lambda s: at.loc[(model, s), "train_samples_per_sec"],
        )
        frac = at.loc[(model, best), "train_frac_peak"]
        lines.append(f"| {model} | {' | '.join(cells)} | {best} | {_fmt(frac, '.0%')} |")
    return lines


def _harness_section(out: Path, roof: pd.DataFrame) -> list[str]:
    """The harness's own epoch at the fast setting next to the raw loop, as a fraction of peak."""
    lines: list[str] = []
    grid = out / "cpu_fast" / "speed.csv"
    if grid.exists():
        g = pd.read_csv(grid, dtype={"precision": str})
        g = g[g["method"] == "harness"]
        peaks = _peaks(out / "cpu_peak.csv")
        lines += [
            "",
            "## The harness at the fast setting (`cpu_fast/speed.csv`, PneumoniaMNIST 28²)",
            "",
            "Fraction of peak: the harness's training samples/s × the model's training FLOPs",
            "per sample (`cpu_roofline.csv`) over the GEMM peak of its dtype at its thread count",
            "(`cpu_peak.csv`). Harness / raw loop: the median over repetitions of the two",
            "epoch times measured back to back in one repetition (their range in brackets).",
            "",
            "| model | precision | threads | epoch s | train samples/s | harness / raw loop "
            "| of peak |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in g.itertuples():
            frac = _harness_frac_peak(r, roof, peaks)
            lines.append(
                f"| {r.model} | {r.precision} | {r.cpu_threads} | {r.epoch_time_s:.2f} | "
                f"{r.train_samples_per_sec:.0f} | {_ratio_with_range(r)} | "
                f"{_fmt(frac, '.0%')} |"
            )
    return lines


def _outside_section(out: Path) -> list[str]:
    """What the data path and the inter-op pool cost next to the step (``cpu_datapath.csv``)."""
    path = out / "cpu_datapath.csv"
    if not path.exists():
        return []
    t = pd.read_csv(path)
    prep, inter = t[t["kind"] == "prep"], t[t["kind"] == "interop"]
    harness = prep[prep["variant"] == "fp32"]
    worst = harness.loc[harness["share_of_step"].idxmax()]
    lines = [
        "",
        "## Outside the network (`cpu_datapath.csv`, [cpu_datapath.md](cpu_datapath.md))",
        "",
        "- The harness's data path (uint8 batch to the normalised input in the model's layout)",
        f"  takes at most {worst.share_of_step:.2%} of a training step at the fast setting "
        f"({worst.model}, {worst.threads} threads, {worst.ms:.3f} ms per batch).",
        "  Converting straight to bf16 or fusing the affine cannot speed training up measurably;"
        if worst.share_of_step < 0.01
        else "  It is worth making the data path cheaper (fused or straight to bf16);",
        "  the per-path times are in the linked table.",
    ]
    if not inter.empty:
        other = inter[inter["variant"] != "interop_1"]
        spans_one = (other["step_vs_interop_1_min"] <= 1) & (other["step_vs_interop_1_max"] >= 1)
        lines += [
            "- torch's inter-op pool at every core against 1 thread: step time × "
            f"{other['step_vs_interop_1'].min():.3f} to × {other['step_vs_interop_1'].max():.3f}"
            + (
                " (medians), and for every model and thread count the range over repetitions"
                " spans 1: no effect beyond the spread between fresh processes (eager training"
                " runs its operators one after another), so the pool stays at torch's default."
                if spans_one.all()
                else "; for some model or thread count the whole range lies on one side of 1"
                " (see the linked table)."
            ),
        ]
    return lines


def _ratio_with_range(r) -> str:
    """harness/raw with the range of its per-repetition ratios, when the table has them."""
    text = _fmt(r.harness_over_raw, ".3f")
    lo, hi = getattr(r, "harness_over_raw_min", None), getattr(r, "harness_over_raw_max", None)
    if lo is not None and hi is not None and lo == lo and hi == hi and lo != hi:
        text += f" ({lo:.3f}–{hi:.3f})"
    return text


VERDICT = {"yes": "yes", "no": "NO", "pending": "pending"}


def _seeds_text(seeds) -> str:
    return "none" if seeds != seeds or seeds == "" else str(seeds).replace(";", ", ")


def _parity_section(out: Path) -> list[str]:
    """Test AUC/ACC of fp32 and cpu_fast runs side by side (``precision_parity.csv``)."""
    lines: list[str] = []
    parity_path = out / "precision_parity.csv"
    if parity_path.exists():
        p = pd.read_csv(parity_path)
        lines += [
            "",
            "## Parity with fp32 on real data (`precision_parity.csv`, test split, seeds 0-2)",
            "",
            "Parity: the difference of the means lies within the seed spread (the larger of",
            "the two standard deviations over seeds). `min/run` is the wall time the study runs",
            "took; they were trained at different times next to other work on a shared",
            "2-core machine, so it is not a speed comparison: the side-by-side tables above are.",
            "",
            "| data set | model | fp32 AUC | cpu_fast AUC | Δ AUC | seed spread | fp32 ACC | "
            "cpu_fast ACC | Δ ACC | parity | min/run fp32 → fast |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in p.itertuples():
            if r.seeds != r.seeds:  # NaN: no seed trained under both settings yet
                lines.append(f"| {r.dataset} | {r.model} |" + " |" * 8 + " pending | |")
                continue
            lines.append(
                f"| {r.dataset} | {r.model} | {r.fp32_auc_mean:.3f} ± {r.fp32_auc_std:.3f} | "
                f"{r.fast_auc_mean:.3f} ± {r.fast_auc_std:.3f} | {r.diff_auc:+.3f} | "
                f"{r.seed_spread_auc:.3f} | {r.fp32_acc_mean:.3f} | {r.fast_acc_mean:.3f} | "
                f"{r.diff_acc:+.3f} | {VERDICT[r.parity]} | "
                f"{r.fp32_train_min:.1f} → {r.fast_train_min:.1f} |"
            )
        pending = p[p["parity"] == "pending"]
        if not pending.empty:
            lines += ["", "Pending (not every seed trained under both settings, so no verdict):"]
            lines += [
                f"- {r.dataset} × {r.model}: fp32 seeds done: {_seeds_text(r.fp32_seeds_done)}; "
                f"cpu_fast seeds done: {_seeds_text(r.fast_seeds_done)}"
                for r in pending.itertuples()
            ]
            lines += [
                "",
                "`scripts/cpu_parity.sh` trains the cpu_fast side (resumable), the study's",
                "`bench-train -m experiment=medmnist_protocol` its fp32 side; `bench-speed eta`",
                "gives their hours per seed on the machine at hand.",
            ]
        held, failed = int((p["parity"] == "yes").sum()), int((p["parity"] == "no").sum())
        lines += [
            "",
            f"Parity holds for {held} of the {len(p)} pairs "
            f"({failed} fail, {len(pending)} pending).",
        ]
    return lines
