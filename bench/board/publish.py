"""Publishing a leaderboard: the files of one study from a board, and every published study
rebuilt from the runs committed with it.

A published study is ``results/<name>/``: its CSVs and pages, and ``runs/``, an ordinary run
store holding the record, the per-sample val/test predictions and the curve of every run it
aggregates (no weights). ``results/studies.yaml`` lists the studies and how each is published;
:func:`publish_all` rebuilds every page and CSV from those runs alone, so a published number is
re-derivable from the repository. Rows whose runs were lost before runs were committed are kept
from ``legacy.csv`` only until runs of the same model replace them, marked on the page as "runs
not in the repository" with the commit that produced them; nothing is fabricated.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench.board import board_from_records
from bench.board.aggregate import rank
from bench.board.compare import compare_all, matrix_of, rank_test
from bench.board.notes import render_notes
from bench.board.outputs import write_csv, write_outputs, write_provenance
from bench.board.robustness import robustness_table, summary_table
from bench.board.select import select_records
from bench.errors import ConfigError
from bench.io import atomic_write_text
from bench.records import RunFiles, RunRecord, RunStore
from bench.stats import cd_diagram
from bench.toolkit import BOOTSTRAP_RESAMPLES

MANIFEST = "studies.yaml"
RUNS = "runs"
LEGACY = "legacy.csv"
# what a committed run keeps: its record, per-sample predictions, curve, per-case examples
COMMITTED_FILES = ("record.json", "predictions_val.csv", "predictions_test.csv", "history.csv")
COMMITTED_EXTRA = ("test_cases.npz",)
LEGACY_KEY = ("dataset", "model", "scheme", "ensemble", "cv_folds")


@dataclass
class StudyOptions:
    """How one study is published (an entry of ``results/studies.yaml``)."""

    name: str
    datasets: list[str] | None = None
    where: list[str] = field(default_factory=list)
    # studies whose committed runs this one reads (default: its own)
    stores: list[str] | None = None
    models: list[str] | None = None
    # cross-validation runs: None any, False none (the official split), True only them
    cv: bool | None = None
    reference: bool = False
    ensembles: bool = False
    compare_all: bool = False
    rank_test: bool = False
    metric: str | None = None
    notes: str | None = None
    recipe: str | None = None
    # on the cross-data-set page (a size study repeats rows of its data set's own study)
    cross_dataset: bool = True
    n_boot: int = BOOTSTRAP_RESAMPLES
    seed: int = 0


def read_manifest(results_dir: Path) -> list[StudyOptions]:
    """The studies of ``results_dir/studies.yaml``, in page order."""
    path = Path(results_dir) / MANIFEST
    if not path.exists():
        raise ConfigError(f"{path} not found; --publish-all rebuilds the studies listed there")
    entries = yaml.safe_load(path.read_text()) or {}
    known = set(StudyOptions.__dataclass_fields__)
    studies = []
    for name, opts in entries.items():
        unknown = set(opts or {}) - known
        if unknown:
            raise ConfigError(f"{path}: study {name} has unknown keys {sorted(unknown)}")
        studies.append(StudyOptions(name=name, **(opts or {})))
    return studies


def study_records(results_dir: Path, study: StudyOptions) -> list[RunRecord]:
    """The finished and unfinished records of the study's committed stores, selected."""
    records = []
    for store in study.stores or [study.name]:
        root = Path(results_dir) / store / RUNS
        if root.is_dir():
            records += RunStore(root).iter_records()[0]
    records = select_records(records, None, study.where) if records else records
    if study.datasets:
        records = [r for r in records if r.dataset in study.datasets]
    if study.models:
        records = [r for r in records if r.model in study.models]
    if study.cv is not None:
        records = [r for r in records if bool(r.cv) == study.cv]
    return records


