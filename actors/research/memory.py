"""What the AutoResearch loop remembers, on disk: `results.tsv` and `notes.md`.

Both files live in the research repository, untracked (listed in
`.git/info/exclude`), so that `git reset --hard` after a discard never touches
them. What the loop decides from them is in `actors.research.rules`.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from actors.research.rules import (
    COLUMNS,
    DEAD_END_DISCARDS,
    PLATEAU_EXPERIMENTS,
    PLATEAU_MIN_GAIN,
    ResearchLogError,
    ResultRow,
    dead_ends,
    needs_structural_change,
    standing,
)

RESULTS_FILE = "results.tsv"
NOTES_FILE = "notes.md"
NOTES_SECTIONS = ("Best Known Config", "Dead Ends", "What Works", "Ideas Queue", "Experiment Log")


def read_results(path: Path) -> list[ResultRow]:
    """The rows of results.tsv, oldest first ([] when the file does not exist)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = list(reader)
    if not rows:
        return []
    header = tuple(rows[0])
    if header != COLUMNS:
        raise ResearchLogError(f"{path}: header is {'/'.join(header)}, expected {'/'.join(COLUMNS)}")
    out = []
    for lineno, cells in enumerate(rows[1:], start=2):
        if not any(cells):
            continue
        if len(cells) != len(COLUMNS):
            raise ResearchLogError(f"{path}:{lineno}: {len(cells)} cells, expected {len(COLUMNS)}")
        d = dict(zip(COLUMNS, cells))
        try:
            out.append(ResultRow(
                n=int(d["n"]), commit=d["commit"],
                val_bpb=float(d["val_bpb"]) if d["val_bpb"] else None,
                artifact_mb=float(d["artifact_mb"]) if d["artifact_mb"] else None,
                status=d["status"], kind=d["kind"], direction=d["direction"],
                description=d["description"], reasoning=d["reasoning"],
            ))
        except ValueError as exc:
            raise ResearchLogError(f"{path}:{lineno}: {exc}") from None
    return out


def append_result(path: Path, row: ResultRow) -> None:
    """Append one row (writing the header first for a new file), flushed to disk."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8", newline="") as f:
        if new:
            f.write("\t".join(COLUMNS) + "\n")
        f.write("\t".join(row.cells()) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- notes.md


@dataclass
class LogEntry:
    """One experiment's entry in notes.md's Experiment Log."""

    n: int
    title: str
    status: str
    commit: str
    reasoning: str
    analysis: str

    def render(self) -> str:
        return (f"### {self.n}. {self.title} ({self.status}, {self.commit[:10]})\n\n"
                f"{self.reasoning.strip()}\n\n{self.analysis.strip()}\n")


def _section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return m.group(1).strip("\n") if m else ""


def read_notes(path: Path) -> tuple[list[str], str]:
    """(ideas queue, experiment log text) from an existing notes.md."""
    if not path.exists():
        return [], ""
    text = path.read_text(encoding="utf-8")
    ideas = [line[2:].strip() for line in _section(text, "Ideas Queue").splitlines()
             if line.startswith("- ") and not line.startswith("- (")]
    return ideas, _section(text, "Experiment Log").strip()


def render_notes(*, branch: str, file: str, rows: list[ResultRow], ideas: list[str], log_text: str,
                 cap_bytes: int) -> str:
    s = standing(rows)
    dead = dead_ends(rows)
    lines = [f"# AutoResearch notes: `{branch}`", "",
             f"Research file `{file}`; goal: lowest val_bpb with the artifact under {cap_bytes:,} bytes.",
             "This file and results.tsv are untracked (.git/info/exclude); the loop rewrites the sections "
             "above the Experiment Log after every experiment.", ""]

    lines += ["## Best Known Config", ""]
    if s.best_commit is None:
        lines.append("- (no completed run yet)")
    else:
        art = next((r.artifact_mb for r in reversed(rows) if r.commit == s.best_commit and r.artifact_mb), None)
        lines.append(f"- commit `{s.best_commit[:10]}`: val_bpb {s.best_bpb:.4f}"
                     + (f", artifact {art:.3f} MB" if art else "") + f" ({s.best_description})")
        if s.baseline_bpb is not None:
            lines.append(f"- baseline val_bpb {s.baseline_bpb:.4f} (runs: "
                         + ", ".join(f"{v:.4f}" for v in s.baseline_runs)
                         + f"); noise floor {s.noise_floor:.4f}")
        if s.head_commit and s.head_commit != s.best_commit:
            lines.append(f"- branch head `{s.head_commit[:10]}` is at val_bpb {s.head_bpb:.4f}")
    lines.append("")

    lines += ["## Dead Ends", ""]
    if dead:
        for d, ns in dead.items():
            lines.append(f"- {d}: {DEAD_END_DISCARDS} discards in a row (experiments "
                         + ", ".join(str(n) for n in ns) + "); change direction")
    else:
        lines.append("- (none yet)")
    lines.append("")

    lines += ["## What Works", ""]
    kept = []
    head = s.baseline_bpb
    for r in rows:
        if r.kind == "baseline":
            continue
        if r.status == "keep" and r.val_bpb is not None:
            delta = f"{r.val_bpb - head:+.4f}" if head is not None else "n/a"
            kept.append(f"- {r.n}. {r.description}: val_bpb {r.val_bpb:.4f} ({delta})")
            head = r.val_bpb
        elif r.status == "backtrack":
            head = r.val_bpb
    lines += kept or ["- (nothing kept yet)"]
    if needs_structural_change(rows):
        lines.append(f"- the last {PLATEAU_EXPERIMENTS} experiments each gained less than {PLATEAU_MIN_GAIN}: "
                     "the next one must be a structural change")
    lines.append("")

    lines += ["## Ideas Queue", ""]
    lines += [f"- {i}" for i in ideas] or ["- (empty)"]
    lines.append("")

    lines += ["## Experiment Log", ""]
    if log_text.strip():
        lines.append(log_text.strip())
        lines.append("")
    return "\n".join(lines)
