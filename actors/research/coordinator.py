"""One memory for K researchers: results.tsv, notes.md, progress.png, the branch,
the experiment numbers and who works on what.

Every researcher process opens the same files. Whatever reads the history and
writes a decision (record a run, decide pending experiments, move the branch,
tag a discard, rewrite notes.md and the PNG, hand out the next experiment
number) happens under one exclusive `flock` on
`.autoresearch/state/<tag>/lock`: the researchers all run on the repository's
node, and the lock dies with its holder, so a killed researcher never leaves it
held. Decisions themselves are the pure functions of `rules` and `schedule`.

Who works on what is claimed (the WorkTracker with a team on Ray, a table in
this process otherwise): a proposal by the fingerprint of its change (the same
change is never run twice, nor by two researchers at once), a job (a baseline
seed, an extra seed, a re-measure, a held-out re-score) by its key. Claims of a
dead researcher are taken over: the tracker evicts the claims of an actor that
is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from actors.research.config import ResearchConfig, ResearchError
from actors.research.memory import LogEntry, append_result, read_notes, read_results, render_notes
from actors.research.progress import STATUS_KIND, plot_progress, read_statuses, write_status
from actors.research.rules import Measurement, ResultRow, analysis_block, backtrack_row, decide, standing
from actors.research.schedule import Job, Policy, Verdict, final_verdicts, judge, plan_jobs
from actors.research.workspace import Workspace, file_hash
from analysis.files import atomic_write_text

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- claims


class _Table:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, tuple[str, str]] = {}  # work id -> (claimed|done|abandoned, holder)


class LocalClaims:
    """Claims inside one process (an in-process team, library use): `done` is final,
    as in the tracker; `abandoned` work may be taken again."""

    def __init__(self, owner: str = "r0", table: _Table | None = None) -> None:
        self.owner, self.table = owner, table or _Table()

    def for_owner(self, owner: str) -> "LocalClaims":
        return LocalClaims(owner, self.table)

    def take(self, work_id: str) -> bool:
        with self.table.lock:
            state = self.table.state.get(work_id)
            if state is not None and (state[0] == "done" or (state[0] == "claimed" and state[1] != self.owner)):
                return False
            self.table.state[work_id] = ("claimed", self.owner)
            return True

    def finish(self, work_id: str, outcome: str = "done") -> None:
        with self.table.lock:
            if self.table.state.get(work_id, ("", ""))[1] == self.owner:
                self.table.state[work_id] = (outcome, self.owner)

    def live(self, prefix: str) -> dict[str, str]:
        with self.table.lock:
            return {w: h for w, (st, h) in self.table.state.items() if st == "claimed" and w.startswith(prefix)}

    def release_all(self, outcome: str = "abandoned") -> None:
        with self.table.lock:
            for w, (st, h) in list(self.table.state.items()):
                if st == "claimed" and h == self.owner:
                    self.table.state[w] = (outcome, h)

    def lost(self) -> bool:
        return False


class TrackerClaims:
    """Claims in the WorkTracker, one `Lease` per work item (heartbeated; released
    as done once recorded, as abandoned when the researcher stops)."""

    def __init__(self, namespace: str, owner: str) -> None:
        import ray

        from actors.tracker.actor import ACTOR_NAME
        from actors.tracker.client import TrackerClient

        self.client = TrackerClient(ray.get_actor(ACTOR_NAME, namespace=namespace))
        self.owner = owner
        self.leases: dict = {}

    def take(self, work_id: str) -> bool:
        from actors.tracker.client import LeaseRefused

        lease = self.client.hold(work_id, self.owner)
        try:
            lease.acquire()
        except LeaseRefused:
            return False
        self.leases[work_id] = lease
        return True

    def finish(self, work_id: str, outcome: str = "done") -> None:
        from actors.tracker.client import LeaseLost, TrackerUnavailable

        lease = self.leases.pop(work_id, None)
        if lease is not None:
            try:
                lease.finish(outcome, {"by": self.owner})
            except (LeaseLost, TrackerUnavailable) as exc:
                log.warning("%s", exc)

    def live(self, prefix: str) -> dict[str, str]:
        return {c.work_id: c.owner.partition("@")[0] for c in self.client.list_claims("claimed")
                if c.work_id.startswith(prefix)}

    def release_all(self, outcome: str = "abandoned") -> None:
        for work_id in list(self.leases):
            self.finish(work_id, outcome)

    def lost(self) -> bool:
        return any(lease.lost.is_set() for lease in self.leases.values())


# --------------------------------------------------------------------------- the team's memory


@dataclass(frozen=True)
class TeamInfo:
    """What a researcher needs to join its team (picklable: it travels to the actors)."""

    root: str
    protected: tuple[str, ...]
    rescore: str | None
    baseline_commit: str
    hashes: dict[str, str] = field(default_factory=dict)  # protected file -> sha256 at the start


class Shared:
    """The files and decisions every researcher of a team shares."""

    def __init__(self, config: ResearchConfig, info: TeamInfo, claims) -> None:
        self.config, self.info, self.claims = config, info, claims
        self.ws = Workspace.attach(config, Path(info.root), info.protected, info.rescore)
        self.policy = Policy(baseline_seeds=config.baseline_seeds, alpha=config.significance,
                             min_gain=config.min_gain, max_seeds=config.max_seeds, rescore=info.rescore is not None)
        self.prefix = f"autoresearch:{info.root}:{config.branch}:"
        self._lock_path = self.ws.state("state") / "lock"

    # -- the lock and the rows ------------------------------------------------

    @contextlib.contextmanager
    def locked(self, shared: bool = False) -> Iterator[None]:
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def rows(self) -> list[ResultRow]:
        with self.locked(shared=True):
            return read_results(self.ws.results_path)

    def next_n(self) -> int:
        """A fresh experiment number (numbers of experiments killed before they were recorded are not reused)."""
        with self.locked():
            path = self.ws.state("state") / "next_n"
            stored = int(path.read_text()) if path.exists() else 1
            n = max(stored, standing(read_results(self.ws.results_path)).experiments + 1)
            atomic_write_text(path, str(n + 1))
            return n

    def status(self, researcher: str, state: str, doing: str = "", **extra) -> None:
        write_status(self.ws.state(STATUS_KIND), researcher, state=state, doing=doing, **extra)

    def statuses(self) -> list[dict]:
        return read_statuses(self.ws.state(STATUS_KIND))

    # -- protected files --------------------------------------------------------

    def check_protected(self, files: dict[str, bytes], commit: str) -> None:
        """Before every run: the protected files are byte for byte what they were at the start."""
        for path, expected in self.info.hashes.items():
            data = files.get(path)
            got = None if data is None else file_hash(data)
            if got != expected:
                raise ResearchError(
                    f"protected file {path} differs at commit {commit[:10]} from the start of the run "
                    f"(sha256 {str(got)[:12]} != {expected[:12]}): restore it; the loop never runs a changed harness")

    # -- claims -----------------------------------------------------------------

    def change_id(self, fp: str) -> str:
        return f"{self.prefix}change:{fp}"

    def taken(self, rows: list[ResultRow]) -> dict[str, str]:
        """Fingerprints of every change run or running, with what it was."""
        out = {r.fingerprint: f"experiment {r.n}: {r.description} ({r.status})" for r in rows
               if r.fingerprint and r.kind != "baseline"}
        for work_id, holder in self.claims.live(f"{self.prefix}change:").items():
            out.setdefault(work_id.rsplit(":", 1)[1], f"running on {holder}")
        return out

    def take_job(self) -> Job | None:
        s = standing(self.rows())
        for job in plan_jobs(s, self.policy, self.info.baseline_commit):
            if self.claims.take(f"{self.prefix}job:{job.key}"):
                return job
        return None

    def finish_job(self, job: Job, outcome: str = "done") -> None:
        self.claims.finish(f"{self.prefix}job:{job.key}", outcome)

    def unsettled(self) -> bool:
        """Anything left to run or decide: baseline seeds, pending experiments, held-out re-scores."""
        s = standing(self.rows())
        return bool(s.pending) or bool(plan_jobs(s, self.policy, self.info.baseline_commit))

    # -- recording --------------------------------------------------------------

    def record_run(self, row: ResultRow, m: Measurement, why_prefix: str = "", ideas: list[str] | None = None
                   ) -> tuple[ResultRow, str]:
        """Record one run. `row` is a candidate's first run (status pending: decided here
        when it can be), a seed, or a baseline seed. Returns the row written and why."""
        with self.locked():
            rows = read_results(self.ws.results_path)
            why = ""
            if row.status == "pending" and row.n in standing(rows).decided:
                # Decided by another researcher's result while this run went on: it stays a measurement.
                row.status = "seed"
                why = f"experiment {row.n} was decided while this run went on"
            if row.status == "pending":
                s = standing(rows + [row])
                verdict = None if m.crashed else judge(s, row.n, self.policy)
                status, why = decide(m, row.kind, s, self.config.artifact_cap, verdict)
                if status != "pending":
                    row.status, row.runs = status, 1
                    row.p_value = verdict.p if verdict is not None else None
            append_result(self.ws.results_path, row)
            rows.append(row)
            if row.is_experiment:
                self._apply(row.n, row.status, row.commit, rows[:-1], why_prefix + why, [row.commit], m)
            self._settle(rows, ideas, plot=row.is_experiment, last=(row.commit, m))
            return row, why_prefix + why

    def record_decision(self, row: ResultRow, why: str) -> None:
        """A decision reached without a run (a change that no longer applies on the head)."""
        with self.locked():
            rows = read_results(self.ws.results_path)
            cands = standing(rows).candidates.get(row.n, [])
            append_result(self.ws.results_path, row)
            rows.append(row)
            self._apply(row.n, row.status, row.commit, rows[:-1], why, cands + [row.commit])
            self._settle(rows, plot=True)

    def record_holdout(self, job: Job, value: float | None, researcher: str, note: str) -> None:
        with self.locked():
            row = ResultRow(n=job.n, commit=job.commit, val_bpb=None, artifact_mb=None, status="holdout",
                            kind="baseline" if job.n == 0 else "tweak", direction="holdout",
                            description=f"held-out re-score of {job.commit[:10]}", reasoning=note,
                            researcher=researcher, holdout_bpb=value)
            append_result(self.ws.results_path, row)
            rows = read_results(self.ws.results_path)
            self._settle(rows)

    def _apply(self, n: int, status: str, commit: str, before: list[ResultRow], why: str,
               commits: list[str], m: Measurement | None = None) -> None:
        """The git side and the log entry of a decision, under the lock. `m`: the latest
        run of `commit`, when this process has it (its score line and costs go in ANALYSIS)."""
        s_before = standing(before)
        cands = [c for c in dict.fromkeys(s_before.candidates.get(n, []) + commits)]
        for c in cands:
            if c != commit or status != "keep":
                if not self.ws.tagged(c):
                    self.ws.tag(f"discard/{n}", c)
                for artifact in self.ws.state("artifacts").glob(f"{c[:12]}-s*"):
                    artifact.unlink(missing_ok=True)  # only kept models are re-scored
        if status == "keep":
            self.ws.reset(commit)
        rows = read_results(self.ws.results_path)
        s = standing(rows)
        values = s.runs.get(commit, [])
        crash = why.removeprefix("crashed: ") if status == "crash" else None
        decision = next(r for r in reversed(rows) if r.n == n and r.is_experiment)
        details = ", ".join(x for x in (f"p = {decision.p_value:.3g}" if decision.p_value is not None else "",
                                        f"{len(values)} seed(s)" if values else "",
                                        f"by {decision.researcher}" if decision.researcher else "") if x)
        analysis = analysis_block(values, crash, decision.direction, s_before.head_bpb, s, status, why, rows,
                                  details, m)
        ideas, log_text = read_notes(self.ws.notes_path)
        entry = LogEntry(n=n, title=decision.description, status=status, commit=commit,
                         reasoning=decision.reasoning.replace(" | ", "\n"), analysis=analysis)
        self._write_notes(rows, ideas, (log_text.rstrip() + "\n\n" + entry.render()).strip())
        log.info("experiment %d %s: %s (%s)", n, status.upper(), decision.description, why)

    def _settle(self, rows: list[ResultRow], ideas: list[str] | None = None, plot: bool = False,
                last: tuple[str, Measurement] | None = None) -> None:
        """Decide what the rows now decide, backtrack a regressed head, rewrite notes.md
        (and the PNG when an experiment was decided: `plot`). `last`: (commit, measurement)
        of the run just recorded, for the ANALYSIS of a decision on that commit."""
        while True:
            decided = final_verdicts(standing(rows), self.policy)
            if not decided:
                break
            n, v = decided[0]
            plot = True
            row = self._decision_row(rows, n, v)
            append_result(self.ws.results_path, row)
            before, rows = rows, rows + [row]
            m = last[1] if last is not None and last[0] == v.commit else None
            self._apply(n, v.status, v.commit, before, v.why, standing(before).candidates.get(n, []), m)
        back = backtrack_row(rows)
        if back is not None:
            log.warning("regression: resetting %s to the best commit %s", self.config.branch, back.commit[:10])
            self.ws.reset(back.commit)
            append_result(self.ws.results_path, back)
            rows = rows + [back]
        old_ideas, log_text = read_notes(self.ws.notes_path)
        self._write_notes(rows, ideas if ideas else old_ideas, log_text)
        if plot or not self.ws.plot_path.exists():
            try:
                plot_progress(rows, self.ws.plot_path, title=f"{self.config.branch}: val_bpb per experiment")
            except Exception as exc:  # noqa: BLE001 - a plot never stops the research
                log.warning("progress plot not written: %s", exc)
        from actors.shared.metrics import record_autoresearch_best

        head = standing(rows).head_bpb
        if head is not None:
            record_autoresearch_best(self.config.branch, head)

    @staticmethod
    def _decision_row(rows: list[ResultRow], n: int, v: Verdict) -> ResultRow:
        first = next(r for r in rows if r.n == n and r.status == "pending")
        art = next((r.artifact_mb for r in rows if r.commit == v.commit and r.artifact_mb is not None), None)
        return ResultRow(n=n, commit=v.commit, val_bpb=statistics.fmean(v.values) if v.values else None,
                         artifact_mb=art, status=v.status, kind=first.kind, direction=first.direction,
                         description=first.description, reasoning=first.reasoning,
                         researcher=first.researcher, runs=len(v.values), p_value=v.p,
                         base=next(r.base for r in reversed(rows) if r.n == n and r.status == "pending"),
                         fingerprint=first.fingerprint)

    def _write_notes(self, rows: list[ResultRow], ideas: list[str], log_text: str) -> None:
        atomic_write_text(self.ws.notes_path, render_notes(
            branch=self.config.branch, file=self.config.file, rows=rows, ideas=ideas, log_text=log_text,
            cap_bytes=self.config.cap_bytes, protected=list(self.info.protected)))


# --------------------------------------------------------------------------- opening a team

PROTECTED_FILE = "protected.json"


def claim_branch(config: ResearchConfig, root: Path, owner: str):
    """The branch's lease in the WorkTracker (two teams never share a branch); None without a tracker."""
    if config.tracker_namespace is None:
        return None
    import ray

    from actors.tracker.actor import ACTOR_NAME
    from actors.tracker.client import LeaseRefused, TrackerClient

    client = TrackerClient(ray.get_actor(ACTOR_NAME, namespace=config.tracker_namespace))
    try:
        return client.hold(f"autoresearch:{root}:{config.branch}", owner).acquire()
    except LeaseRefused as exc:
        raise ResearchError(f"branch {config.branch} of {root} is being worked on ({exc}); two AutoResearch "
                            "loops never share a branch") from None


