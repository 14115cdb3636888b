"""The cross-data-set page (``results/README.md``): the design card's models on every published
study, read from the studies' own leaderboard CSVs (so runs trained on other machines count).

2D classification: data set x model (test AUC mean ± std over seeds, rank per data set), mean
rank, Friedman's test and the Nemenyi critical-difference diagram; the 3D and segmentation
tables below. Every figure comes from a ``results/<study>/leaderboard.csv`` by code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.board.outputs import mean_std, write_csv
from bench.board.publish import MANIFEST, read_manifest, study_records
from bench.errors import ConfigError
from bench.io import atomic_write_text
from bench.records import now_iso
from bench.stats import RankTest, cd_diagram, friedman_nemenyi, paired_wilcoxon_holm

# (model, scheme) of the records -> the name the design card (and the paper) give it
CARD_MODELS = {
    ("bccnn", "scratch"): "BCCNN",
    ("resnet50", "scratch"): "ResNet50",
    ("xception", "scratch"): "Xception",
    ("mobilenet", "scratch"): "MobileNetV2",
    ("resnet18", "scratch-smallstem"): "ResNet-18 (28)",
    ("resnet50", "scratch-smallstem"): "ResNet-50 (28)",
}
PAPER_MODELS = ("ResNet-18 (28)", "ResNet-50 (28)")


@dataclass
class CrossTables:
    """The long table of study rows and the pieces of the page."""

    rows: pd.DataFrame
    matrix: pd.DataFrame  # 2D data sets x card models: test AUC mean
    ranks: pd.DataFrame  # same shape: rank per data set (1 = best)
    mean_rank: pd.Series
    test: RankTest


def _cross_studies(results_dir: Path) -> set[str] | None:
    """The studies the manifest puts on this page (None without a manifest: every folder)."""
    if not (Path(results_dir) / MANIFEST).exists():
        return None
    return {s.name for s in read_manifest(results_dir) if s.cross_dataset}


def study_rows(results_dir: Path) -> pd.DataFrame:
    """Per-seed-averaged rows (no ensembles, no cross-validation) of every study folder (of
    the manifest's studies on this page, when ``studies.yaml`` is there)."""
    frames: dict[str, pd.DataFrame] = {}
    chosen = _cross_studies(results_dir)
    for csv in sorted(Path(results_dir).glob("*/leaderboard.csv")):
        if chosen is not None and csv.parent.name not in chosen:
            continue
        df = pd.read_csv(csv)
        df = df[~df["ensemble"].astype(str).str.lower().eq("true")]
        if "cv_folds" in df:
            df = df[df["cv_folds"].isna()]
        if df.empty:
            continue
        frames[csv.parent.name] = df.copy()  # consolidated: the row filters fragment it
    if not frames:
        raise ConfigError(
            f"{results_dir} holds no <study>/leaderboard.csv; publish studies first "
            "(make publish or bench-leaderboard --publish)"
        )
    # the study name as a key of the concatenation: no column inserted into each frame
    rows = pd.concat(frames, names=["study", None]).reset_index(level=0).reset_index(drop=True)
    rows["label"] = [
        CARD_MODELS.get((m, s), f"{m}" + ("" if s == "scratch" else f" ({s})"))
        for m, s in zip(rows["model"], rows["scheme"], strict=True)
    ]
    rows["volumetric"] = rows["dataset"].str.contains("3d")
    if "runs_in_repo" not in rows:
        rows["runs_in_repo"] = True
    rows["runs_in_repo"] = rows["runs_in_repo"].astype(str).str.lower().ne("false")
    return rows


def shown_rows(tables: CrossTables) -> pd.DataFrame:
    """The row behind each cell of the 2D table (the best of a data set x model's rows)."""
    rows = tables.rows.sort_values("test_auc_mean", ascending=False)
    return rows.drop_duplicates(["dataset", "label"])


def per_seed_values(results_dir: Path, tables: CrossTables, metric: str = "test_auc"):
    """(data set, seed) x card model: the per-seed test metric of the runs behind each cell,
    read from the studies' committed records (cells of legacy rows have none)."""
    shown = shown_rows(tables)
    wanted = {(r.dataset, str(r.config_id)): r.label for r in shown.itertuples() if r.runs_in_repo}
    cells = []
    for study in read_manifest(results_dir):
        if not study.cross_dataset:
            continue
        for rec in study_records(results_dir, study):
            label = wanted.get((rec.dataset, str(rec.config_id)))
            value = rec.test.get(metric.removeprefix("test_")) if rec.done else None
            if label is not None and value is not None:
                cells.append({"dataset": rec.dataset, "seed": rec.seed, label: value})
    if not cells:
        return pd.DataFrame()
    frame = pd.DataFrame(cells).groupby(["dataset", "seed"]).first()
    order = [m for m in CARD_MODELS.values() if m in frame.columns]
    return frame[order]


def cross_tables(rows: pd.DataFrame, metric: str = "test_auc") -> CrossTables:
    """Data set x card model on the 2D classification studies, ranks and the rank test."""
    col = f"{metric}_mean"
    two_d = rows[(rows["kind"] == "classification") & ~rows["volumetric"]]
    two_d = two_d[two_d["label"].isin(CARD_MODELS.values())]
    matrix = two_d.pivot_table(index="dataset", columns="label", values=col, aggfunc="max")
    order = [m for m in CARD_MODELS.values() if m in matrix.columns]
    matrix = matrix[order]
    ranks = matrix.rank(axis=1, ascending=False, method="average")
    mean_rank = ranks.mean().sort_values()
    complete = matrix.dropna(axis=1, how="any")  # Friedman needs every model on every set
    test = friedman_nemenyi(complete, metric, always=True)
    return CrossTables(two_d, matrix, ranks, mean_rank, test)


def _link(study: str, dataset: str) -> str:
    return f"[{dataset}]({study}/README.md)"


def render(
    tables: CrossTables,
    rows: pd.DataFrame,
    cd_png: str | None,
    command: str,
    wilcoxon: pd.DataFrame | None = None,
) -> str:
    """The Markdown of ``results/README.md``."""
    t = tables
    lines = [
        "# medbench results across data sets",
        "",
        f"Generated {now_iso()} by `{command}` from the studies' `leaderboard.csv` files; "
        "no figure on this page is typed by hand. Each data set links to its study page "
        "(protocol, hardware, provenance, per-row caveats).",
        "",
        "## 2D classification: the design card's models",
        "",
        "Test AUC of the best-validation weights, mean ± std over seeds, and its rank on the data "
        "set (1 = best; ties share the average rank). Empty: not run (the study page lists "
        "why and what it costs).",
        "",
    ]
    header = ["data set", *t.matrix.columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ds in t.matrix.index:
        sub = t.rows[t.rows["dataset"] == ds]
        cells = [_link(sub["study"].iloc[0], ds)]
        for label in t.matrix.columns:
            hit = sub[sub["label"] == label]
            if hit.empty:
                cells.append("")
                continue
            r = hit.sort_values("test_auc_mean", ascending=False).iloc[0]
            mark = "" if r["runs_in_repo"] else " †"
            cells.append(f"{mean_std(r, 'test_auc')} ({t.ranks.loc[ds, label]:g}){mark}")
        lines.append("| " + " | ".join(cells) + " |")
    mean_cells = [f"{t.mean_rank[c]:.2f}" if c in t.mean_rank else "" for c in t.matrix.columns]
    counts = [str(int(t.matrix[c].notna().sum())) for c in t.matrix.columns]
    lines += [
        "| **mean rank** | " + " | ".join(mean_cells) + " |",
        "| data sets | " + " | ".join(counts) + " |",
        "",
        f"Mean rank is over the data sets a model ran on (the `data sets` row). "
        f"{PAPER_MODELS[0]} and {PAPER_MODELS[1]} are the MedMNIST v2 paper's networks "
        "(small stem); ResNet50 is timm's standard ImageNet layout. † marks a cell whose runs "
        "are not in the repository (a legacy row of its study: trained before runs were "
        "committed; the study page names its commit).",
        "",
        f"**Friedman / Nemenyi** over the models run on every 2D set "
        f"({', '.join(t.test.matrix.columns) or 'none'}): {t.test.note}.",
    ]
    if cd_png:
        lines += ["", f"![critical-difference diagram]({cd_png})"]
    lines += ["", *_significance_lines(t.test), *_wilcoxon_lines(wilcoxon)]
    lines += ["", *_other_tables(rows)]
    return "\n".join(lines) + "\n"


def _significance_lines(test: RankTest, alpha: float = 0.05) -> list[str]:
    """What the Nemenyi post-hoc says, pair by pair, and what it cannot say at this size."""
    if not test.ran:
        return []
    nem = test.nemenyi
    models = list(nem.columns)
    pairs = [(a, b, float(nem.loc[a, b])) for i, a in enumerate(models) for b in models[i + 1 :]]
    sig = [f"{a} vs {b} (p = {p:.3f})" for a, b, p in pairs if p < alpha]
    floor = test.min_p if test.min_p is not None else float("nan")
    out = [
        f"Nemenyi, pairs with p < {alpha}: {'; '.join(sig) if sig else 'none'} "
        f"(of {len(pairs)} pairs; nemenyi.csv). With {test.matrix.shape[0]} data sets "
        f"the smallest p Friedman's test can give over these {len(models)} models is "
        f"{floor:.4f}.",
        "",
    ]
    return out


def _wilcoxon_lines(table: pd.DataFrame | None) -> list[str]:
    """The seed-aware test: Wilcoxon signed-rank over (data set, seed) pairs, Holm-corrected."""
    if table is None or table.empty:
        return []
    out = [
        "**Wilcoxon signed-rank over (data set, seed) pairs**, Holm-corrected over the pairs "
        "(as MedMNIST+ compares models; wilcoxon.csv). Each cell pairs the two models' test "
        "AUC on the same data set and seed; legacy cells (†) have no per-seed records and "
        "are not in it.",
        "",
        "| A | B | pairs | mean Δ AUC (A − B) | A better | p | p (Holm) | smallest possible p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        out.append(
            f"| {r.a} | {r.b} | {r.n_pairs} | {r.mean_diff:+.4f} | {r.wins_a} of {r.n_pairs} | "
            f"{r.p:.4f} | {r.p_holm:.4f} | {r.min_possible_p:.4f} |"
        )
    sig = [f"{r.a} vs {r.b}" for r in table.itertuples() if r.significant]
    unreachable = [f"{r.a} vs {r.b}" for r in table.itertuples() if r.min_possible_p >= 0.05]
    out += [
        "",
        f"Significant after Holm at 0.05: {'; '.join(sig) if sig else 'none'}."
        + (
            f" Pairs with fewer than 6 matched cells cannot reach 0.05 at all: "
            f"{'; '.join(unreachable)}."
            if unreachable
            else ""
        ),
        "",
    ]
    return out


def _row_table(
    title: str, rows: pd.DataFrame, metric: str, columns: dict[str, str], params: bool
) -> list[str]:
    """One Markdown table of study rows, best ``metric`` first per data set; ``columns``: header
    -> metric whose mean ± std the column shows; ``params``: a parameter-count column."""
    if rows.empty:
        return []
    header = ["data set", "model", "seeds", *columns, *(["params (M)"] if params else [])]
    header.append("train min/run")
    out = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in rows.sort_values(["dataset", f"{metric}_mean"], ascending=False).iterrows():
        cells = [_link(r["study"], r["dataset"]), str(r["label"]), str(int(r["n_seeds"]))]
        cells += [mean_std(r, m) for m in columns.values()]
        cells += [f"{r['param_count_m']:.2f}"] if params else []
        cells.append(f"{r['train_time_s'] / 60:.1f}")
        out.append("| " + " | ".join(cells) + " |")
    return [*out, ""]


def _other_tables(rows: pd.DataFrame) -> list[str]:
    volumes = rows[(rows["kind"] == "classification") & rows["volumetric"]]
    segmentation = rows[rows["kind"] == "segmentation"]
    return [
        *_row_table(
            "3D classification",
            volumes,
            "test_auc",
            {"test AUC": "test_auc", "test ACC": "test_acc"},
            params=True,
        ),
        *_row_table(
            "Segmentation",
            segmentation,
            "test_dice",
            {"test Dice": "test_dice", "HD95": "test_hd95", "surface Dice": "test_nsd"},
            params=False,
        ),
    ]


def publish_cross(results_dir: Path, command: str, rank_test: bool = True) -> list[Path]:
    """Write ``results/README.md``, ``cross_dataset.csv``, ``mean_ranks.csv`` and the CD diagram."""
    results_dir = Path(results_dir)
    rows = study_rows(results_dir)
    tables = cross_tables(rows)
    written = [
        write_csv(
            results_dir / "cross_dataset.csv",
            tables.rows[["dataset", "study", "label", "model", "scheme", "epochs", "n_seeds"]]
            .assign(
                test_auc_mean=tables.rows["test_auc_mean"],
                test_auc_std=tables.rows["test_auc_std"],
                rank=[
                    tables.ranks.loc[d, lab]
                    for d, lab in zip(tables.rows["dataset"], tables.rows["label"], strict=True)
                ],
            )
            .sort_values(["dataset", "rank"]),
        ),
        write_csv(
            results_dir / "mean_ranks.csv",
            pd.DataFrame(
                {
                    "label": tables.mean_rank.index,
                    "mean_rank": tables.mean_rank.to_numpy(),
                    "n_datasets": [
                        int(tables.matrix[c].notna().sum()) for c in tables.mean_rank.index
                    ],
                }
            ),
        ),
    ]
    png = None
    if rank_test and tables.test.ran:
        nemenyi = results_dir / "nemenyi.csv"
        atomic_write_text(nemenyi, tables.test.nemenyi.to_csv(float_format="%.4g"))
        written.append(nemenyi)
        # the test's own figures, so the page quotes a CSV for them too
        t = tables.test
        friedman = pd.DataFrame(
            [
                {
                    "metric": t.metric,
                    "n_datasets": t.matrix.shape[0],
                    "n_models": t.matrix.shape[1],
                    "models": ";".join(t.matrix.columns),
                    "chi2": t.statistic,
                    "p": t.friedman_p,
                    "min_possible_p": t.min_p,
                }
            ]
        )
        written.append(write_csv(results_dir / "friedman.csv", friedman))
        png = cd_diagram(tables.test, results_dir / "cd_diagram.png")
    if png:
        written.append(png)
    wilcoxon = None
    if (results_dir / MANIFEST).exists():
        values = per_seed_values(results_dir, tables)
        if not values.empty:
            wilcoxon = paired_wilcoxon_holm(values)
            written.append(write_csv(results_dir / "wilcoxon.csv", wilcoxon))
    readme = results_dir / "README.md"
    text = render(tables, rows, png.name if png else None, command, wilcoxon)
    atomic_write_text(readme, text)
    written.append(readme)
    return written
