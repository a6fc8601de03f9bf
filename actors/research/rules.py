"""The pure rules of the AutoResearch loop: the rows of its history and what is
decided from them, with no I/O.

Everything the loop decides from its history (the kept head, the best commit,
the noise floor, dead ends, the call for a structural change, keep or discard,
the ANALYSIS block) is a function of the rows of `results.tsv`: that is what
makes `--resume` exact.

Rows, oldest first. `n` is the experiment number (0 for the baseline runs);
`status` is keep, discard, crash or backtrack; `kind` is baseline, tweak,
structural or simplification; `direction` names what the change pushes on
(e.g. ``LEARNING_RATE up``) so that three discards in a row in one direction
can be recognised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

COLUMNS = ("n", "commit", "val_bpb", "artifact_mb", "status", "kind", "direction", "description", "reasoning")
STATUSES = ("keep", "discard", "crash", "backtrack")
KINDS = ("baseline", "tweak", "structural", "simplification")
EXPERIMENT_STATUSES = ("keep", "discard", "crash")

DEAD_END_DISCARDS = 3  # discards in a row in one direction make it a dead end
PLATEAU_EXPERIMENTS = 5  # this many experiments ...
PLATEAU_MIN_GAIN = 0.001  # ... each gaining less than this call for a structural change


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




# --------------------------------------------------------------------------- decisions


@dataclass
class Measurement:
    """What one run of the research file gave."""

    val_bpb: float | None
    artifact_bytes: int | None
    crashed: bool
    error: str | None
    seconds: float  # the training process's own wall time
    timed_out: bool
    steps: int | None
    log_path: str = ""
    wall_s: float = 0.0  # submit to result, Ray scheduling and transfer included
    metric_line: str = ""  # "N: text" of the log line the score was read from
    last_val_bpb: float | None = None  # what a crashed run had reached: never its result
    peak_memory_mib: float | None = None
    training_seconds: float | None = None  # as the script reports it

    @property
    def artifact_mb(self) -> float | None:
        return None if self.artifact_bytes is None else self.artifact_bytes / 1e6


def decide(m: Measurement, kind: str, s: Standing, cap_bytes: int | None) -> tuple[str, str]:
    """keep, discard or crash, and why. Kept only when val_bpb beats the kept head
    by more than the noise floor and, where the repository has an artifact limit
    (`cap_bytes`; None: it has none), the artifact is under it; a simplification may
    be kept within the noise."""
    floor = s.noise_floor or 0.0
    if m.crashed:
        return "crash", f"crashed: {m.error}"
    if cap_bytes is not None and m.artifact_bytes is None:
        return "discard", ("the run reports no artifact size ('Total submission size ...: N bytes') and none "
                           "could be measured: the artifact limit cannot be checked")
    if cap_bytes is not None and m.artifact_bytes > cap_bytes:
        return "discard", f"artifact {m.artifact_bytes:,} bytes is over the {cap_bytes:,}-byte cap"
    head = s.head_bpb
    if m.val_bpb < head - floor:
        return "keep", f"val_bpb {m.val_bpb:.4f} beats the kept {head:.4f} by more than the noise floor {floor:.4f}"
    if kind == "simplification" and m.val_bpb <= head + floor:
        return "keep", (f"a simplification: val_bpb {m.val_bpb:.4f} within the noise floor {floor:.4f} of "
                        f"the kept {head:.4f}")
    return "discard", (f"val_bpb {m.val_bpb:.4f} does not beat the kept {head:.4f} by more than the noise "
                       f"floor {floor:.4f}")


def _costs(m: Measurement) -> str:
    """What the run cost, as far as it reports: artifact, peak memory, steps and time."""
    parts = []
    if m.artifact_bytes is not None:
        parts.append(f"artifact {m.artifact_bytes:,} bytes")
    if m.peak_memory_mib is not None:
        parts.append(f"peak memory {m.peak_memory_mib:,.0f} MiB")
    seconds = m.training_seconds if m.training_seconds is not None else m.seconds
    parts.append(f"{m.steps if m.steps is not None else '?'} steps in {seconds:.0f}s")
    return "; ".join(parts)


def analysis_block(m: Measurement, direction: str, s: Standing, status: str, why: str,
                   rows: list[ResultRow]) -> str:
    """The ANALYSIS block of one experiment: result, the log line it was read from,
    against expectation, why, lesson."""
    floor = s.noise_floor or 0.0
    if m.crashed:
        reached = "" if m.last_val_bpb is None else f"; it had reached val_bpb {m.last_val_bpb:.4f} (not a result)"
        result = f"crashed ({m.error}) after {m.seconds:.0f}s{reached}; log {m.log_path}"
        against = "the hypothesis could not be tested"
    else:
        delta = m.val_bpb - s.head_bpb
        result = (f"val_bpb {m.val_bpb:.4f} against the kept {s.head_bpb:.4f} ({delta:+.4f}; noise floor "
                  f"{floor:.4f}); {_costs(m)}")
        if delta < -floor:
            against = "as expected: val_bpb went down by more than the noise"
        elif delta <= floor:
            against = "not confirmed: the change is within the noise"
        else:
            against = "refuted: val_bpb went up"
    if status == "keep":
        lesson = f"{direction} helps here; worth pushing further"
    elif normalise_direction(direction) in dead_ends(rows):
        lesson = f"{direction} is now a dead end ({DEAD_END_DISCARDS} discards in a row): change direction"
    elif status == "crash":
        lesson = f"{direction} needs a working implementation before it can be judged"
    elif "cap" in why:
        lesson = "the artifact cap binds: spend bytes elsewhere or compress better"
    else:
        lesson = f"{direction} does not pay off at this budget"
    line = f"Score line: {_one_line(m.metric_line)}\n" if m.metric_line else ""
    return (f"ANALYSIS\nResult: {result}\n{line}Against expectation: {against}\nWhy: {status}: {why}\n"
            f"Lesson: {lesson}\n")


def backtrack_row(rows: list[ResultRow]) -> ResultRow | None:
    """After a regression across kept commits (the kept head worse than the best by
    more than the noise floor), the `backtrack` row that resets to the best commit;
    None when the head stands."""
    s = standing(rows)
    if not regressed(s):
        return None
    art = next((r.artifact_mb for r in reversed(rows) if r.commit == s.best_commit), None)
    return ResultRow(
        n=s.experiments, commit=s.best_commit, val_bpb=s.best_bpb, artifact_mb=art, status="backtrack",
        kind="tweak", direction="backtrack",
        description=f"reset to the best commit {s.best_commit[:10]} ({s.best_description})",
        reasoning=f"the kept head {s.head_commit[:10]} at {s.head_bpb:.4f} regressed past the best "
        f"{s.best_bpb:.4f} by more than the noise floor {s.noise_floor or 0:.4f}")
