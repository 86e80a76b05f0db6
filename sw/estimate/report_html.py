"""The report page: ``templates/report.html.j2`` rendered with Jinja2 (autoescaped: layer
names and file paths are text, never markup). The page's one inline script sets
``document.body.dataset.imagesOk`` once every image has loaded with a non-zero size (what the
headless-browser test checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["render_html"]

TEMPLATES = Path(__file__).with_name("templates")


def _fmt(v: Any, spec: str = "") -> str:
    """A table cell: empty for None, else ``format(v, spec)``."""
    if v is None:
        return ""
    return format(v, spec) if spec else str(v)


def render_html(rec: dict[str, Any]) -> str:
    """The HTML page of a report record (``report.json``'s content)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = _fmt
    return env.get_template("report.html.j2").render(r=rec)
