"""The "Research" section: what the AutoResearch loop did in one repository.

It reads what the loop leaves in the repository: `results.tsv` (columns by
name, so columns added later are read as they come and missing ones show as
"-"), `notes.md` (its Dead Ends section), and `.autoresearch/` (the branch the
top-level files belong to, other branches' parked files, run logs). From the
rows it works out the keeps and what each gained over the kept head before it,
the best val_bpb, and, where the file has them, p-values, held-out scores (the
gap between the selection score and the held-out one) and researchers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from actors.reporting.readers import Notes, first_column, number, read_table, read_text
from actors.research.memory import NOTES_FILE, RESULTS_FILE

STATE_DIR = ".autoresearch"  # the loop's own folder in the repository (actors.research.workspace)

# Column names read from results.tsv; each list holds the spellings accepted.
P_VALUE_COLUMNS = ("p_value", "pvalue", "p")
HELDOUT_COLUMNS = ("heldout_bpb", "held_out_bpb", "heldout_val_bpb", "val_bpb_heldout", "heldout", "held_out")
RESEARCHER_COLUMNS = ("researcher", "researcher_id", "agent")


@dataclass
class ResearchRow:
    n: int | None
    commit: str
    val_bpb: float | None
    artifact_mb: float | None
    status: str
    kind: str
    direction: str
    description: str
    researcher: str | None
    p_value: float | None
    heldout_bpb: float | None
    gain: float | None = None  # for a keep: the kept head's val_bpb before it minus this one's
    log: Path | None = None    # the run's log under .autoresearch/logs/<tag>/, when it is there

    @property
    def is_baseline(self) -> bool:
        return self.kind == "baseline" or self.status == "baseline"

    @property
    def gap(self) -> float | None:
        """Held-out minus selection score: how much selection flattered this commit."""
        if self.heldout_bpb is None or self.val_bpb is None:
            return None
        return self.heldout_bpb - self.val_bpb


@dataclass
class ResearcherSummary:
    name: str
    experiments: int = 0
    keeps: int = 0
    discards: int = 0
    crashes: int = 0
    best_bpb: float | None = None


@dataclass
class Branch:
    name: str
    results: Path
    notes_path: Path | None
    rows: list[ResearchRow] = field(default_factory=list)
    dead_ends: list[str] = field(default_factory=list)
    baseline_bpb: float | None = None
    noise_floor: float | None = None
    best_bpb: float | None = None
    best_commit: str | None = None
    plot: str | None = None          # file name of the progress plot, beside index.html
    logs: Path | None = None

    @property
    def experiments(self) -> list[ResearchRow]:
        return [r for r in self.rows if not r.is_baseline and r.status != "backtrack"]

    @property
    def keeps(self) -> list[ResearchRow]:
        return [r for r in self.rows if r.status == "keep" and not r.is_baseline]

    @property
    def has_p_values(self) -> bool:
        return any(r.p_value is not None for r in self.rows)

    @property
    def has_heldout(self) -> bool:
        return any(r.heldout_bpb is not None for r in self.rows)

    @property
    def researchers(self) -> list[ResearcherSummary]:
        """Per researcher; empty when results.tsv has no researcher column."""
        if not any(r.researcher for r in self.rows):
            return []
        out: dict[str, ResearcherSummary] = {}
        for r in self.experiments:
            s = out.setdefault(r.researcher or "-", ResearcherSummary(r.researcher or "-"))
            s.experiments += 1
            s.keeps += r.status == "keep"
            s.discards += r.status == "discard"
            s.crashes += r.status == "crash"
            if r.status == "keep" and r.val_bpb is not None and (s.best_bpb is None or r.val_bpb < s.best_bpb):
                s.best_bpb = r.val_bpb
        return sorted(out.values(), key=lambda s: s.name)


@dataclass
class ResearchSection:
    repo: Path | None
    branches: list[Branch] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)


def _cell(row: dict[str, str], *names: str) -> str:
    col = first_column(row, *names)
    return row[col].strip() if col is not None and row[col] is not None else ""


def parse_rows(table: list[dict[str, str]]) -> list[ResearchRow]:
    rows = []
    for d in table:
        if not _cell(d, "status"):
            continue  # a row still being appended (no status yet)
        n = _cell(d, "n")
        rows.append(ResearchRow(
            n=int(n) if n.isdigit() else None, commit=_cell(d, "commit"),
            val_bpb=number(_cell(d, "val_bpb")), artifact_mb=number(_cell(d, "artifact_mb")),
            status=_cell(d, "status").lower(), kind=_cell(d, "kind").lower(),
            direction=_cell(d, "direction"), description=_cell(d, "description"),
            researcher=_cell(d, *RESEARCHER_COLUMNS) or None,
            p_value=number(_cell(d, *P_VALUE_COLUMNS)), heldout_bpb=number(_cell(d, *HELDOUT_COLUMNS)),
        ))
    return rows


def standing(branch: Branch) -> None:
    """Baseline, noise floor, the best val_bpb, and each keep's gain over the kept
    head before it (the baseline mean first; a backtrack row resets the head)."""
    base = [r.val_bpb for r in branch.rows if r.is_baseline and r.val_bpb is not None]
    if base:
        branch.baseline_bpb = sum(base) / len(base)
        branch.noise_floor = max(base) - min(base)
    head = branch.baseline_bpb
    candidates = [(branch.baseline_bpb, next((r.commit for r in branch.rows if r.is_baseline), None))] if base else []
    for r in branch.rows:
        if r.is_baseline:
            continue
        if r.status == "keep":
            if head is not None and r.val_bpb is not None:
                r.gain = head - r.val_bpb
            head = r.val_bpb if r.val_bpb is not None else head
            candidates.append((r.val_bpb, r.commit))
        elif r.status == "backtrack":
            head = r.val_bpb if r.val_bpb is not None else head
    scored = [(v, c) for v, c in candidates if v is not None]
    if scored:
        branch.best_bpb, branch.best_commit = min(scored, key=lambda vc: vc[0])


def dead_ends(notes_text: str | None) -> list[str]:
    """The bullet lines of notes.md's Dead Ends section, placeholders left out."""
    if not notes_text:
        return []
    m = re.search(r"^## Dead Ends\s*$(.*?)(?=^## |\Z)", notes_text, re.M | re.S)
    if not m:
        return []
    return [line[2:].strip() for line in m.group(1).splitlines()
            if line.startswith("- ") and not line[2:].strip().startswith("(")]


