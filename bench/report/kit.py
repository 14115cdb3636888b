"""The report's HTML kit: the Jinja2 environment over the package's templates, the macros of
``kit.html.j2`` as Python functions, and :class:`Page`, which collects the page's figures.

HTML travels between the report's modules as ``str`` built only by these functions (or the
templates), so every value from a record is escaped once, by Jinja2's autoescaping; a body
handed back to a template is marked safe here and nowhere else.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from plotly.colors import qualitative
from plotly.utils import PlotlyJSONEncoder

PALETTE = qualitative.Plotly + qualitative.D3


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("bench.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=False,
        lstrip_blocks=False,
    )


def static(name: str) -> str:
    """A package data file of ``bench/report/static`` (the page's CSS and JavaScript)."""
    return files("bench.report").joinpath("static", name).read_text()


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def _macros():
    return environment().get_template("kit.html.j2").module


def _safe(text: str) -> str:
    """JSON or HTML inside a script tag must not close it."""
    return text.replace("</", "<\\/")


def table(
    df: pd.DataFrame,
    left: tuple[str, ...] = (),
    row_class: str | None = None,
    row_attrs: list[dict] | None = None,
    links: dict[str, list[str]] | None = None,
) -> str:
    """A sortable table; ``links[col]`` gives each row's anchor target for that column."""
    rows = [list(r) for r in df.itertuples(index=False, name=None)]
    classes = [str(v) for v in df[row_class]] if row_class else None
    return str(_macros().table(list(df.columns), rows, left, classes, row_attrs, links))


def note(text: str) -> str:
    return str(_macros().note(text))


def per_dataset(dataset: str, body: str, title: str | None = None, aside: str | None = None) -> str:
    """A block the dataset filter shows or hides, headed by the dataset (or ``title``)."""
    return str(_macros().per_dataset(dataset, Markup(body), title, aside))


def heading(text: str, body: str) -> str:
    return str(_macros().heading(text, Markup(body)))


def png(data_b64: str, alt: str, caption: str | None = None) -> str:
    """An inline PNG (base64), with a caption as a figure."""
    return str(_macros().png(data_b64, alt, caption))


def section(title: str, body: str) -> str:
    return str(_macros().section(title, Markup(body)))


def run_anchor(run_id: str) -> str:
    return f"run-{run_id}"


def inert(run_id: str, page_html: str) -> str:
    """A run page as unparsed text; the page's script builds it when the run is opened."""
    return str(_macros().inert(run_anchor(run_id), Markup(_safe(page_html))))


class Page:
    """Collects the page's figures (Plotly JSON, drawn on demand by the page's script)."""

    def __init__(self) -> None:
        self.figures: dict[str, str] = {}

    def plot(self, fig: go.Figure, height: int = 360) -> str:
        """A placeholder div; the figure's JSON goes into its own script tag, parsed only when
        the chart is drawn (a 200-run page does not parse every chart at load)."""
        key = f"f{len(self.figures)}"
        fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 40, "b": 50})
        self.figures[key] = json.dumps(fig.to_plotly_json(), cls=PlotlyJSONEncoder)
        return str(_macros().plot(key))

    def scripts(self) -> str:
        """The figures' JSON, one script tag each, and the shared template once."""
        template = json.dumps(pio.templates["plotly_white"].to_plotly_json(), cls=PlotlyJSONEncoder)
        macros = _macros()
        tags = [macros.json_script("template", Markup(_safe(template)))]
        tags += [macros.json_script(f"fig-{k}", Markup(_safe(v))) for k, v in self.figures.items()]
        return "".join(str(t) for t in tags)
