"""What the AutoResearch loop remembers: `results.tsv`, `notes.md`, and the rules
read off them.

Both files live in the research repository, untracked (listed in
`.git/info/exclude`), so that `git reset --hard` after a discard never touches
them. Everything the loop decides from its history (the kept head, the best
commit, the noise floor, dead ends, the call for a structural change) is a pure
function of the rows in `results.tsv`: that is what makes `--resume` exact.

Rows, oldest first. `n` is the experiment number (0 for the two baseline runs);
`status` is keep, discard, crash or backtrack; `kind` is baseline, tweak,
structural or simplification; `direction` names what the change pushes on
(e.g. ``LEARNING_RATE up``) so that three discards in a row in one direction
can be recognised.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_FILE = "results.tsv"
NOTES_FILE = "notes.md"
COLUMNS = ("n", "commit", "val_bpb", "artifact_mb", "status", "kind", "direction", "description", "reasoning")
STATUSES = ("keep", "discard", "crash", "backtrack")
KINDS = ("baseline", "tweak", "structural", "simplification")
EXPERIMENT_STATUSES = ("keep", "discard", "crash")

DEAD_END_DISCARDS = 3  # discards in a row in one direction make it a dead end
PLATEAU_EXPERIMENTS = 5  # this many experiments ...
PLATEAU_MIN_GAIN = 0.001  # ... each gaining less than this call for a structural change

NOTES_SECTIONS = ("Best Known Config", "Dead Ends", "What Works", "Ideas Queue", "Experiment Log")


class ResearchLogError(ValueError):
    """results.tsv or notes.md cannot be read back."""


def _one_line(text: str) -> str:
    """A TSV cell: tabs and newlines would break the row, so they become ' | '."""
    parts = [p.strip() for p in re.split(r"[\t\r\n]+", str(text or "")) if p.strip()]
    return " | ".join(parts)


@dataclass
class ResultRow:
    n: int
    commit: str
    val_bpb: float | None
    artifact_mb: float | None
    status: str
    kind: str = "tweak"
    direction: str = ""
    description: str = ""
    reasoning: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ResearchLogError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.kind not in KINDS:
            raise ResearchLogError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def is_experiment(self) -> bool:
        return self.kind != "baseline" and self.status in EXPERIMENT_STATUSES

    def cells(self) -> list[str]:
        def num(v, fmt):
            return "" if v is None or not math.isfinite(v) else format(v, fmt)

        return [str(self.n), self.commit, num(self.val_bpb, ".8f"), num(self.artifact_mb, ".6f"), self.status,
                self.kind, _one_line(self.direction), _one_line(self.description), _one_line(self.reasoning)]


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
    import os

    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8", newline="") as f:
        if new:
            f.write("\t".join(COLUMNS) + "\n")
        f.write("\t".join(row.cells()) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- rules


@dataclass
class Standing:
    """Where the research stands after a sequence of rows."""

    head_commit: str | None = None  # the kept head: the commit the branch must point at
    head_bpb: float | None = None
    best_commit: str | None = None
    best_bpb: float | None = None
    best_description: str = ""
    noise_floor: float | None = None
    baseline_bpb: float | None = None
    baseline_runs: list[float] = field(default_factory=list)
    experiments: int = 0  # highest experiment number seen
    gains: list[float] = field(default_factory=list)  # per experiment: how much it lowered the kept head


def standing(rows: list[ResultRow]) -> Standing:
    s = Standing()
    for r in rows:
        if r.kind == "baseline":
            if r.val_bpb is not None:
                s.baseline_runs.append(r.val_bpb)
            s.head_commit = r.commit
            if s.baseline_runs:
                s.baseline_bpb = sum(s.baseline_runs) / len(s.baseline_runs)
                s.head_bpb = s.baseline_bpb
                s.noise_floor = max(s.baseline_runs) - min(s.baseline_runs)
                if s.best_bpb is None or s.head_bpb < s.best_bpb or s.best_commit == r.commit:
                    s.best_commit, s.best_bpb, s.best_description = r.commit, s.head_bpb, "baseline"
            continue
        s.experiments = max(s.experiments, r.n)
        gain = 0.0
        if r.status == "keep":
            before = s.head_bpb
            s.head_commit, s.head_bpb = r.commit, r.val_bpb
            if r.val_bpb is not None and (s.best_bpb is None or r.val_bpb < s.best_bpb):
                s.best_commit, s.best_bpb, s.best_description = r.commit, r.val_bpb, r.description
            if before is not None and r.val_bpb is not None:
                gain = before - r.val_bpb
        elif r.status == "backtrack":
            s.head_commit, s.head_bpb = r.commit, r.val_bpb
            continue
        if r.kind == "structural":
            # A structural attempt answers the call: the plateau count starts again after it.
            gain = math.inf
        s.gains.append(gain)
    return s


def dead_ends(rows: list[ResultRow]) -> dict[str, list[int]]:
    """Directions whose last DEAD_END_DISCARDS experiments were all discarded or crashed.

    Returns {direction: the experiment numbers that made it one}."""
    by_direction: dict[str, list[ResultRow]] = {}
    for r in rows:
        if r.is_experiment and r.direction:
            by_direction.setdefault(normalise_direction(r.direction), []).append(r)
    out = {}
    for d, rs in by_direction.items():
        last = rs[-DEAD_END_DISCARDS:]
        if len(last) == DEAD_END_DISCARDS and all(r.status in ("discard", "crash") for r in last):
            out[d] = [r.n for r in last]
    return out


def normalise_direction(direction: str) -> str:
    return " ".join(str(direction).lower().split())


def needs_structural_change(rows: list[ResultRow]) -> bool:
    """True when the last PLATEAU_EXPERIMENTS experiments each gained < PLATEAU_MIN_GAIN."""
    gains = standing(rows).gains
    last = gains[-PLATEAU_EXPERIMENTS:]
    return len(last) == PLATEAU_EXPERIMENTS and all(g < PLATEAU_MIN_GAIN for g in last)


def regressed(s: Standing) -> bool:
    """True when the kept head is worse than the best kept commit by more than the noise floor."""
    if s.head_bpb is None or s.best_bpb is None or s.head_commit == s.best_commit:
        return False
    return s.head_bpb - s.best_bpb > (s.noise_floor or 0.0)


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


def row_dict(row: ResultRow) -> dict:
    return asdict(row)