def _attach_logs(rows: list[ResearchRow], logs: Path) -> None:
    """The loop names its logs baseline-<i>.log and <NNN>.log (the experiment number)."""
    baseline = 0
    for r in rows:
        if r.is_baseline:
            baseline += 1
            name = f"baseline-{baseline}.log"
        elif r.n is not None:
            name = f"{r.n:03d}.log"
        else:
            continue
        if (logs / name).is_file():
            r.log = logs / name


def _branch(name: str, folder: Path, logs: Path | None, notes: Notes) -> Branch:
    results = folder / RESULTS_FILE
    notes_path = folder / NOTES_FILE
    branch = Branch(name, results, notes_path if notes_path.is_file() else None, logs=logs)
    branch.rows = parse_rows(read_table(results, "\t", notes))
    if logs is not None:
        _attach_logs(branch.rows, logs)
    branch.dead_ends = dead_ends(read_text(notes_path, notes))
    standing(branch)
    return branch


def research_section(repo: Path | None) -> ResearchSection:
    """Every branch the loop has results for in `repo`: the one checked out first."""
    section = ResearchSection(repo)
    if repo is None:
        return section
    if not repo.is_dir():
        section.notes.add(f"no research repository at {repo}")
        return section
    state = repo / STATE_DIR
    current = (read_text(state / "current") or "").strip() or "(checked out)"
    tag = current.rsplit("/", 1)[-1]
    logs = state / "logs" / tag
    if (repo / RESULTS_FILE).is_file():
        section.branches.append(_branch(current, repo, logs if logs.is_dir() else None, section.notes))
    parked = state / "branches"
    for folder in sorted(parked.iterdir()) if parked.is_dir() else []:
        if (folder / RESULTS_FILE).is_file():
            name = folder.name.replace("__", "/")
            logs = state / "logs" / name.rsplit("/", 1)[-1]
            section.branches.append(_branch(name, folder, logs if logs.is_dir() else None, section.notes))
    if not section.branches:
        section.notes.add(f"{repo} has no {RESULTS_FILE} yet: the loop has not finished a run there")
    return section
