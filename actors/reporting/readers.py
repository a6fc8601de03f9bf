"""Tolerant readers for the files the report shows.

The report reads files other parts of the system write, often while they are
being written, and their formats grow columns and fields over time. So every
reader here takes what it finds: a missing file, a missing field or an extra
column is normal (the page shows "-"), and a file that cannot be parsed becomes
a note on the page instead of an exception. Columns are read by name, never by
position.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any


class Notes(list):
    """What the report could not read, in words, shown at the top of its section."""

    def add(self, message: str) -> None:
        if message not in self:
            self.append(message)


def read_text(path: Path, notes: Notes | None = None) -> str | None:
    """The file's text (undecodable bytes replaced), or None when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        if notes is not None:
            notes.add(f"cannot read {path}: {exc.strerror or exc}")
        return None


def read_json_object(path: Path, notes: Notes | None = None) -> dict | None:
    """A JSON object from `path`, or None (missing, unreadable, not JSON, not an object)."""
    text = read_text(path, notes)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if notes is not None:
            notes.add(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})")
        return None
    if not isinstance(data, dict):
        if notes is not None:
            notes.add(f"{path} holds a JSON {type(data).__name__}, not an object")
        return None
    return data


def read_table(path: Path, delimiter: str, notes: Notes | None = None) -> list[dict[str, str]]:
    """The rows of a CSV/TSV file with a header, as {column: cell}; [] when missing.

    A short row gets empty cells, a long row's extra cells are dropped: a file
    being appended to may end in half a row."""
    text = read_text(path, notes)
    if not text:
        return []
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    out = []
    for cells in rows[1:]:
        if not any(c.strip() for c in cells):
            continue
        cells = cells + [""] * (len(header) - len(cells))
        out.append(dict(zip(header, cells)))
    return out


def number(value: Any) -> float | None:
    """A finite float from a JSON value or a table cell, else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]... or None where any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def first_column(row: dict[str, str], *names: str) -> str | None:
    """The first of `names` that is a column of `row` (names compared without case,
    '_', '-' or spaces), or None."""
    wanted = {_norm(n) for n in names}
    for column in row:
        if _norm(column) in wanted:
            return column
    return None


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())
