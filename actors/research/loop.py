"""The AutoResearch loop, as one researcher of a team runs it.

On branch `autoresearch/<tag>` of a git repository (a fresh workspace made from
`examples/golf/` when no repository is given), K researchers (one by default)
share results.tsv and notes.md; each works in a git worktree of its own. A
researcher first takes whatever job the shared history asks for (a baseline
seed, an extra seed of a small gain, a re-measure on the current head, a
held-out re-score: `actors.research.schedule`); with none, it runs a new
experiment in eight steps, as `AutoResearch.experiment` reads:

1. move onto the head (the best kept commit) and propose one change (Claude
   with ANTHROPIC_API_KEY set, else the offline proposer), validated: it parses,
   applies, leaves the protected files alone, avoids dead ends, was not run yet;
   its fingerprint is claimed, so no other researcher runs it;
2. commit it in the worktree, one commit per experiment;
3. run it as a Ray task that holds its GPUs, under a wall-clock timeout, the
   protected files' hashes checked first;
4. a crash gets one fix attempt when the researcher can fix crashes;
5. decide: keep when a t-test over seeded runs says it beats the best by more
   than the noise (`rules.decide`, `significance.compare`), or send it to more
   seeds, or to a re-measure on a newer head;
6. a keep moves the branch; a discard is tagged `autoresearch/<tag>/discard/<n>`;
7. record: a row in results.tsv, the ANALYSIS block in notes.md, the PNG;
8. backtrack to the best commit when the kept head has regressed.

Steps 5-8 happen under the team's lock (`actors.research.coordinator`). The
loop stops within a second when its Ray task is cancelled: the training run is
cancelled, its claims released as abandoned, and the unmeasured commit stays in
the worktree for `--resume`. Nothing is ever pushed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shlex
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from actors.research.changes import fingerprint, reapply
from actors.research.config import ResearchConfig, ResearchError
from actors.research.coordinator import LocalClaims, Shared, TeamInfo, TrackerClaims, open_team, release_branch
from actors.research.logparse import parse_log
from actors.research.proposals import ProposalRejected, ResearchContext, ResearchProposal, Researcher, apply_proposal
from actors.research.repo_settings import apply_repo_settings
from actors.research.researchers import make_researcher
from actors.research.rules import Measurement, ResultRow, dead_ends, needs_structural_change, standing
from actors.research.runner import RunCancelled, RunSpec, run_local, run_on_ray
from actors.research.schedule import Job
from actors.research.workspace import Worktree, proposal_from_commit
from actors.shared.llm import LLMError, Usage

log = logging.getLogger(__name__)

PROPOSAL_ATTEMPTS = 3  # a rejected proposal gets more tries, with the rejection as feedback
WAIT_S = 1.0  # how often an idle researcher looks for work while others finish theirs
_HOLDOUT = re.compile(r"holdout\S*.*?val_bpb[:=]\s*([-+0-9.eE]+|nan|inf)", re.I)
_ANY_BPB = re.compile(r"val_bpb[:=]\s*([-+0-9.eE]+)", re.I)

# (experiment number, phase, seconds, details): what a benchmark hooks in to time the loop.
PhaseHook = Callable[[int, str, float, dict], None]


class Cancelled(Exception):
    """The researcher was asked to stop (its Ray task cancelled, or the team stopping)."""


class AutoResearch:
    """One researcher. Use it in-process, or as a Ray actor (`actors.research.team`)."""

    def __init__(self, config: ResearchConfig, researcher: Researcher | None = None,
                 on_phase: PhaseHook | None = None, index: int = 0, team: TeamInfo | None = None,
                 claims=None, runner=None) -> None:
        if not logging.getLogger().handlers:
            # In a Ray actor nothing configures logging: without this the progress
            # lines (experiment n, keep/discard) never reach the driver's console.
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.config = config
        self.index, self.name = index, f"r{index}"
        self.researcher = researcher or make_researcher(offline_only=config.offline, model=config.model,
                                                        seed=config.seed + index)
        self.on_phase = on_phase
        self.team = team
        self.claims = claims
        self.runner = runner
        self.usage = Usage()
        self.shared: Shared | None = None
        self.wt: Worktree | None = None
        self.stop_reason = ""
        self.stop_event = threading.Event()  # set by an in-process team to stop this researcher
        self._pending: tuple[int, ResearchProposal, str, str] | None = None  # (n, proposal, commit, base) to run
        self.experiments = 0
        # Researchers sharing one process (`run_local_team`) propose one at a time: ast.parse is
        # not thread-safe in CPython 3.11 ("AST constructor recursion depth mismatch", gh-106905).
        self.propose_lock: threading.Lock | None = None

    # ------------------------------------------------------------- joining the team

    def join(self, team: TeamInfo) -> None:
        self.team = team
        # The repository's own settings (autoresearch.toml, program.md): its score line and artifact limit.
        self.config = apply_repo_settings(self.config, Path(team.root))
        if self.claims is None:
            if self.config.tracker_namespace is not None:
                from actors.tracker.client import process_owner

                owner = process_owner(self.name, self.config.tracker_namespace)
                self.claims = TrackerClaims(self.config.tracker_namespace, owner)
            else:
                self.claims = LocalClaims(self.name)
        if self.runner is None:
            import ray

            self.runner = run_on_ray if ray.is_initialized() else run_local
        self.shared = Shared(self.config, team, self.claims)
        self.wt = Worktree(self.shared.ws.ensure_worktree(self.index, team.baseline_commit), self.config.file)
        # The t-test and the plot import scipy and matplotlib (seconds): while the baseline runs, not after it.
        threading.Thread(target=_warm_up, name=f"{self.name}-warm-up", daemon=True).start()

    @property
    def root(self) -> Path:
        return self.shared.ws.root

    @property
    def results_path(self) -> Path:
        return self.shared.ws.results_path

    def rows(self) -> list[ResultRow]:
        return self.shared.rows()

    def _recover(self) -> None:
        """After a kill: the worktree's head is an experiment committed and never
        measured (run it again), or a leftover (tagged, then left behind)."""
        head = self.wt.head()
        rows = self.rows()
        if any(r.commit == head for r in rows) or head == self.team.baseline_commit:
            return
        parsed = proposal_from_commit(self.wt.repo.head.commit.message, self.wt.source())
        parents = self.wt.parents()
        known = {r.commit for r in rows} | {self.team.baseline_commit}
        if parsed and len(parents) == 1 and parents[0] in known and parsed[0] not in standing(rows).decided:
            log.info("%s resume: experiment %d (%s) was committed but not measured; running it", self.name,
                     parsed[0], parsed[1].description)
            self._pending = (parsed[0], parsed[1], head, parents[0])
            return
        if not self.shared.ws.tagged(head) and parsed:
            self.shared.ws.tag(f"discard/{parsed[0]}-orphan", head)

    # ------------------------------------------------------------- stopping

    def cancelled(self) -> bool:
        if self.stop_event.is_set():
            return True
        import ray

        if ray.is_initialized():
            try:
                return ray.get_runtime_context().is_canceled()
            except RuntimeError:  # the driver, not a task
                return False
        return False

    def _check_stop(self) -> None:
        if self.cancelled():
            raise Cancelled(f"{self.name} cancelled")
        if self.claims.lost():
            raise ResearchError(f"{self.name}: a lease was lost: another researcher may hold the work now")

    def _status(self, state: str, doing: str = "") -> None:
        self.shared.status(self.name, state, doing, experiments=self.experiments)

    # ------------------------------------------------------------- the whole run

    def run(self, iterations: int) -> dict:
        """Join the team (or, alone, open the repository as a team of one), then run
        `iterations` experiments of this researcher's own, taking the team's jobs
        first, until nothing is left to run or decide. Returns a summary."""
        t0 = time.time()
        branch = None
        if self.team is None:
            from actors.tracker.client import process_owner

            owner = self.config.owner or (process_owner("autoresearch", self.config.tracker_namespace)
                                          if self.config.tracker_namespace else "autoresearch")
            info, branch = open_team(self.config, owner)
            self.join(info)
        elif self.shared is None:
            self.join(self.team)
        try:
            self._recover()
            self._work(iterations)
        except BaseException as exc:
            self.claims.release_all("abandoned")
            self._status("stopped", f"{type(exc).__name__}: {str(exc)[:120]}")
            release_branch(branch, f"stopped by {type(exc).__name__}: {exc}")
            raise
        self.claims.release_all("abandoned")
        self._status("stopped", self.stop_reason or "finished")
        release_branch(branch, "finished its iterations")
        return self.summary(time.time() - t0)

    def _work(self, iterations: int) -> None:
        while True:
            self._check_stop()
            if self._pending is not None:
                n, proposal, commit, base = self._pending
                self._pending = None
                self.experiments += 1
                self._rerun_unmeasured(n, proposal, commit, base)
                continue
            job = self.shared.take_job()
            if job is not None:
                self._run_job(job)
                continue
            if self.experiments < iterations and not self.stop_reason:
                self.experiments += 1
                try:
                    row = self.experiment()
                except ProposalRejected as exc:
                    log.error("%s: no valid proposal after %d attempts: %s; stopping", self.name,
                              PROPOSAL_ATTEMPTS, exc)
                    self.stop_reason = f"no valid proposal: {exc}"
                    continue
                log.info("%s [%d/%d] experiment %d %s: %s", self.name, self.experiments, iterations, row.n,
                         row.status.upper(), row.description)
                continue
            if not self.shared.unsettled():
                return
            self._status("waiting", "for the other researchers' runs to decide")
            with self._phase(0, "wait"):
                time.sleep(WAIT_S)

    # ------------------------------------------------------------- one experiment

    def experiment(self) -> ResultRow:
        """One new experiment, from proposal to row, in the loop's eight steps."""
        rows = self.rows()
        s = standing(rows)
        base = s.head_commit
        self.wt.reset(base)                                                          # move onto the best
        n = self.shared.next_n()
        self._status("proposing", f"experiment {n}")
        with self._phase(n, "propose"), (self.propose_lock or contextlib.nullcontext()):
            proposal, source, fp = self._propose(rows, self.wt.source())              # 1
        with self._phase(n, "commit"):
            commit = self.wt.commit(n, proposal, source)                              # 2
        log.info("%s experiment %d: %s [%s, %s] commit %s", self.name, n, proposal.description, proposal.kind,
                 proposal.direction, commit[:10])
        return self._measure_candidate(n, proposal, source, commit, base, fp)

    def _measure_candidate(self, n, proposal, source, commit, base, fp) -> ResultRow:
        try:
            m = self.measure(n, commit, 1, f"{n:03d}", f"experiment {n}: {proposal.description}")      # 3
            m, commit, fixed = self._fix_crash_once(n, proposal, source, commit, m)    # 4
            row = ResultRow(n=n, commit=commit, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status="pending",
                            kind=proposal.kind, direction=proposal.direction,
                            description=proposal.description + fixed, reasoning=proposal.reasoning_block(),
                            researcher=self.name, seed=1, base=base, fingerprint=fp)
            with self._phase(n, "record"):
                row, _ = self.shared.record_run(row, m, ideas=proposal.ideas)             # 5-8
        except BaseException:
            self.claims.finish(self.shared.change_id(fp), "abandoned")
            raise
        self.claims.finish(self.shared.change_id(fp), "done")
        return row

    def _rerun_unmeasured(self, n, proposal, commit, base) -> None:
        fp = fingerprint(self.shared.ws.source_at(base), self.shared.ws.source_at(commit))
        if fp in self.shared.taken(self.rows()) or not self.claims.take(self.shared.change_id(fp)):
            tag = self.shared.ws.tag(f"discard/{n}-orphan", commit)
            log.info("%s resume: experiment %d was taken over by another researcher; tagged %s", self.name, n, tag)
            return
        self._measure_candidate(n, proposal, self.wt.source(), commit, base, fp)

    def _propose(self, rows: list[ResultRow], source: str) -> tuple[ResearchProposal, str, str]:
        """A validated proposal, the source it makes and its fingerprint, claimed;
        a rejection goes back to the researcher as feedback."""
        context = self._context(rows, source)
        last = None
        for _ in range(PROPOSAL_ATTEMPTS):
            try:
                proposal, usage = self.researcher.propose(context)  # Claude: one retry of its own inside
                self.usage.add(usage)
                new = apply_proposal(proposal, context)
                fp = fingerprint(source, new)
                if not self.claims.take(self.shared.change_id(fp)):
                    raise ProposalRejected("another researcher has just run or started this change; "
                                           "propose a different one")
                return proposal, new, fp
            except ProposalRejected as exc:
                last = exc
                if exc.usage is not None:
                    self.usage.add(exc.usage)
                log.warning("%s: proposal rejected: %s", self.name, exc)
                context.feedback = str(exc)
                context.taken = self.shared.taken(self.rows())
        raise last

    def _fix_crash_once(self, n, proposal, source, commit, m):
        """A crash (not a timeout) gets one fix from a researcher that can fix crashes.
        The crashed version stays reachable from a tag. Returns (m, commit, note)."""
        if not (m.crashed and not m.timed_out and self.researcher.can_fix_crashes):
            return m, commit, ""
        context = self._context(self.rows(), source)
        context.taken = {}
        try:
            fix, usage = self.researcher.fix_crash(context, proposal, _tail(self.root / m.log_path))
            self.usage.add(usage)
            fixed_source = apply_proposal(fix, context)
        except LLMError as exc:
            log.warning("experiment %d: no fix for the crash: %s", n, exc)
            return m, commit, ""
        tag = self.shared.ws.tag(f"discard/{n}-crashed", commit)
        commit = self.wt.commit(n, proposal, fixed_source, amend=True, fix=fix.description)
        log.info("experiment %d crashed (%s); retrying with a fix: %s", n, m.error, fix.description)
        note = f" (first version crashed: {m.error}, tagged {tag}; retried once with a fix: {fix.description})"
        return self.measure(n, commit, 1, f"{n:03d}-fix", f"experiment {n}: the fix"), commit, note

    def _context(self, rows: list[ResultRow], source: str) -> ResearchContext:
        s = standing(rows)
        ws = self.shared.ws
        others = [f"{st['researcher']}: {st.get('doing', '')}" for st in self.shared.statuses()
                  if st["researcher"] != self.name and st.get("state") in ("running", "proposing")]
        return ResearchContext(
            file=self.config.file, source=source, program=ws.read("program.md"),
            results_tsv=ws.read(ws.results_path.name), notes_md=ws.read(ws.notes_path.name),
            rows=[r for r in rows if r.is_experiment or r.kind == "baseline"], dead_ends=dead_ends(rows),
            structural=needs_structural_change(rows), noise_floor=s.noise_floor, best_bpb=s.head_bpb,
            cap_bytes=self.config.cap_bytes, env=dict(self.config.env), protected=tuple(self.team.protected),
            taken=self.shared.taken(rows), running=others)

    # ------------------------------------------------------------- jobs

    def _run_job(self, job: Job) -> None:
        try:
            if job.kind == "holdout":
                done = self._holdout(job)
            elif job.kind == "combine":
                done = self._combine(job)
            else:
                done = self._seed_run(job)
        except BaseException:
            self.shared.finish_job(job, "abandoned")
            raise
        # A job found moot (decided meanwhile) stays open: another experiment may need that run.
        self.shared.finish_job(job, "done" if done else "abandoned")

    def _seed_run(self, job: Job) -> bool:
        rows = self.rows()
        s = standing(rows)
        if job.seed in s.seeds.get(job.commit, set()) or (job.kind == "seed" and job.n not in s.pending):
            return False  # done, or decided, since the job was handed out
        name = f"baseline-{job.seed}" if job.kind == "baseline" else f"{job.n:03d}-{job.commit[:7]}-seed{job.seed}"
        m = self.measure(job.n, job.commit, job.seed, name, job.describe())
        if job.kind == "baseline":
            if m.crashed:
                raise ResearchError(f"the baseline run crashed ({m.error}); see {m.log_path}. Fix "
                                    f"{self.config.file} before starting the loop")
            row = ResultRow(n=0, commit=job.commit, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status="keep",
                            kind="baseline", direction="baseline", description=f"baseline seed {job.seed}",
                            reasoning="the file as it is; the spread of its seeded runs is the noise",
                            researcher=self.name, seed=job.seed)
        else:
            first = next((r for r in rows if r.n == job.n and r.status == "pending"), None)
            row = ResultRow(n=job.n, commit=job.commit, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status="seed",
                            kind=first.kind if first else "tweak", direction=first.direction if first else "",
                            description=f"seed {job.seed} of {job.commit[:10]} for experiment {job.n}",
                            reasoning="an extra seed: the gain is too small to decide on the runs so far",
                            researcher=self.name, seed=job.seed)
        with self._phase(job.n, "record"):
            self.shared.record_run(row, m)
        return True

    def _combine(self, job: Job) -> bool:
        """A change measured on an older base, re-applied on the current head and measured there."""
        ws = self.shared.ws
        rows = self.rows()
        if job.n not in standing(rows).pending:
            return False  # decided since the job was handed out
        first = next(r for r in rows if r.n == job.n and r.status == "pending")
        last = next(r for r in reversed(rows) if r.n == job.n and r.status == "pending")
        head_source = ws.source_at(job.onto)
        new = reapply(ws.source_at(last.base), ws.source_at(job.commit), head_source)
        if new is None or new == head_source:
            why = ("the change does not apply on the current head " + job.onto[:10] if new is None
                   else "the change is already in the current head " + job.onto[:10])
            row = ResultRow(n=job.n, commit=job.commit, val_bpb=None, artifact_mb=None, status="discard",
                            kind=first.kind, direction=first.direction, description=first.description,
                            reasoning=first.reasoning, researcher=first.researcher, base=last.base,
                            fingerprint=first.fingerprint)
            with self._phase(job.n, "record"):
                self.shared.record_decision(row, why)
            return True
        parsed = proposal_from_commit(ws.repo.commit(job.commit).message, new)
        proposal = parsed[1] if parsed else ResearchProposal(
            hypothesis="?", evidence="?", risk="?", description=first.description, direction=first.direction or "?",
            kind=first.kind if first.kind != "baseline" else "tweak", edit_format="file", content=new)
        self.wt.reset(job.onto)
        commit = self.wt.commit(job.n, proposal, new, fix=f"re-applied on {job.onto[:10]}")
        m = self.measure(job.n, commit, 1, f"{job.n:03d}-on-{job.onto[:7]}", job.describe())
        row = ResultRow(n=job.n, commit=commit, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status="pending",
                        kind=first.kind, direction=first.direction,
                        description=first.description + f" (re-applied on {job.onto[:10]})",
                        reasoning=first.reasoning, researcher=self.name, seed=1, base=job.onto,
                        fingerprint=first.fingerprint)
        with self._phase(job.n, "record"):
            self.shared.record_run(row, m)
        return True

    def _holdout(self, job: Job) -> bool:
        """The harness re-scores a kept commit's artifact on the held-out split."""
        folder = self.shared.ws.state("artifacts")
        saved = sorted(folder.glob(f"{job.commit[:12]}-s*"), key=lambda p: p.name)
        if not saved:
            self.shared.record_holdout(job, None, self.name, "no artifact was left by the runs of this commit")
            return True
        files = self.shared.ws.files_at(job.commit)
        self.shared.check_protected(files, job.commit)
        files[self.config.artifact] = saved[0].read_bytes()
        command = shlex.split(self.team.rescore.format(artifact=self.config.artifact, file=self.config.file))
        seed = re.search(r"-s(\d+)-", saved[0].name)
        env = {**self.config.env, self.config.seed_var: seed.group(1) if seed else "1"}
        name = f"holdout-{job.commit[:10]}"
        spec = RunSpec(files, self.config.file, command=command, env=env, timeout_s=self.config.timeout_s,
                       gpus=self.config.gpus, cpus=self.config.cpus, name=name)
        self._status("running", job.describe())
        with self._phase(job.n, "holdout"):
            try:
                run = self.runner(spec, self.cancelled)
            except RunCancelled:
                raise Cancelled(f"{self.name} cancelled while re-scoring {job.commit[:10]}") from None
        log_path = self.shared.ws.log_path(name)
        log_path.write_text(run.log, encoding="utf-8")
        hits = _HOLDOUT.findall(run.log) or _ANY_BPB.findall(run.log)
        value = float(hits[-1]) if hits and not run.failed else None
        value = value if value is not None and math.isfinite(value) else None
        note = f"re-scored by `{' '.join(command)}`; log {log_path.relative_to(self.root)}" + (
            "" if value is not None else f"; failed (exit {run.returncode})")
        with self._phase(job.n, "record"):
            self.shared.record_holdout(job, value, self.name, note)
        return True

    # ------------------------------------------------------------- one run

    def measure(self, n: int, commit: str, seed: int, name: str, doing: str = "") -> Measurement:
        """Run `commit` with `seed` for experiment `n` (or take the measurement a killed
        researcher saved). Timed as the phase `run` (the training process's own time in
        its details, for the benchmarks)."""
        cfg = self.config
        ws = self.shared.ws
        log_path = ws.log_path(name)
        saved = log_path.with_suffix(".json")
        if saved.exists():
            data = json.loads(saved.read_text())
            if data.get("commit") == commit and data.get("seed") == seed:
                log.info("%s: %s was measured before the stop; using that measurement", self.name, name)
                return Measurement(**{k: v for k, v in data.items() if k != "commit"})
        if self.cancelled():  # stopped before the run: start none (a short run could finish before a poll)
            raise Cancelled(f"{self.name} cancelled before running {name}")
        with self._phase(n, "run") as details:  # the files out, the run, the log back and parsed
            files = ws.files_at(commit)
            self.shared.check_protected(files, commit)
            self._status("running", doing or name)
            spec = RunSpec(files, cfg.file, env={**cfg.env, cfg.seed_var: str(seed)}, timeout_s=cfg.timeout_s,
                           gpus=cfg.gpus, cpus=cfg.cpus, collect=(cfg.artifact,), name=name)
            log.info("%s running %s (%s, seed %d; %d GPU(s), timeout %.0fs)", self.name, name, cfg.file, seed,
                     cfg.gpus, cfg.timeout_s)
            t0 = time.perf_counter()
            try:
                run = self.runner(spec, self.cancelled)
            except RunCancelled:
                raise Cancelled(f"{self.name} cancelled while running {name}") from None
            wall = time.perf_counter() - t0
            details.update(training_s=run.seconds, run_wall_s=wall, run=name)
            log_path.write_text(run.log, encoding="utf-8")
            parsed = parse_log(run.log, metric=cfg.metric)
            val = parsed.get("val_bpb")
            val = float(val) if isinstance(val, (int, float)) and math.isfinite(val) else None
            crashed = run.failed or bool(parsed.get("crashed")) or val is None
            error = None
            if run.timed_out:
                error = f"timed out after {cfg.timeout_s:.0f}s"
            elif crashed:
                error = parsed.get("error") or (f"exit code {run.returncode}" if run.returncode else "no final val_bpb")
            artifact_file = ""
            if cfg.artifact in run.collected and not crashed:
                path = ws.state("artifacts") / f"{commit[:12]}-s{seed}-{Path(cfg.artifact).name}"
                path.write_bytes(run.collected[cfg.artifact])
                artifact_file = str(path.relative_to(self.root))
            m = Measurement(val_bpb=val if not crashed else None,
                            artifact_bytes=parsed.get("artifact_bytes") or run.artifact_bytes,
                            crashed=crashed, error=error, seconds=run.seconds, timed_out=run.timed_out,
                            steps=parsed.get("steps"), log_path=str(log_path.relative_to(self.root)), wall_s=wall,
                            metric_line=f"{parsed['metric_line_no']}: {parsed['metric_line']}"
                            if parsed.get("metric_line") else "", last_val_bpb=parsed.get("last_val_bpb"),
                            peak_memory_mib=parsed.get("peak_memory_mib"),
                            training_seconds=parsed.get("training_seconds"), seed=seed, artifact_file=artifact_file)
            saved.write_text(json.dumps({"commit": commit, **asdict(m)}))
        log.info("%s %s: %s in %.0fs", self.name, name, f"crash ({error})" if crashed else f"val_bpb {val:.4f}" + (
            f", artifact {m.artifact_bytes:,} bytes" if m.artifact_bytes is not None else ""), run.seconds)
        return m

    @contextlib.contextmanager
    def _phase(self, n: int, name: str) -> Iterator[dict]:
        """Time one phase for the `on_phase` hook (the benchmark's); no effect without one."""
        details: dict = {"researcher": self.name}
        t0 = time.perf_counter()
        try:
            yield details
        finally:
            if self.on_phase is not None:
                self.on_phase(n, name, time.perf_counter() - t0, details)

    def summary(self, seconds: float = 0.0) -> dict:
        return summarise(self.rows(), self.config, self.shared.ws.head(), seconds, proposer=self.researcher.name,
                         usage=self.usage, stop_reason=self.stop_reason, root=self.root)


def summarise(rows: list[ResultRow], config: ResearchConfig, head: str, seconds: float, *, proposer: str,
              usage: Usage, stop_reason: str, root: Path) -> dict:
    s = standing(rows)
    counts = {k: sum(r.status == k and r.is_experiment for r in rows) for k in ("keep", "discard", "crash")}
    counts["backtrack"] = sum(r.status == "backtrack" for r in rows)
    return {"repo": str(root), "branch": config.branch, "head": head, "best_commit": s.head_commit,
            "best_val_bpb": s.head_bpb, "baseline_val_bpb": s.baseline_bpb, "noise_floor": s.noise_floor,
            "experiments": len(s.decided), "pending": len(s.pending), "runs": sum(r.is_run for r in rows),
            **counts, "stop_reason": stop_reason, "proposer": proposer, "researchers": config.researchers,
            "llm_tokens": usage.input_tokens + usage.output_tokens, "llm_cost_usd": usage.cost_usd,
            "seconds": round(seconds, 1)}


def _warm_up() -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import scipy.stats  # noqa: F401
    except Exception:  # noqa: BLE001 - only a head start
        pass


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
