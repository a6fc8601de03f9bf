"""What one AutoResearch experiment is, and how every proposal is checked.

A `Researcher` (see `actors.research.researchers`) turns what the loop knows
(the file, program.md, results.tsv, notes.md, dead ends, whether a structural
change is due) into one `ResearchProposal`: a REASONING block, a description,
the direction it pushes in, and the change itself, either the whole new file or
a unified diff.

`apply_proposal` validates every proposal the same way whoever made it: a diff
must name only the research file (a protected file, such as the evaluation
harness, is refused by name) and apply (`git apply`), the result must be new and
must parse, a dead-end direction is refused, and a structural change is required
when the loop has called for one. The loop then refuses a change that was
already run or is running (`actors.research.fingerprint`).
"""

from __future__ import annotations

import ast
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from actors.research.changes import fingerprint
from actors.research.rules import ResultRow, normalise_direction
from actors.shared.llm import LLMError
from actors.shared.pricing import Usage

TOOL_NAME = "submit_experiment"
MAX_SOURCE_BYTES = 1_000_000  # a research file larger than this is not a training script


class ProposalRejected(LLMError):
    """A proposal that does not parse, apply or follow the loop's rules."""


class ResearchProposal(BaseModel):
    """One experiment: why, what, and the change."""

    hypothesis: str = Field(min_length=1, description="what you expect this change to do to val_bpb, and why")
    evidence: str = Field(min_length=1, description="earlier results (cite experiment numbers) that support it")
    risk: str = Field(min_length=1, description="what could go wrong (crash, over the size cap, slower steps)")
    description: str = Field(min_length=1, max_length=200, description="one line, e.g. 'MATRIX_LR 0.04 -> 0.06'")
    direction: str = Field(min_length=1, max_length=80,
                           description="the direction this pushes in, e.g. 'MATRIX_LR up' or 'deeper model'; "
                           "reuse the same words for the same direction")
    kind: Literal["tweak", "structural", "simplification"] = Field(
        description="tweak: a hyperparameter; structural: architecture, optimiser, schedule, quantisation; "
        "simplification: removes code for an equal result")
    edit_format: Literal["file", "diff"] = Field(
        description="file: `content` is the whole new file; diff: `content` is a unified diff of the file")
    content: str = Field(min_length=1)
    ideas: list[str] = Field(default_factory=list, max_length=20,
                             description="ideas for later experiments, best first (replaces the Ideas Queue)")

    def reasoning_block(self) -> str:
        return ("REASONING\n"
                f"Hypothesis: {self.hypothesis.strip()}\n"
                f"Evidence: {self.evidence.strip()}\n"
                f"Risk: {self.risk.strip()}\n")


@dataclass
class ResearchContext:
    file: str
    source: str
    program: str = ""
    results_tsv: str = ""
    notes_md: str = ""
    rows: list[ResultRow] = field(default_factory=list)
    dead_ends: dict[str, list[int]] = field(default_factory=dict)
    structural: bool = False
    noise_floor: float | None = None
    best_bpb: float | None = None
    cap_bytes: int = 16_000_000
    env: dict[str, str] = field(default_factory=dict)  # exported into every run: these names are fixed
    feedback: str = ""  # why the previous proposal was rejected, for a second try
    protected: tuple[str, ...] = ()  # files no proposal may change (the evaluation harness)
    taken: dict[str, str] = field(default_factory=dict)  # fingerprint -> what ran or runs: never again
    running: list[str] = field(default_factory=list)  # what the other researchers run now


class Researcher(Protocol):
    name: str
    can_fix_crashes: bool

    def propose(self, context: ResearchContext) -> tuple[ResearchProposal, Usage]: ...

    def fix_crash(self, context: ResearchContext, proposal: ResearchProposal,
                  log_tail: str) -> tuple[ResearchProposal, Usage]: ...


# --------------------------------------------------------------------------- validation


def _diff_paths(diff: str) -> set[str]:
    paths = set()
    for line in diff.splitlines():
        if line.startswith(("--- ", "+++ ")):
            p = line[4:].split("\t")[0].strip()
            if p == "/dev/null":
                paths.add(p)
                continue
            if p.startswith(("a/", "b/")):
                p = p[2:]
            paths.add(p)
    return paths


def apply_diff(source: str, file: str, diff: str, protected: tuple[str, ...] = ()) -> str:
    """`source` with the unified `diff` applied by `git apply` (outside any repo)."""
    paths = _diff_paths(diff)
    if not paths:
        raise ProposalRejected("the diff has no ---/+++ file headers")
    touched = sorted(p for p in paths if p in protected)
    if touched:
        raise ProposalRejected(f"the diff changes {', '.join(touched)}, which is protected (the evaluation "
                               f"harness: data and scoring); change only {file}")
    if paths != {file}:
        raise ProposalRejected(f"the diff must change only {file}; it names {', '.join(sorted(paths))}")
    with tempfile.TemporaryDirectory(prefix="autoresearch-apply-") as tmp:
        target = Path(tmp) / file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
        patch = Path(tmp) / "change.diff"
        patch.write_text(diff if diff.endswith("\n") else diff + "\n", encoding="utf-8")
        for prefix in ("-p1", "-p0"):
            proc = subprocess.run(["git", "apply", "--recount", "--whitespace=nowarn", prefix, str(patch)],
                                  cwd=tmp, capture_output=True, text=True)
            if proc.returncode == 0:
                return target.read_text(encoding="utf-8")
            err = proc.stderr.strip()
        raise ProposalRejected(f"the diff does not apply to the current {file}: {err[:400]}")


def apply_proposal(proposal: ResearchProposal, context: ResearchContext) -> str:
    """The new source the proposal makes, or ProposalRejected saying why not."""
    if proposal.edit_format == "diff":
        new = apply_diff(context.source, context.file, proposal.content, context.protected)
    else:
        new = proposal.content
    if len(new.encode()) > MAX_SOURCE_BYTES:
        raise ProposalRejected(f"the new {context.file} is {len(new.encode()):,} bytes; "
                               f"the limit for a research file is {MAX_SOURCE_BYTES:,}")
    if new == context.source:
        raise ProposalRejected(f"the proposal leaves {context.file} unchanged")
    for p in context.protected:
        # Writing a protected file at run time would change the harness behind its hash check.
        if Path(p).name in new and Path(p).name not in context.source:
            raise ProposalRejected(f"the new {context.file} names the protected file {p}; it may import the "
                                   "harness, never read or write its file")
    try:
        ast.parse(new, filename=context.file)
    except SyntaxError as exc:
        raise ProposalRejected(f"the new {context.file} does not parse: line {exc.lineno}: {exc.msg}") from None
    direction = normalise_direction(proposal.direction)
    if direction in context.dead_ends:
        raise ProposalRejected(f"direction '{proposal.direction}' is a dead end (experiments "
                               + ", ".join(str(n) for n in context.dead_ends[direction])
                               + " were discarded in a row); change direction")
    if context.structural and proposal.kind != "structural":
        raise ProposalRejected("the last experiments each gained less than 0.001 val_bpb: this one must be a "
                               "structural change (kind 'structural'), not a " + proposal.kind)
    seen = context.taken.get(fingerprint(context.source, new))
    if seen:
        raise ProposalRejected(f"this change was already run or is running ({seen}); propose a different one")
    return new
