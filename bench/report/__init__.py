"""An interactive, self-contained HTML dashboard from run records, with a page per run.

    bench-report --runs-dir runs --out report.html

One offline file: the charts are Plotly (its JavaScript inlined once; hover, zoom, click a
legend entry to hide a series), every table sorts by a click on its header, a filter bar hides
other datasets and models, and every run id opens that run's page (an anchor in the same file:
config, its difference from the other runs of its row and from the row's leader, learning
curves, per-class table, confusion matrix, ROC, reliability diagram, robustness heat map,
Grad-CAM, paths). The numbers are those of ``bench-leaderboard``: the same aggregation
(:func:`bench.board.board_from_records`, same bootstrap) feeds both. Any run store renders:
classification, segmentation, 2D, 3D or mixed, failed and interrupted runs listed; a section that
cannot be drawn says why in one line instead of stopping the report.

The package: ``page`` assembles (templates ``page.html.j2``, ``run_page.html.j2``, macros in
``kit.html.j2``; CSS and JavaScript in ``static/``), ``overview`` and ``evaluation`` draw the
sections, ``run_page`` a run's page, ``analysis`` computes (no HTML), ``readers`` open a run
folder, ``kit`` is the HTML kit.
"""

from bench.report.analysis import pareto_front
from bench.report.page import build_report, run

__all__ = ["build_report", "pareto_front", "run"]