def release_branch(lease, reason: str) -> None:
    """Let go of the branch: `abandoned`, because a research branch is never done."""
    from actors.tracker.client import LeaseLost, TrackerUnavailable

    if lease is not None:
        try:
            lease.finish("abandoned", {"reason": reason[:300]})
        except (LeaseLost, TrackerUnavailable) as exc:
            log.warning("%s", exc)


def open_team(config: ResearchConfig, owner: str) -> tuple[TeamInfo, object]:
    """Open the repository on the branch, claim it, pin the protected files' hashes
    and give each researcher its worktree. Returns (what researchers need, the branch lease)."""
    import json

    ws = Workspace.open(config)
    lease = claim_branch(config, ws.root, owner)
    try:
        rows = read_results(ws.results_path)
        s = standing(rows)
        head = ws.head()
        if s.head_commit is not None and head != s.head_commit:
            if any(r.commit == head for r in rows):  # stopped between a decision and the branch's move
                ws.reset(s.head_commit)
            else:
                _park_unrecorded_head(ws, s.head_commit)
        baseline = s.baseline_commit or ws.head()
        pinned = ws.state("state") / PROTECTED_FILE
        if pinned.exists():
            hashes = json.loads(pinned.read_text())
        else:
            hashes = ws.protected_hashes(baseline)
            atomic_write_text(pinned, json.dumps(hashes, indent=1))
        for p in ws.protected:
            hashes.setdefault(p, ws.protected_hashes(baseline)[p])
        for i in range(config.researchers):
            ws.ensure_worktree(i, ws.head())
        info = TeamInfo(str(ws.root), ws.protected, ws.rescore, baseline, hashes)
    except BaseException:
        release_branch(lease, "set-up failed")
        raise
    log.info("AutoResearch on %s, branch %s, file %s (%s), %d researcher(s); protected: %s", ws.root, config.branch,
             config.file, "resumed" if ws.resumed else "new", config.researchers, ", ".join(ws.protected) or "none")
    return info, lease


def _park_unrecorded_head(ws: Workspace, kept: str) -> None:
    """The branch is not at the kept head of results.tsv. An experiment committed
    on the branch itself and never measured (the one-researcher loop of earlier
    versions) goes to researcher 0's worktree, to be run; anything else is tagged."""
    from actors.research.workspace import proposal_from_commit

    commit = ws.repo.head.commit
    parsed = proposal_from_commit(commit.message, "")
    if parsed and [p.hexsha for p in commit.parents] == [kept]:
        ws.reset(kept)
        ws.ensure_worktree(0, kept)
        from actors.research.workspace import Worktree

        Worktree(ws.worktree_path(0), ws.cfg.file).reset(commit.hexsha)
        log.info("resume: experiment %d (%s) was committed on the branch but not measured: researcher r0 runs it",
                 parsed[0], parsed[1].description)
        return
    tag = ws.tag(f"discard/{parsed[0] if parsed else 0}-orphan", commit.hexsha)
    log.warning("resume: branch head %s is not the kept head %s in results.tsv; tagged it %s and reset",
                commit.hexsha[:10], kept[:10], tag)
    ws.reset(kept)
