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
from analysis.files import atomic_write_text

RESULTS_FILE = "results.tsv"
PLOT_FILE = "progress.png"
REQUIRED = ("commit", "val_bpb", "artifact_mb", "status", "description")
NOTES_FILE = "notes.md"
NOTES_SECTIONS = ("Best Known Config", "Held-out Check", "Dead Ends", "What Works", "Ideas Queue", "Experiment Log")


def _cell(d: dict[str, str], name: str, cast, default=None):
    v = d.get(name, "")
    return cast(v) if v != "" else default


def read_results(path: Path) -> list[ResultRow]:
    """The rows of results.tsv, oldest first ([] when the file does not exist).
    Columns are read by name: a file written before a column existed still reads."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = list(reader)
    if not rows:
        return []
    header = tuple(rows[0])
    unknown = [c for c in header if c not in COLUMNS]
    if unknown or not set(REQUIRED) <= set(header):
        raise ResearchLogError(f"{path}: header is {'/'.join(header)}, expected {'/'.join(COLUMNS)}")
    out = []
    for lineno, cells in enumerate(rows[1:], start=2):
        if not any(cells):
            continue
        if len(cells) != len(header):
            raise ResearchLogError(f"{path}:{lineno}: {len(cells)} cells, expected {len(header)}")
        d = dict(zip(header, cells))
        try:
            out.append(ResultRow(
                n=_cell(d, "n", int, 0), commit=d["commit"], val_bpb=_cell(d, "val_bpb", float),
                artifact_mb=_cell(d, "artifact_mb", float), status=d["status"], kind=d.get("kind") or "tweak",
                direction=d.get("direction", ""), description=d.get("description", ""),
                reasoning=d.get("reasoning", ""), researcher=d.get("researcher", ""),
                seed=_cell(d, "seed", int), runs=_cell(d, "runs", int), p_value=_cell(d, "p_value", float),
                base=d.get("base", ""), fingerprint=d.get("fingerprint", ""),
                holdout_bpb=_cell(d, "holdout_bpb", float),
            ))
        except ValueError as exc:
            raise ResearchLogError(f"{path}:{lineno}: {exc}") from None
    if "seed" not in header:
        # Written before seeds were recorded: each baseline row and each decision was one run.
        baselines = 0
        for r in out:
            if r.kind == "baseline":
                baselines += 1
                r.seed = baselines
            elif r.status in ("keep", "discard", "crash"):
                r.seed = 1
    return out


def append_result(path: Path, row: ResultRow) -> None:
    """Append one row (writing the header first for a new file), flushed to disk.
    A file with an older header is rewritten in today's columns first."""
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, encoding="utf-8") as f:
            header = tuple(f.readline().rstrip("\n").split("\t"))
        if header != COLUMNS:
            rows = read_results(path)
            atomic_write_text(path, "\t".join(COLUMNS) + "\n" + "".join("\t".join(r.cells()) + "\n" for r in rows))
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


def _runs(s, commit: str) -> str:
    values = s.runs.get(commit, [])
    return f"{len(values)} seed" + ("s" if len(values) != 1 else "")


def render_notes(*, branch: str, file: str, rows: list[ResultRow], ideas: list[str], log_text: str,
                 cap_bytes: int, protected: list[str] | None = None) -> str:
    s = standing(rows)
    dead = dead_ends(rows)
    lines = [f"# AutoResearch notes: `{branch}`", "",
             f"Research file `{file}`; goal: lowest val_bpb with the artifact under {cap_bytes:,} bytes."
             + (f" Protected (never changed): {', '.join(f'`{p}`' for p in protected)}." if protected else ""),
             "This file and results.tsv are untracked (.git/info/exclude) and shared by every researcher; "
             "the sections above the Experiment Log are rewritten after every result.", ""]

    lines += ["## Best Known Config", ""]
    if s.head_commit is None or s.head_bpb is None:
        lines.append("- (no completed run yet)")
    else:
        art = next((r.artifact_mb for r in reversed(rows) if r.commit == s.head_commit and r.artifact_mb), None)
        what = "baseline" if s.head_commit == s.baseline_commit else s.decided_description(s.head_commit)
        lines.append(f"- commit `{s.head_commit[:10]}` (branch `{branch}`): val_bpb {s.head_bpb:.4f} over "
                     f"{_runs(s, s.head_commit)}" + (f", artifact {art:.3f} MB" if art else "") + f" ({what})")
        if s.baseline_bpb is not None:
            lines.append(f"- baseline val_bpb {s.baseline_bpb:.4f} (seeds: "
                         + ", ".join(f"{v:.4f}" for v in s.baseline_runs) + ")"
                         + (f"; seed-to-seed noise {s.noise}" if s.noise else ""))
            if s.noise is not None and s.noise.sd == 0.0:
                lines.append("- the seeded runs are identical: the file ignores the seed variable, so the noise "
                             "is unmeasured and every gain counts")
        if s.best_commit and s.best_commit != s.head_commit:
            lines.append(f"- the best kept commit `{s.best_commit[:10]}` is at val_bpb {s.best_bpb:.4f}")
    if s.pending:
        lines.append("- undecided: " + "; ".join(
            f"{n}. {r.description} ({_runs(s, r.commit)} so far)" for n, r in sorted(s.pending.items())))
    lines.append("")

    lines += ["## Held-out Check", ""]
    checked = [(c, s.holdout[c]) for c in s.kept if c in s.holdout and s.holdout[c] is not None]
    if checked:
        lines.append("The held-out split is never used to select; a gap that grows from kept commit to kept "
                     "commit is overfitting by selection.")
        lines.append("")
        for c, h in checked:
            sel = s.mean(c)
            what = "baseline" if c == s.baseline_commit else s.decided_description(c)
            lines.append(f"- `{c[:10]}` ({what}): selection {sel:.4f}, held-out {h:.4f}, gap {h - sel:+.4f}")
        if len(checked) >= 2:
            first, last = checked[0][1] - s.mean(checked[0][0]), checked[-1][1] - s.mean(checked[-1][0])
            trend = "growing" if last - first > (s.noise_floor or 0.0) else "stable"
            lines.append(f"- gap {first:+.4f} at the first check, {last:+.4f} now: {trend}")
    else:
        lines.append("- (no held-out re-score yet)")
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
        if r.status == "keep" and r.is_experiment and r.val_bpb is not None:
            delta = f"{r.val_bpb - head:+.4f}" if head is not None else "n/a"
            who = f", {r.researcher}" if r.researcher else ""
            p = f", p = {r.p_value:.3g}" if r.p_value is not None else ""
            kept.append(f"- {r.n}. {r.description}: val_bpb {r.val_bpb:.4f} ({delta}{p}, "
                        f"{r.runs or 1} seed{'s' if (r.runs or 1) != 1 else ''}{who})")
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
