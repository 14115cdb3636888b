"""The report page: the overview's sections in order, one inert page per run, the figures and
the page's script, assembled by ``page.html.j2``; ``bench-report``'s body."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from bench.board import Board, board_from_records
from bench.errors import ConfigError
from bench.io import atomic_write_text
from bench.records import RunRecord, RunStore, now_iso
from bench.report import evaluation, kit, overview
from bench.report.kit import Page
from bench.report.run_page import not_drawn_page, run_page
from bench.toolkit import BOOTSTRAP_RESAMPLES

log = logging.getLogger(__name__)


def _section(title: str, render: Callable[[], str]) -> str:
    try:
        body = render()
    except Exception as e:  # one broken section must not cost the whole report
        log.warning("report section %r not drawn: %s", title, e)
        body = kit.note(f"not drawn: {type(e).__name__}: {e}")
    return kit.section(title, body) if body else ""


def _sections(board: Board, records: list[RunRecord], page: Page) -> list[tuple[str, Callable]]:
    """The overview's sections, in page order: (title, renderer)."""
    return [
        ("Across datasets", lambda: overview.cross_dataset_section(board)),
        ("Leaderboard", lambda: overview.leaderboard_section(board)),
        ("Learning curves", lambda: overview.curves_section(board, page)),
        ("Accuracy vs cost", lambda: overview.cost_section(board, page)),
        ("Per-run spread", lambda: overview.spread_section(board, page)),
        ("Data efficiency", lambda: overview.fraction_section(board, page)),
        ("ROC curves (every seed)", lambda: evaluation.seed_curves_section(board, page, "roc")),
        (
            "Calibration (reliability, every seed)",
            lambda: evaluation.seed_curves_section(board, page, "calibration"),
        ),
        (
            "Selective prediction (risk-coverage, every seed)",
            lambda: evaluation.seed_curves_section(board, page, "selective"),
        ),
        ("Confusion matrices (seeds summed)", lambda: evaluation.confusion_section(board, page)),
        ("Robustness", lambda: evaluation.robustness_section(records, page)),
        ("Segmentation cases", lambda: evaluation.cases_section(board, page)),
        ("Cross-validation folds", lambda: overview.cv_section(board)),
        ("Hyperparameter search", lambda: evaluation.search_section(records, page)),
    ]


def _run_pages(records: list[RunRecord], board: Board, page: Page) -> str:
    pages = []
    for r in records:
        try:
            pages.append(kit.inert(r.run_id, run_page(r, board, page)))
        except Exception as e:  # one run's page must not cost the report
            log.warning("page of run %s not drawn: %s", r.run_id, e)
            pages.append(kit.inert(r.run_id, not_drawn_page(r, e)))
    return "".join(pages)


def build_report(runs_dir: str, out: str, title: str = "medbench report") -> Path:
    """Write the self-contained HTML report of the run store ``runs_dir`` to ``out``."""
    records, problems = RunStore(runs_dir).iter_records()
    page = Page()
    board = board_from_records(records, n_boot=BOOTSTRAP_RESAMPLES)
    body = []
    if not board.empty:
        body += [_section(title_, render) for title_, render in _sections(board, records, page)]
    elif records:
        body.append(kit.note("no finished runs yet: nothing to rank"))
    if records:
        body.append(kit.section("Runs", overview.runs_table(records)))
    counts = pd.Series([r.status for r in records], dtype=object).value_counts().to_dict()
    html_page = kit.render(
        "page.html.j2",
        title=title,
        css=Markup(kit.static("report.css")),
        datasets=sorted({str(r.dataset) for r in records}),
        models=sorted({str(r.model) for r in records}),
        n_records=len(records),
        runs_dir=runs_dir,
        generated=now_iso(),
        counts=", ".join(f"{v} {k}" for k, v in counts.items()),
        problems="; ".join(problems),
        overview=Markup("".join(body)),
        run_pages=Markup(_run_pages(records, board, page)),
        figures=Markup(page.scripts()),
        plotly_js=Markup(get_plotlyjs()),
        script=Markup(kit.static("report.js")),
    )
    path = Path(out)
    atomic_write_text(path, html_page)
    return path


def run(args) -> int:
    """The body of ``bench-report`` (its options: :mod:`bench.commands.report`)."""
    if not Path(args.runs_dir).is_dir():
        raise ConfigError(f"run store {args.runs_dir} does not exist; run bench-train first")
    path = build_report(args.runs_dir, args.out, args.title)
    print(f"wrote {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")
    return 0
