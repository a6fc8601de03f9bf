"""The pure rules of the AutoResearch loop: the rows of its history and what is
decided from them, with no I/O.

Everything the loop decides (the kept head, the best commit, the seed-to-seed
noise, dead ends, the call for a structural change, keep or discard, what runs
next) is a function of the rows of `results.tsv`: that is what makes `--resume`
exact, and what lets K researchers share one history.

Rows, oldest first. `n` is the experiment number (0 for the baseline runs);
`status` is keep, discard or crash (an experiment's decision), pending (a
measured candidate waiting for more seeds or for a re-measure on the current
best), seed (one more seeded run of a commit), holdout (a held-out re-score of
a kept commit) or backtrack; `kind` is baseline, tweak, structural or
simplification; `direction` names what the change pushes on (e.g.
``LEARNING_RATE up``) so that three discards in a row in one direction can be
recognised. A row with a `seed` is one run (a measurement); a decision reached
over several runs is a row of its own whose val_bpb is their mean.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

from actors.research.significance import Noise, pooled_noise

# The seed's six columns first, in its order; then ours.
SEED_COLUMNS = ("commit", "val_bpb", "artifact_mb", "status", "reasoning", "description")
COLUMNS = SEED_COLUMNS + ("n", "researcher", "kind", "direction", "seed", "runs", "p_value", "base",
                          "fingerprint", "holdout_bpb")
STATUSES = ("keep", "discard", "crash", "backtrack", "pending", "seed", "holdout")
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
    researcher: str = ""
    seed: int | None = None  # the seed of this run; None: not a run (an aggregate decision, a backtrack)
    runs: int | None = None  # how many runs val_bpb is the mean of
    p_value: float | None = None
    base: str = ""  # the commit the change was measured on top of
    fingerprint: str = ""
    holdout_bpb: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ResearchLogError(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.kind not in KINDS:
            raise ResearchLogError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def is_experiment(self) -> bool:
        """An experiment's decision."""
        return self.kind != "baseline" and self.status in EXPERIMENT_STATUSES

    @property
    def is_run(self) -> bool:
        """One run of the file (its val_bpb is a measurement, None when it crashed)."""
        return self.seed is not None and self.status not in ("holdout", "backtrack")

    def cells(self) -> list[str]:
        def num(v, fmt):
            return "" if v is None or not math.isfinite(v) else format(v, fmt)

        values = {"commit": self.commit, "val_bpb": num(self.val_bpb, ".8f"),
                  "artifact_mb": num(self.artifact_mb, ".6f"),
                  "status": self.status, "reasoning": _one_line(self.reasoning),
                  "description": _one_line(self.description), "n": str(self.n), "researcher": self.researcher,
                  "kind": self.kind, "direction": _one_line(self.direction),
                  "seed": "" if self.seed is None else str(self.seed),
                  "runs": "" if self.runs is None else str(self.runs),
                  "p_value": num(self.p_value, ".4g"), "base": self.base, "fingerprint": self.fingerprint,
                  "holdout_bpb": num(self.holdout_bpb, ".8f")}
        return [values[c] for c in COLUMNS]


# --------------------------------------------------------------------------- where things stand


