"""Study notes with their figures read from the study's CSVs, never typed.

A notes file (``scripts/study_notes/<study>.md``) is Markdown with placeholders::

    {{leaderboard.csv | model=resnet50, ensemble=False | delta_auc | +.3f}}

= the ``delta_auc`` cell of the one row of ``results/<study>/leaderboard.csv`` whose ``model`` is
``resnet50`` and ``ensemble`` is False, formatted with ``+.3f`` (``train_time_s/60``: a cell
divided by a number, for a change of unit). Paths are relative to the
study folder (``../reference/medmnist_v2.csv`` reaches the paper's table). A filter that matches
no row or several rows is an error, so a page cannot silently quote the wrong row.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from bench.errors import ConfigError
from bench.io import atomic_write_text

PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")


def _matches(series: pd.Series, want: str) -> pd.Series:
    text = series.astype(str)
    if want in ("True", "False"):
        return text.str.lower() == want.lower()
    return text == want


def cell(study_dir: Path, spec: str, cache: dict[Path, pd.DataFrame] | None = None) -> str:
    """The formatted value one placeholder names (see the module docstring)."""
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) != 4:
        raise ConfigError(
            f"notes placeholder {{{{{spec}}}}}: write {{{{file | k=v, ... | column | fmt}}}}"
        )
    name, filters, column, fmt = parts
    path = (study_dir / name).resolve()
    cache = {} if cache is None else cache
    if path not in cache:
        if not path.exists():
            raise ConfigError(f"notes placeholder {{{{{spec}}}}}: {path} does not exist")
        cache[path] = pd.read_csv(path, comment="#")
    df = cache[path]
    rows = df
    for cond in [c.strip() for c in filters.split(",") if c.strip()]:
        key, _, want = cond.partition("=")
        if key not in rows:
            raise ConfigError(f"notes placeholder {{{{{spec}}}}}: {name} has no column {key!r}")
        rows = rows[_matches(rows[key], want)]
    if len(rows) != 1:
        raise ConfigError(
            f"notes placeholder {{{{{spec}}}}}: {len(rows)} rows of {name} match; "
            "add filters until exactly one does"
        )
    column, _, divisor = column.partition("/")  # train_time_s/60: a unit change, nothing else
    column = column.strip()
    if column not in rows:
        raise ConfigError(f"notes placeholder {{{{{spec}}}}}: {name} has no column {column!r}")
    value = rows.iloc[0][column]
    if divisor:
        value = float(value) / float(divisor)
    return format(value, fmt) if fmt else str(value)


def render_notes(template: str, study_dir: Path) -> str:
    """``template`` with every placeholder replaced by its CSV cell."""
    cache: dict[Path, pd.DataFrame] = {}
    return PLACEHOLDER.sub(lambda m: cell(Path(study_dir), m.group(1), cache), template)


def replace_notes(readme: Path, rendered: str) -> None:
    """Put freshly rendered notes into an existing study README (between the provenance lines
    and ``## Leaderboard``), leaving the generated tables as they are."""

    text = readme.read_text()
    first = rendered.strip().splitlines()[0]
    start, end = text.find(first), text.find("\n## Leaderboard")
    if start < 0 or end < 0 or end < start:
        raise ConfigError(
            f"{readme}: cannot find the notes section (starting {first!r}) before ## Leaderboard"
        )
    atomic_write_text(readme, text[:start] + rendered.strip() + "\n" + text[end:])
