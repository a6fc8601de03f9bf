"""What runs next, and when an undecided experiment is decided: a pure function of
the rows of results.tsv, so that any idle researcher can take the next job and a
resumed team picks up exactly where the last one stopped.

Jobs, in the order they are handed out:

- baseline: the file as it is, once per seed (the seeds differ: on CPU,
  identical reruns are identical and measure no noise);
- seed: one more seeded run of a pending candidate (or of the best, when the
  best has fewer runs), when its gain is too small to decide;
- combine: a candidate measured on an older base (another researcher's keep
  moved the head meanwhile) that beat its own base is re-applied on the current
  head and measured again before it can be kept;
- holdout: the held-out re-score of a kept commit (when the repository's
  harness has a re-score command).

A researcher with no job proposes a new experiment.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal

from actors.research.rules import Standing
from actors.research.significance import compare


@dataclass(frozen=True)
class Policy:
    """The decision settings (from ResearchConfig)."""

    baseline_seeds: int = 3
    alpha: float = 0.05
    min_gain: float = 0.0
    max_seeds: int = 5
    rescore: bool = False


@dataclass(frozen=True)
class Job:
    kind: Literal["baseline", "seed", "combine", "holdout"]
    n: int
    commit: str
    seed: int = 1
    onto: str = ""  # combine: the head the change is re-applied onto

    @property
    def key(self) -> str:
        """Names the job in the WorkTracker: the same work has the same key (one
        seeded run of a commit is one run, whichever experiment asks for it)."""
        if self.kind in ("baseline", "seed"):
            return f"run:{self.commit[:12]}:{self.seed}"
        if self.kind == "combine":
            return f"combine:{self.n}:{self.commit[:12]}:{self.onto[:12]}"
        return f"holdout:{self.commit[:12]}"

    def describe(self) -> str:
        if self.kind == "baseline":
            return f"baseline seed {self.seed}"
        if self.kind == "combine":
            return f"experiment {self.n} re-applied on {self.onto[:10]}"
        if self.kind == "holdout":
            return f"held-out re-score of {self.commit[:10]}" + (f" (experiment {self.n})" if self.n else " (baseline)")
        return f"experiment {self.n}: seed {self.seed} of {self.commit[:10]}"


@dataclass(frozen=True)
class Verdict:
    status: Literal["keep", "discard", "crash", "pending"]
    why: str
    commit: str
    values: tuple[float, ...] = ()
    p: float | None = None
    job: Job | None = None

    @property
    def final(self) -> bool:
        return self.status != "pending"


def next_seed(s: Standing, commit: str) -> int:
    used = s.seeds.get(commit, set())
    return next(i for i in range(1, len(used) + 2) if i not in used)


def baseline_complete(s: Standing, policy: Policy) -> bool:
    return len(s.baseline_runs) >= policy.baseline_seeds and s.noise is not None


def judge(s: Standing, n: int, policy: Policy) -> Verdict:
    """The verdict on pending experiment `n` as the rows stand."""
    row = s.pending[n]
    c = row.commit
    values = tuple(s.runs.get(c, ()))
    if c in s.crashed:
        return Verdict("crash", f"crashed with another seed: {s.crashed[c]}", c, values)
    if not values:
        return Verdict("pending", "not measured yet", c, values, job=Job("seed", n, c, next_seed(s, c)))
    if not baseline_complete(s, policy):
        return Verdict("pending", "waiting for the baseline's seeds to measure the noise", c, values)
    head = s.head_commit
    if row.base and row.base != head:
        own = s.runs.get(row.base)
        if own and statistics.fmean(values) >= statistics.fmean(own):
            return Verdict("discard", f"val_bpb {statistics.fmean(values):.4f} did not beat its own base "
                           f"{row.base[:10]} ({statistics.fmean(own):.4f}), which is no longer the head", c, values)
        return Verdict("pending", f"measured on {row.base[:10]}, not on the current head {head[:10]}: "
                       "re-applied and re-measured there before it can be kept", c, values,
                       job=Job("combine", n, c, 1, head))
    cmp = compare(list(values), s.runs[head], s.noise, alpha=policy.alpha, min_gain=policy.min_gain,
                  max_seeds=policy.max_seeds, simplification=row.kind == "simplification")
    if cmp.status == "more":
        target = c if cmp.more_of == "candidate" else head
        return Verdict("pending", cmp.why, c, values, cmp.p, Job("seed", n, target, next_seed(s, target)))
    return Verdict(cmp.status, cmp.why, c, values, cmp.p)


def plan_jobs(s: Standing, policy: Policy, baseline_commit: str) -> list[Job]:
    """Every job that can run now, first to hand out first."""
    jobs = [Job("baseline", 0, baseline_commit, seed) for seed in range(1, policy.baseline_seeds + 1)
            if seed not in s.seeds.get(baseline_commit, set())]
    for n in sorted(s.pending):
        verdict = judge(s, n, policy)
        if verdict.job is None:
            continue
        more = [verdict.job]
        if verdict.job.kind == "seed" and verdict.values:
            # A second idle researcher runs the other side's next seed meanwhile: decided sooner.
            cand, head = s.pending[n].commit, s.head_commit
            other = head if verdict.job.commit == cand else cand
            if other == head or len(s.runs.get(cand, [])) < policy.max_seeds:
                more.append(Job("seed", n, other, next_seed(s, other)))
        jobs += [j for j in more if all(j.key != k.key for k in jobs)]
    if policy.rescore and baseline_complete(s, policy):
        for commit in s.kept:
            if commit not in s.holdout and s.runs.get(commit):
                n = next((k for k, r in s.decided.items() if r.commit == commit and r.status == "keep"), 0)
                jobs.append(Job("holdout", n, commit))
    return jobs


def final_verdicts(s: Standing, policy: Policy) -> list[tuple[int, Verdict]]:
    """Pending experiments the rows now decide, in experiment order."""
    out = []
    for n in sorted(s.pending):
        v = judge(s, n, policy)
        if v.final:
            out.append((n, v))
    return out