@dataclass
class Standing:
    """Where the research stands after a sequence of rows."""

    head_commit: str | None = None  # the kept head: the commit the branch points at, every researcher's base
    best_commit: str | None = None  # the kept commit with the lowest mean (differs from the head only after drift)
    best_description: str = ""
    baseline_commit: str | None = None
    experiments: int = 0  # highest experiment number seen
    gains: list[float] = field(default_factory=list)  # per decided experiment: how much it lowered the head
    runs: dict[str, list[float]] = field(default_factory=dict)  # commit -> val_bpb of each seeded run
    seeds: dict[str, set[int]] = field(default_factory=dict)  # commit -> seeds run (crashed ones included)
    crashed: dict[str, str] = field(default_factory=dict)  # commit -> the first crash's description
    decided: dict[int, ResultRow] = field(default_factory=dict)  # experiment -> its decision row
    pending: dict[int, ResultRow] = field(default_factory=dict)  # undecided experiment -> its latest candidate row
    candidates: dict[int, list[str]] = field(default_factory=dict)  # experiment -> every commit it measured
    kept: list[str] = field(default_factory=list)  # kept commits in order, the baseline first
    holdout: dict[str, float | None] = field(default_factory=dict)  # commit -> held-out val_bpb
    noise: Noise | None = None

    def mean(self, commit: str | None) -> float | None:
        values = self.runs.get(commit or "")
        return statistics.fmean(values) if values else None

    @property
    def head_bpb(self) -> float | None:
        return self.mean(self.head_commit)

    @property
    def best_bpb(self) -> float | None:
        return self.mean(self.best_commit)

    @property
    def baseline_runs(self) -> list[float]:
        return list(self.runs.get(self.baseline_commit or "", []))

    @property
    def baseline_bpb(self) -> float | None:
        return self.mean(self.baseline_commit)

    def decided_description(self, commit: str) -> str:
        return next((r.description for r in self.decided.values() if r.commit == commit), "")

    @property
    def noise_floor(self) -> float | None:
        """The seed-to-seed standard deviation (None until two seeds of one commit ran)."""
        return None if self.noise is None else self.noise.sd


def standing(rows: list[ResultRow]) -> Standing:
    s = Standing()
    for r in rows:
        if r.is_run:
            s.seeds.setdefault(r.commit, set()).add(r.seed)
            if r.val_bpb is not None:
                s.runs.setdefault(r.commit, []).append(r.val_bpb)
            elif r.status == "crash" or r.kind != "baseline":
                s.crashed.setdefault(r.commit, r.description)
        if r.kind == "baseline" and r.status != "holdout":
            if s.baseline_commit is None:
                s.baseline_commit = s.head_commit = r.commit
                s.kept.append(r.commit)
            continue
        if r.status == "holdout":
            s.holdout[r.commit] = r.holdout_bpb
            continue
        s.experiments = max(s.experiments, r.n)
        if r.status == "backtrack":
            s.head_commit = r.commit
            continue
        if r.status in ("pending", "seed") and r.n not in s.decided:
            if r.status == "pending":
                s.pending[r.n] = r
                s.candidates.setdefault(r.n, []).append(r.commit)
            continue
        if not r.is_experiment:
            continue
        s.pending.pop(r.n, None)
        s.candidates.setdefault(r.n, [])
        if r.commit not in s.candidates[r.n]:
            s.candidates[r.n].append(r.commit)
        s.decided[r.n] = r
        gain = 0.0
        if r.status == "keep":
            before = s.mean(s.head_commit)
            s.head_commit = r.commit
            s.kept.append(r.commit)
            if before is not None and r.val_bpb is not None:
                gain = before - r.val_bpb
        if r.kind == "structural":
            # A structural attempt answers the call: the plateau count starts again after it.
            gain = math.inf
        s.gains.append(gain)
    s.noise = pooled_noise(s.runs.values())
    means = [(s.mean(c), i, c) for i, c in enumerate(s.kept) if s.mean(c) is not None]
    if means:
        _, _, s.best_commit = min(means)
        s.best_description = "baseline" if s.best_commit == s.baseline_commit else next(
            (r.description for r in reversed(rows) if r.commit == s.best_commit and r.is_experiment), "")
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
    """True when the kept head is worse than the best kept commit by more than the noise."""
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
    seed: int | None = None
    artifact_file: str = ""  # where the run's artifact was saved ('' when it left none)

    @property
    def artifact_mb(self) -> float | None:
        return None if self.artifact_bytes is None else self.artifact_bytes / 1e6


