"""Entries of the experiments ledger (`experiments/EXPERIMENTS.md`), read back.

`train.ledger` writes one entry per run: a `## title (ISO time)` heading and
`###` sections, with a `metric | value` table under `### Results`. People add
entries by hand in looser forms (bullet lists); those are kept as text, with
whatever the Results table gives, so the page can show and link every entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from actors.reporting.readers import Notes, number, read_text

_HEADING = re.compile(r"^## (?!#)(.*)$", re.M)
_TRAILING_TIME = re.compile(r"\s*\((\d{4}-\d\d-\d\dT[\d:]+Z?)\)\s*$")
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


@dataclass
class LedgerEntry:
    index: int               # position in the file, 0-based: the page's anchor
    title: str
    time: str | None         # the ISO time in the heading, when there is one
    text: str                # the whole entry, heading included
    results: dict[str, str] = field(default_factory=dict)  # the Results table, metric -> value

    @property
    def anchor(self) -> str:
        return f"ledger-{self.index}"

    @property
    def run_name(self) -> str:
        """The first word of the title: the spec name ('003_scaled') for entries train.run wrote."""
        return re.split(r"[\s:—–]+", self.title.strip(), maxsplit=1)[0]

    def metric(self, name: str) -> float | None:
        return number(self.results.get(name))


def _table(section: str) -> dict[str, str]:
    out = {}
    for line in section.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|")):
            continue
        cells = [c.strip().replace("\\|", "|").replace("\\\\", "\\") for c in _UNESCAPED_PIPE.split(line[1:-1])]
        if len(cells) >= 2 and not set(cells[0]) <= set("-: ") and cells[0] not in ("metric", "key"):
            out[cells[0]] = cells[1]
    return out


def _section(entry: str, name: str) -> str:
    m = re.search(rf"^### {re.escape(name)}\s*$(.*?)(?=^### |\Z)", entry, re.M | re.S)
    return m.group(1) if m else ""


def read_ledger(path: Path, notes: Notes | None = None) -> list[LedgerEntry]:
    """Every `## ` entry of the ledger, oldest first; [] when the file is missing."""
    text = read_text(path, notes)
    if not text:
        return []
    starts = [m.start() for m in _HEADING.finditer(text)]
    entries = []
    for i, start in enumerate(starts):
        body = text[start: starts[i + 1] if i + 1 < len(starts) else len(text)].rstrip()
        heading = body.splitlines()[0][3:].strip()
        m = _TRAILING_TIME.search(heading)
        title, when = (heading[: m.start()], m.group(1)) if m else (heading, None)
        entries.append(LedgerEntry(i, title.strip(), when, body, _table(_section(body, "Results"))))
    return entries


def entries_for(entries: list[LedgerEntry], run_name: str) -> list[LedgerEntry]:
    """The entries whose title starts with `run_name` ('003_scaled'), oldest first."""
    return [e for e in entries if e.run_name == run_name]
