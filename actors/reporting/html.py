"""HTML for the report: Jinja2 with autoescaping on, and the filters its template uses.

Everything the page shows from an experiment's files (titles, notes, reasons,
descriptions, file names) can hold anything, `<script>` included; autoescaping
makes each of them text. The template never marks such a value `|safe`, and
links are built by `href`, which turns a path into a relative URL with every
character that could start a scheme or leave the attribute percent-encoded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

import jinja2

from actors.reporting.readers import number


def dash(value) -> str:
    return "-" if value is None or value == "" else str(value)


def num(value, fmt: str = ".4f") -> str:
    """A number in `fmt`, or "-" for a missing one."""
    if value is None or isinstance(value, bool):
        return "-"
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def sig(value, digits: int = 4) -> str:
    """A table cell that holds a number, to `digits` significant digits; other text as it is."""
    x = number(value)
    return dash(value) if x is None else f"{x:.{digits}g}"


def usd(value, digits: int = 2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def age(ts: float | None, now: float | None = None) -> str:
    """'3m 20s ago'-style text for a Unix time."""
    if ts is None:
        return "-"
    s = max(0, int((time.time() if now is None else now) - ts))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s ago"
    return f"{s // 3600}h {s % 3600 // 60:02d}m ago"


def make_env(out_dir: Path) -> jinja2.Environment:
    """The environment for a page written to `out_dir`: links are relative to it."""
    out_dir = out_dir.resolve()

    def href(path) -> str:
        if path is None:
            return "#"
        rel = os.path.relpath(Path(path).resolve(), out_dir)
        # quote() encodes ':' too, so a name like 'javascript:x' stays a relative path.
        return quote(Path(rel).as_posix(), safe="/")

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("actors.reporting", "templates"),
        autoescape=True,  # every {{ value }} is escaped, whatever the file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(dash=dash, num=num, sig=sig, usd=usd, when=when, age=age, href=href)
    return env