def decide(m: Measurement, kind: str, s: Standing, cap_bytes: int | None, comparison=None) -> tuple[str, str]:
    """keep, discard, crash or pending, and why. A run that crashed, or, where the
    repository has an artifact limit (`cap_bytes`; None: it has none), has no
    artifact size or is over it, is decided here; otherwise `comparison` (a
    `significance.Comparison` or `schedule.Verdict` of its runs against the
    best's) decides; one that asks for more seeds, a re-measure on the current
    head, or none yet (the baseline's seeds are still running) leaves the
    experiment pending."""
    if m.crashed:
        return "crash", f"crashed: {m.error}"
    if cap_bytes is not None and m.artifact_bytes is None:
        return "discard", ("the run reports no artifact size ('Total submission size ...: N bytes') and none "
                           "could be measured: the artifact limit cannot be checked")
    if cap_bytes is not None and m.artifact_bytes > cap_bytes:
        return "discard", f"artifact {m.artifact_bytes:,} bytes is over the {cap_bytes:,}-byte cap"
    if comparison is None:
        return "pending", "waiting for the baseline's seeds to measure the noise"
    return ("pending" if comparison.status in ("more", "pending") else comparison.status), comparison.why


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


def analysis_block(values: list[float], crash: str | None, direction: str, against_bpb: float | None,
                   s: Standing, status: str, why: str, rows: list[ResultRow], details: str = "",
                   m: Measurement | None = None) -> str:
    """The ANALYSIS block of one experiment: result, the log line it was read from,
    against expectation, why, lesson. `values` are the val_bpb of its seeded runs;
    `m`, when given, the measurement of its latest run: its costs (artifact, peak
    memory, steps, time), its score line, what a crashed run had reached."""
    sd = s.noise_floor or 0.0
    if crash is not None or not values:
        result = f"crashed ({crash})"
        if m is not None:
            result += f" after {m.seconds:.0f}s"
            if m.last_val_bpb is not None:
                result += f"; it had reached val_bpb {m.last_val_bpb:.4f} (not a result)"
            if m.log_path:
                result += f"; log {m.log_path}"
        result += f"; {details}" if details else ""
        against = "the hypothesis could not be tested"
    else:
        mean = statistics.fmean(values)
        delta = mean - against_bpb if against_bpb is not None else 0.0
        result = (f"val_bpb {mean:.4f} over {len(values)} seed(s) against the best {against_bpb or 0:.4f} "
                  f"({delta:+.4f}; seed noise sd {sd:.4f})" + (f"; {_costs(m)}" if m is not None else "")
                  + (f"; {details}" if details else ""))
        if status == "keep":
            against = "as expected: val_bpb went down by more than the noise"
        elif delta < 0:
            against = "not confirmed: the gain is within the noise"
        else:
            against = "refuted: val_bpb did not go down"
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
    line = f"Score line: {_one_line(m.metric_line)}\n" if m is not None and m.metric_line else ""
    return (f"ANALYSIS\nResult: {result}\n{line}Against expectation: {against}\nWhy: {status}: {why}\n"
            f"Lesson: {lesson}\n")


def backtrack_row(rows: list[ResultRow]) -> ResultRow | None:
    """After a regression across kept commits (the kept head worse than the best by
    more than the noise), the `backtrack` row that resets to the best commit;
    None when the head stands."""
    s = standing(rows)
    if not regressed(s):
        return None
    art = next((r.artifact_mb for r in reversed(rows) if r.commit == s.best_commit and r.artifact_mb), None)
    return ResultRow(
        n=s.experiments, commit=s.best_commit, val_bpb=s.best_bpb, artifact_mb=art, status="backtrack",
        kind="tweak", direction="backtrack", runs=len(s.runs[s.best_commit]),
        description=f"reset to the best commit {s.best_commit[:10]} ({s.best_description})",
        reasoning=f"the kept head {s.head_commit[:10]} at {s.head_bpb:.4f} regressed past the best "
        f"{s.best_bpb:.4f} by more than the noise (sd {s.noise_floor or 0:.4f})")