def _legacy_keys(table: pd.DataFrame) -> list[tuple[str, ...]]:
    """(dataset, model, scheme, ensemble, cv folds) of each row, blanks for absent values."""

    def text(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return str(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)

    return [tuple(text(row.get(k)) for k in LEGACY_KEY) for row in table.to_dict("records")]


def merge_legacy(table: pd.DataFrame, legacy: Path, metric: str | None) -> pd.DataFrame:
    """``table`` plus the rows of ``legacy`` whose (dataset, model, scheme, ensemble, CV) no
    run-backed row has, marked ``runs_in_repo=False`` with their ``runs_commit``; re-ranked."""
    table = table.copy()
    table["runs_in_repo"] = True
    if not Path(legacy).exists():
        return table
    old = pd.read_csv(legacy)
    have = set(_legacy_keys(table))
    kept = old[[k not in have for k in _legacy_keys(old)]].copy()
    if kept.empty:
        return table
    kept["runs_in_repo"] = False
    drop = ["rank", "rank_by"]
    merged = pd.concat(
        [table.drop(columns=drop, errors="ignore"), kept.drop(columns=drop, errors="ignore")],
        ignore_index=True,
    )
    merged.attrs = dict(table.attrs)
    return rank(merged, metric)


def legacy_comparison(table: pd.DataFrame, legacy: Path, metric: str | None) -> pd.DataFrame:
    """Each legacy row (single runs, not ensembles) that runs in the repository now replace:
    both means and standard deviations of ``metric`` and ACC, their difference and the seed
    spread (the larger std); ``agree_<metric>`` when the difference is within that spread. This
    is how a page says, from its CSVs, whether a retrained row (another file or commit) agrees."""
    if not Path(legacy).exists():
        return pd.DataFrame()
    metric = metric or "test_auc"
    old = pd.read_csv(legacy)
    backed = table[table.get("runs_in_repo", True).astype(str).str.lower().ne("false")]
    now = dict(zip(_legacy_keys(backed), backed.to_dict("records"), strict=True))
    rows = []
    for key, before in zip(_legacy_keys(old), old.to_dict("records"), strict=True):
        after = now.get(key)
        if after is None or str(before.get("ensemble")).lower() == "true":
            continue
        row = {"dataset": before["dataset"], "model": before["model"], "scheme": before["scheme"]}
        row |= {"legacy_commit": before.get("runs_commit"), "legacy_runs": before.get("n_runs")}
        row["runs"] = after.get("n_runs")
        for m in (metric, "test_acc"):
            lo, hi = before.get(f"{m}_mean"), after.get(f"{m}_mean")
            spread = np.nanmax([before.get(f"{m}_std", np.nan), after.get(f"{m}_std", np.nan)])
            row |= {f"legacy_{m}_mean": lo, f"legacy_{m}_std": before.get(f"{m}_std")}
            row |= {f"{m}_mean": hi, f"{m}_std": after.get(f"{m}_std")}
            row |= {f"diff_{m}": hi - lo, f"seed_spread_{m}": spread}
            row[f"agree_{m}"] = bool(abs(hi - lo) <= spread)
        rows.append(row)
    return pd.DataFrame(rows)


@contextlib.contextmanager
def publish_lock(out: Path):
    """Hold ``out``'s publication lock (flock): two publications into one folder take turns,
    so its files always come from one of them, never from both."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".publish.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_study(
    table: pd.DataFrame,
    board,
    study: StudyOptions,
    out: Path,
    argv: list[str],
    readme: bool = True,
) -> list[Path]:
    """A study's files from its board: leaderboard CSV/Markdown, per data set and per class,
    the Holm-corrected comparisons, the rank test, robustness tables and (``readme``) the
    provenance README with its notes; the notes are printed. Under the folder's publication
    lock; the per-data-set and comparison files of an earlier publication are removed first."""
    with publish_lock(out):
        for sub in ("by_dataset", "compare"):
            shutil.rmtree(out / sub, ignore_errors=True)
        return _write_study(table, board, study, out, argv, readme)


def _write_study(table, board, study, out, argv, readme) -> list[Path]:
    written = write_outputs(table, out, board.records)
    notes: list[str] = []
    legacy = table.get("runs_in_repo", pd.Series(True, index=table.index)).astype(str)
    backed = table[legacy.str.lower().ne("false")]  # rows with runs: what paired tests read
    if study.compare_all and not board.runs.empty:
        for ds, pairs in compare_all(
            board.runs, backed, study.metric, study.n_boot or 1000, study.seed
        ).items():
            written.append(write_csv(out / "compare" / f"{ds}.csv", pairs))
            matrix = matrix_of(pairs)
            path = out / "compare" / f"{ds}_p_holm.csv"
            atomic_write_text(path, matrix.to_csv(float_format="%.4g"))
            sig = int(pairs["significant"].sum())
            notes.append(f"{ds}: {sig} of {len(pairs)} pairs differ at Holm-adjusted p < 0.05")
    if study.rank_test:
        test = rank_test(table, study.metric or "test_auc")
        notes.append(test.note)
        if test.ran:
            ranks = test.ranks.rename("mean_rank").reset_index()
            written.append(write_csv(out / "friedman_ranks.csv", ranks))
            atomic_write_text(out / "nemenyi.csv", test.nemenyi.to_csv(float_format="%.4g"))
            written.append(cd_diagram(test, out / "cd_diagram.png"))
    robust = [r for r in board.records.values() if (r.evaluations or {}).get("robustness")]
    if robust:
        robustness_table(robust).to_csv(out / "robustness.csv", index=False, float_format="%.5g")
        summary = summary_table(robust)
        summary.to_csv(out / "robustness_summary.csv", index=False, float_format="%.5g")
    if len(backed) < len(table):
        notes.append(
            "rows marked † are kept from `legacy.csv`: their runs are not in the repository "
            "(trained before runs were committed; `runs_commit` names the commit); they leave "
            "the table when runs of the same model are added"
        )
    for n in notes:
        print(n)
    if readme:
        narrative = render_notes(Path(study.notes).read_text(), out) if study.notes else None
        written.append(
            write_provenance(out, argv, table, study.recipe, notes, board.records, narrative)
        )
    return written


def publish_study(results_dir: Path, study: StudyOptions, argv: list[str]) -> list[Path]:
    """Rebuild one study's files from its committed runs (and its legacy rows)."""
    out = Path(results_dir) / study.name
    records = study_records(results_dir, study)
    board = board_from_records(
        records, study.metric, study.reference, study.n_boot, None, study.seed, study.ensembles
    )
    table = merge_legacy(board.table, out / LEGACY, study.metric)
    if table.empty:
        raise ConfigError(
            f"study {study.name}: no finished runs in {out / RUNS} and no legacy rows"
        )
    _clear_generated(out)
    retrained = legacy_comparison(table, out / LEGACY, study.metric)
    if not retrained.empty:
        write_csv(out / RETRAINED, retrained)
    return write_study(table, board, study, out, argv)


RETRAINED = "legacy_vs_retrained.csv"
GENERATED = (
    RETRAINED,
    "per_class.csv",
    "robustness.csv",
    "robustness_summary.csv",
    "friedman_ranks.csv",
    "nemenyi.csv",
    "cd_diagram.png",
)


def _clear_generated(out: Path) -> None:
    """What a study's publication writes is rewritten whole: no file of an earlier publication
    (of other runs) stays behind beside the new ones."""
    for name in GENERATED:
        (out / name).unlink(missing_ok=True)


def add_runs(sources: list[Path], study_dir: Path, datasets: list[str] | None = None) -> list[str]:
    """Copy the finished runs of ``sources`` (run stores) into ``study_dir/runs``: record,
    predictions and curve (never weights). Returns the run ids added or refreshed."""
    dest = Path(study_dir) / RUNS
    added = []
    for source in sources:
        if not Path(source).is_dir():
            raise ConfigError(f"--add-runs {source}: no such run store")
        for r in RunStore(source).iter_records()[0]:
            if not r.done or (datasets and r.dataset not in datasets):
                continue
            target = dest / r.run_id
            target.mkdir(parents=True, exist_ok=True)
            files = RunFiles(Path(r.dir))
            for name in (*COMMITTED_FILES, *COMMITTED_EXTRA):
                src = files.dir / name
                if src.exists():
                    shutil.copy2(src, target / name)
            added.append(r.run_id)
    return added
