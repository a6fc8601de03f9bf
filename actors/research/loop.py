"""The AutoResearch loop: the keep/discard loop that improves one training script.

On branch `autoresearch/<tag>` of a git repository (a fresh workspace made from
`examples/golf/` when no repository is given), after running the file as it is
twice (the mean is the baseline, the spread the noise floor), each experiment
takes eight steps, as `AutoResearch.step` reads:

1. propose one change (Claude with ANTHROPIC_API_KEY set, else the offline
   proposer), validated: it parses, applies, avoids dead ends;
2. commit it, one commit per experiment;
3. run it as a Ray task that holds its GPUs, under a wall-clock timeout;
4. a crash gets one fix attempt when the researcher can fix crashes;
5. decide: keep when val_bpb beats the kept head by more than the noise floor
   and the artifact is under the cap (`actors.research.rules.decide`);
6. otherwise tag it `autoresearch/<tag>/discard/<n>` and reset to the kept head;
7. record: a row in results.tsv, the ANALYSIS block, notes.md;
8. backtrack to the best commit when the kept head has regressed.

The branch is claimed in the WorkTracker (`autoresearch:<repo>:<branch>`) and
heartbeated while the loop runs. Nothing is ever pushed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from actors.research.config import ResearchConfig, ResearchError
from actors.research.logparse import parse_log
from actors.research.memory import LogEntry, append_result, read_notes, read_results, render_notes
from actors.research.proposals import ProposalRejected, ResearchContext, ResearchProposal, Researcher, apply_proposal
from actors.research.repo_settings import apply_repo_settings
from actors.research.researchers import make_researcher
from actors.research.rules import (
    Measurement,
    ResultRow,
    Standing,
    analysis_block,
    backtrack_row,
    dead_ends,
    decide,
    needs_structural_change,
    standing,
)
from actors.research.workspace import Workspace
from actors.shared.llm import LLMError, Usage
from analysis.files import atomic_write_text

log = logging.getLogger(__name__)

WORK_PREFIX = "autoresearch:"
BASELINE_RUNS = 2
PROPOSAL_ATTEMPTS = 2  # a rejected proposal gets one more try, with the rejection as feedback

# (experiment number, phase, seconds, details): what a benchmark hooks in to time the loop.
PhaseHook = Callable[[int, str, float, dict], None]


class AutoResearch:
    """The loop. Use it in-process, or as a Ray actor (`start_autoresearch`)."""

    def __init__(self, config: ResearchConfig, researcher: Researcher | None = None,
                 on_phase: PhaseHook | None = None) -> None:
        if not logging.getLogger().handlers:
            # In a Ray actor nothing configures logging: without this the progress
            # lines (experiment n, keep/discard) never reach the driver's console.
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.config = config
        self.researcher = researcher or make_researcher(offline_only=config.offline, model=config.model,
                                                        seed=config.seed)
        self.on_phase = on_phase
        self.usage = Usage()
        self.ws: Workspace | None = None
        self.lease = None
        self.ideas: list[str] = []
        self.log_text = ""
        self.stop_reason = ""
        self._pending: tuple[int, ResearchProposal] | None = None  # committed, not yet measured (resume)

    @property
    def root(self) -> Path:
        return self.ws.root

    @property
    def results_path(self) -> Path:
        return self.ws.results_path

    # ------------------------------------------------------------- set-up

    def prepare(self) -> None:
        """Open the repository on the branch (new, or existing with resume) and claim it."""
        self.ws = Workspace.open(self.config)
        self.config = apply_repo_settings(self.config, self.root)  # its metric line and artifact limit
        self._claim()
        try:
            self.ideas, self.log_text = read_notes(self.ws.notes_path)
            if self.ws.resumed:
                self._recover()
        except BaseException:
            self._release("set-up failed")
            raise
        log.info("AutoResearch on %s, branch %s, file %s (%s); proposer %s", self.root, self.config.branch,
                 self.config.file, "resumed" if self.ws.resumed else "new", self.researcher.name)

    @property
    def work_id(self) -> str:
        return f"{WORK_PREFIX}{self.root}:{self.config.branch}"

    def _claim(self) -> None:
        if self.config.tracker_namespace is None:
            return
        import ray

        from actors.tracker.actor import ACTOR_NAME
        from actors.tracker.client import LeaseRefused, TrackerClient, process_owner

        client = TrackerClient(ray.get_actor(ACTOR_NAME, namespace=self.config.tracker_namespace))
        lease = client.hold(self.work_id, self.config.owner or process_owner("autoresearch"))
        try:
            self.lease = lease.acquire()
        except LeaseRefused as exc:
            raise ResearchError(f"branch {self.config.branch} of {self.root} is being worked on "
                                f"({exc}); two AutoResearch loops never share a branch") from None

    def _release(self, reason: str) -> None:
        """Let go of the branch: `abandoned`, because a research branch is never done."""
        from actors.tracker.client import LeaseLost

        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                lease.finish("abandoned", {"reason": reason[:300]})
            except LeaseLost as exc:
                log.warning("%s", exc)

    def _lease_lost(self) -> bool:
        return self.lease is not None and self.lease.lost.is_set()

    def rows(self) -> list[ResultRow]:
        return read_results(self.results_path)

    def _recover(self) -> None:
        """After a crash of the actor: bring the branch back in line with results.tsv."""
        rows = self.rows()
        s = standing(rows)
        head = self.ws.head()
        if s.head_commit is None or head == s.head_commit:
            self._backtrack_if_regressed(rows)
            return
        parsed = self.ws.head_experiment()
        if parsed and self.ws.head_parents() == [s.head_commit] and parsed[0] > s.experiments:
            # Committed, never measured: run it again rather than lose it.
            log.info("resume: experiment %d (%s) was committed but not measured; running it", parsed[0],
                     parsed[1].description)
            self._pending = parsed
            return
        tag = self.ws.tag(f"discard/{s.experiments + 1}-orphan", head)
        log.warning("resume: branch head %s is not the kept head %s in results.tsv; tagged it %s and reset",
                    head[:10], s.head_commit[:10], tag)
        self.ws.reset(s.head_commit)

    # ------------------------------------------------------------- the baseline

    def baseline(self) -> None:
        """Run the file as it is until BASELINE_RUNS runs are recorded."""
        rows = self.rows()
        done = [r for r in rows if r.kind == "baseline"]
        head, source = self.ws.head(), self.ws.source()
        for i in range(len(done), BASELINE_RUNS):
            m = self._measure(source, f"baseline-{i + 1}")
            if m.crashed:
                raise ResearchError(f"the baseline run crashed ({m.error}); see {m.log_path}. Fix "
                                    f"{self.config.file} before starting the loop")
            append_result(self.results_path, ResultRow(
                n=0, commit=head, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status="keep", kind="baseline",
                direction="baseline", description=f"baseline run {i + 1} of {BASELINE_RUNS}",
                reasoning="the file as it is; the spread of the baseline runs is the noise floor"))
        self._write_notes(self.rows())

    # ------------------------------------------------------------- one experiment

    def step(self) -> ResultRow:
        """One experiment, from proposal to row, in the loop's eight steps. Returns the row."""
        rows = self.rows()  # read once; the rows in hand stay current from here on
        s = standing(rows)
        n, proposal, source, commit = self._propose_and_commit(rows, s)          # 1, 2
        with self._phase(n, "run") as details:
            m = self._measure(source, f"{n:03d}")                                 # 3
            details.update(training_s=m.seconds, run_wall_s=m.wall_s)
        m, commit, source, fixed = self._fix_crash_once(n, rows, proposal, source, commit, m)  # 4
        with self._phase(n, "record"):
            status, why = decide(m, proposal.kind, s, self.config.artifact_cap)   # 5
            if status != "keep":
                why += self._discard(n, commit, s.head_commit)                    # 6
            row = self._record(n, proposal, commit, m, s, status, why, fixed, rows)  # 7
            rows = self._backtrack_if_regressed(rows + [row])                     # 8
            self._write_notes(rows)
            self._record_metrics(rows)
        return row

    def _propose_and_commit(self, rows: list[ResultRow], s: Standing) -> tuple[int, ResearchProposal, str, str]:
        pending, self._pending = self._pending, None
        if pending:  # resumed: committed before the actor died, never measured
            n, proposal = pending
            return n, proposal, self.ws.source(), self.ws.head()
        n = s.experiments + 1
        with self._phase(n, "propose"):
            proposal, source = self._ask(self._context(rows, self.ws.source()))
        with self._phase(n, "commit"):
            commit = self.ws.commit(n, proposal, source)
        if proposal.ideas:
            self.ideas = list(proposal.ideas)
        log.info("experiment %d: %s [%s, %s] commit %s", n, proposal.description, proposal.kind,
                 proposal.direction, commit[:10])
        return n, proposal, source, commit

    def _fix_crash_once(self, n, rows, proposal, source, commit, m):
        """A crash (not a timeout) gets one fix from a researcher that can fix crashes.
        The crashed version stays reachable from a tag. Returns (m, commit, source, note)."""
        if not (m.crashed and not m.timed_out and self.researcher.can_fix_crashes):
            return m, commit, source, ""
        try:
            fix, fixed_source = self._ask(self._context(rows, source),
                                          fix=(proposal, _tail(self.root / m.log_path)))
        except LLMError as exc:
            log.warning("experiment %d: no fix for the crash: %s", n, exc)
            return m, commit, source, ""
        tag = self.ws.tag(f"discard/{n}-crashed", commit)
        commit = self.ws.commit(n, proposal, fixed_source, amend=True, fix=fix.description)
        log.info("experiment %d crashed (%s); retrying with a fix: %s", n, m.error, fix.description)
        note = f" (first version crashed: {m.error}, tagged {tag}; retried once with a fix: {fix.description})"
        return self._measure(fixed_source, f"{n:03d}-fix"), commit, fixed_source, note

    def _discard(self, n: int, commit: str, head: str) -> str:
        tag = self.ws.tag(f"discard/{n}", commit)
        self.ws.reset(head)
        return f"; commit {commit[:10]} tagged {tag}, branch reset to {head[:10]}"

    def _record(self, n, proposal, commit, m, s, status, why, fixed, rows) -> ResultRow:
        row = ResultRow(n=n, commit=commit, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status=status,
                        kind=proposal.kind, direction=proposal.direction, description=proposal.description + fixed,
                        reasoning=proposal.reasoning_block())
        append_result(self.results_path, row)
        analysis = analysis_block(m, proposal.direction, s, status, why, rows + [row])
        entry = LogEntry(n=n, title=proposal.description, status=status, commit=commit,
                         reasoning=proposal.reasoning_block(), analysis=analysis)
        self.log_text = (self.log_text.rstrip() + "\n\n" + entry.render()).strip()
        return row

    def _backtrack_if_regressed(self, rows: list[ResultRow]) -> list[ResultRow]:
        row = backtrack_row(rows)
        if row is None:
            return rows
        s = standing(rows)
        log.warning("regression: kept head %s at %.4f is worse than the best %s at %.4f; resetting to the best",
                    s.head_commit[:10], s.head_bpb, s.best_commit[:10], s.best_bpb)
        self.ws.reset(row.commit)
        append_result(self.results_path, row)
        return rows + [row]

    # ------------------------------------------------------------- helpers of the steps

    def _context(self, rows: list[ResultRow], source: str) -> ResearchContext:
        s = standing(rows)
        return ResearchContext(
            file=self.config.file, source=source, program=self.ws.read("program.md"),
            results_tsv=self.ws.read(self.results_path.name), notes_md=self.ws.read(self.ws.notes_path.name),
            rows=rows, dead_ends=dead_ends(rows), structural=needs_structural_change(rows),
            noise_floor=s.noise_floor, best_bpb=s.best_bpb, cap_bytes=self.config.cap_bytes,
            env=dict(self.config.env))

    def _ask(self, context: ResearchContext, fix: tuple[ResearchProposal, str] | None = None
             ) -> tuple[ResearchProposal, str]:
        """A validated proposal and the source it makes; one retry with the rejection as feedback."""
        last = None
        for _ in range(PROPOSAL_ATTEMPTS):
            if fix is None:
                proposal, usage = self.researcher.propose(context)
            else:
                proposal, usage = self.researcher.fix_crash(context, *fix)
            self.usage.add(usage)
            try:
                return proposal, apply_proposal(proposal, context)
            except ProposalRejected as exc:
                last = exc
                log.warning("proposal rejected: %s", exc)
                context.feedback = str(exc)
        raise last

    def _measure(self, source: str, name: str) -> Measurement:
        from actors.research.runner import repo_files, run_on_ray

        cfg = self.config
        log_path = self.ws.log_path(name)
        log.info("running %s (%s; %d GPU(s), timeout %.0fs)", name, cfg.file, cfg.gpus, cfg.timeout_s)
        t0 = time.perf_counter()
        run = run_on_ray(source, cfg.file, env=cfg.env, timeout_s=cfg.timeout_s, gpus=cfg.gpus, cpus=cfg.cpus,
                         files=repo_files(self.root, cfg.file))
        wall = time.perf_counter() - t0
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
        m = Measurement(val_bpb=val if not crashed else None,
                        artifact_bytes=parsed.get("artifact_bytes") or run.artifact_bytes,
                        crashed=crashed, error=error, seconds=run.seconds, timed_out=run.timed_out,
                        steps=parsed.get("steps"), log_path=str(log_path.relative_to(self.root)), wall_s=wall,
                        metric_line=f"{parsed['metric_line_no']}: {parsed['metric_line']}" if parsed["metric_line"]
                        else "", last_val_bpb=parsed["last_val_bpb"], peak_memory_mib=parsed["peak_memory_mib"],
                        training_seconds=parsed["training_seconds"])
        log.info("%s: %s in %.0fs", name, f"crash ({error})" if crashed else f"val_bpb {val:.4f}" + (
            f", artifact {m.artifact_bytes:,} bytes" if m.artifact_bytes is not None else ""), run.seconds)
        return m

    def _write_notes(self, rows: list[ResultRow]) -> None:
        atomic_write_text(self.ws.notes_path, render_notes(
            branch=self.config.branch, file=self.config.file, rows=rows, ideas=self.ideas,
            log_text=self.log_text, cap_bytes=self.config.cap_bytes))

    def _record_metrics(self, rows: list[ResultRow]) -> None:
        from actors.shared.metrics import record_autoresearch_best

        s = standing(rows)
        if s.best_bpb is not None:
            record_autoresearch_best(self.config.branch, s.best_bpb)

    @contextlib.contextmanager
    def _phase(self, n: int, name: str) -> Iterator[dict]:
        """Time one phase for the `on_phase` hook (the benchmark's); no effect without one."""
        details: dict = {}
        t0 = time.perf_counter()
        try:
            yield details
        finally:
            if self.on_phase is not None:
                self.on_phase(n, name, time.perf_counter() - t0, details)

    # ------------------------------------------------------------- the whole run

    def run(self, iterations: int) -> dict:
        """Prepare, baseline, then `iterations` experiments. Returns a summary."""
        t0 = time.time()
        self.prepare()
        try:
            self.baseline()
            self._record_metrics(self.rows())
            for i in range(iterations):
                if self._lease_lost():
                    self.stop_reason = "lease on the branch lost: another loop may hold it now"
                    log.error("%s; stopping", self.stop_reason)
                    break
                try:
                    row = self.step()
                except ProposalRejected as exc:
                    log.error("no valid proposal after %d attempts: %s; stopping", PROPOSAL_ATTEMPTS, exc)
                    self.stop_reason = f"no valid proposal: {exc}"
                    break
                log.info("[%d/%d] experiment %d %s: %s", i + 1, iterations, row.n, row.status.upper(),
                         row.description)
        except BaseException as exc:
            self._release(f"stopped by {type(exc).__name__}: {exc}")
            raise
        self._release("finished its iterations")
        return self.summary(time.time() - t0)

    def summary(self, seconds: float = 0.0) -> dict:
        rows = self.rows()
        s = standing(rows)
        counts = {k: sum(r.status == k and r.kind != "baseline" for r in rows)
                  for k in ("keep", "discard", "crash", "backtrack")}
        return {"repo": str(self.root), "branch": self.config.branch, "head": self.ws.head(),
                "best_commit": s.best_commit, "best_val_bpb": s.best_bpb, "baseline_val_bpb": s.baseline_bpb,
                "noise_floor": s.noise_floor, "experiments": s.experiments, **counts,
                "stop_reason": self.stop_reason, "proposer": self.researcher.name,
                "llm_tokens": self.usage.input_tokens + self.usage.output_tokens,
                "llm_cost_usd": self.usage.cost_usd, "seconds": round(seconds, 1)}


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def start_autoresearch(config: ResearchConfig, researcher: Researcher | None = None, name: str | None = None):
    """The loop as a Ray actor on this node (the repository lives here). Returns the handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = name or f"autoresearch-{config.tag}-{uuid.uuid4().hex[:6]}"
    config = config.model_copy(update={"owner": config.owner or f"autoresearch@actor:{config.tracker_namespace}/{name}"})
    here = ray.get_runtime_context().get_node_id()
    cls = ray.remote(AutoResearch)
    return cls.options(
        name=name, namespace=config.tracker_namespace, num_cpus=0, max_restarts=0, max_task_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(config, researcher)
