"""The AutoResearch actor: the keep/discard loop that improves one training script.

On branch `autoresearch/<tag>` of a git repository (a fresh workspace made from
`examples/golf/` when no `--repo` is given):

1. run the file as it is, twice: the mean is the baseline, the spread the noise floor;
2. propose one change (Claude with ANTHROPIC_API_KEY set, else the offline
   proposer), validated: it parses, applies, avoids dead ends;
3. commit it (gitpython), one commit per experiment;
4. run it as a Ray task that holds its GPUs, under a wall-clock timeout;
5. parse the log, write the ANALYSIS block;
6. keep it when val_bpb improves by more than the noise floor and the artifact is
   under the cap; otherwise tag it `autoresearch/<tag>/discard/<n>` and
   `git reset --hard` to the kept head; a crash gets one fix attempt (LLM mode);
7. append a row to results.tsv and rewrite notes.md (both untracked);
8. backtrack: dead ends, reset to the best commit after a regression, a
   structural change after a plateau.

The branch is claimed in the WorkTracker (`autoresearch:<repo>:<branch>`) and
heartbeated while the loop runs. Nothing is ever pushed.

    python -m actors.autoresearch run [--repo PATH] [--iterations K] [--tag T] [--resume] [--offline]
    python -m actors.autoresearch parse-log RUN.LOG
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from actors.golf_log import parse_log
from actors.llm import LLMError, Usage
from actors.research_log import (
    NOTES_FILE,
    RESULTS_FILE,
    LogEntry,
    ResultRow,
    append_result,
    dead_ends,
    needs_structural_change,
    normalise_direction,
    read_notes,
    read_results,
    regressed,
    render_notes,
    standing,
)
from actors.research_proposals import (
    ProposalRejected,
    ResearchContext,
    ResearchProposal,
    Researcher,
    apply_proposal,
    make_researcher,
)

log = logging.getLogger(__name__)

ARTIFACT_CAP_BYTES = 16_000_000
DEFAULT_TIMEOUT_S = 15 * 60
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "examples" / "golf"
# Beside the WorkTracker's state: outlives `ray job submit` working directories.
DEFAULT_WORKSPACE = Path("~/.ray-autoresearch/workspace")
STATE_DIR = ".autoresearch"  # run logs, untracked
WORK_PREFIX = "autoresearch:"
BASELINE_RUNS = 2
PROPOSAL_ATTEMPTS = 2  # a rejected proposal gets one more try, with the rejection as feedback
_COMMIT_SUBJECT = re.compile(r"^autoresearch (\d+): (.*)$")


class ResearchError(RuntimeError):
    """A problem the user can fix (bad repo, existing branch, branch held): one clear message."""


def default_tag(today: _dt.date | None = None) -> str:
    """`nov22` for 22 November, as the Parameter Golf records name their runs."""
    d = today or _dt.date.today()
    return d.strftime("%b").lower() + str(d.day)


@dataclass
class ResearchConfig:
    repo: Path | None = None  # None: a fresh workspace from the template
    workspace: Path = DEFAULT_WORKSPACE
    file: str = "train_gpt.py"
    tag: str = field(default_factory=default_tag)
    resume: bool | str = False  # True, False, or "auto" (resume when the branch exists)
    timeout_s: float = DEFAULT_TIMEOUT_S
    gpus: int = 0
    cpus: float = 1.0
    env: dict[str, str] = field(default_factory=dict)  # exported into every run (e.g. MAX_WALLCLOCK_SECONDS)
    cap_bytes: int = ARTIFACT_CAP_BYTES
    offline: bool = False
    model: str | None = None
    seed: int = 0
    tracker_namespace: str | None = None  # None: no WorkTracker claim (library use without a cluster)
    owner: str | None = None

    def __post_init__(self) -> None:
        self.workspace = Path(self.workspace).expanduser()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", self.tag or ""):
            raise ResearchError(f"--tag {self.tag!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        if self.timeout_s <= 0:
            raise ResearchError(f"timeout must be positive, got {self.timeout_s}")
        if self.gpus < 0:
            raise ResearchError(f"--gpus must be >= 0, got {self.gpus}")
        if Path(self.file).is_absolute() or ".." in Path(self.file).parts:
            raise ResearchError(f"--file must be a path inside the repository, got {self.file}")

    @property
    def branch(self) -> str:
        return f"autoresearch/{self.tag}"


# --------------------------------------------------------------------------- git


def _git():
    import git

    return git


def _signature():
    git = _git()
    return git.Actor("AutoResearch", "autoresearch@localhost")


def make_workspace(path: Path, template: Path = TEMPLATE_DIR) -> Path:
    """A fresh git repository holding the template's files, committed once."""
    git = _git()
    path = Path(path).resolve()
    if (path / ".git").exists():
        return path
    if path.exists() and any(path.iterdir()):
        raise ResearchError(f"workspace {path} exists, is not empty and is not a git repository")
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        for f in sorted(template.iterdir()):
            if f.is_file() and f.suffix in (".py", ".md"):
                shutil.copy2(f, tmp / f.name)
        repo = git.Repo.init(tmp, initial_branch="main")
        repo.index.add([f.name for f in sorted(tmp.iterdir()) if f.is_file()])
        repo.index.commit(f"template: {template.name}", author=_signature(), committer=_signature())
        repo.close()
        if path.exists():
            path.rmdir()
        tmp.rename(path)  # a workspace appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("made a research workspace from %s at %s", template, path)
    return path


def _exclude(repo, names: list[str]) -> None:
    """List `names` in .git/info/exclude, so they stay untracked and survive resets."""
    path = Path(repo.git_dir) / "info" / "exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text().splitlines() if path.exists() else []
    missing = [n for n in names if n not in existing]
    if missing:
        with open(path, "a") as f:
            if existing and existing[-1] != "":
                f.write("\n")
            f.write("# AutoResearch: kept out of git so that resets never touch them\n")
            f.write("\n".join(missing) + "\n")


def commit_message(n: int, proposal: ResearchProposal) -> str:
    return (f"autoresearch {n}: {proposal.description}\n\n{proposal.reasoning_block()}\n"
            f"Direction: {proposal.direction}\nKind: {proposal.kind}\n")


def proposal_from_commit(message: str, source: str) -> tuple[int, ResearchProposal] | None:
    """Read back an experiment commit written by `commit_message`."""
    lines = message.splitlines()
    m = _COMMIT_SUBJECT.match(lines[0]) if lines else None
    if not m:
        return None
    fields = {}
    for line in lines[1:]:
        key, sep, value = line.partition(": ")
        if sep and key in ("Hypothesis", "Evidence", "Risk", "Direction", "Kind"):
            fields[key] = value.strip()
    try:
        return int(m.group(1)), ResearchProposal(
            hypothesis=fields.get("Hypothesis", "?"), evidence=fields.get("Evidence", "?"),
            risk=fields.get("Risk", "?"), description=m.group(2), direction=fields.get("Direction", "?"),
            kind=fields.get("Kind", "tweak"), edit_format="file", content=source)
    except ValueError:
        return None


# --------------------------------------------------------------------------- the loop


@dataclass
class Measurement:
    val_bpb: float | None
    artifact_bytes: int | None
    crashed: bool
    error: str | None
    seconds: float  # the training process's own wall time
    timed_out: bool
    steps: int | None
    log_path: Path
    wall_s: float = 0.0  # submit to result, Ray scheduling and transfer included

    @property
    def artifact_mb(self) -> float | None:
        return None if self.artifact_bytes is None else self.artifact_bytes / 1e6


class AutoResearch:
    """The loop. Use it in-process, or as a Ray actor (`start_autoresearch`)."""

    def __init__(self, config: ResearchConfig, researcher: Researcher | None = None) -> None:
        if not logging.getLogger().handlers:
            # In a Ray actor nothing configures logging: without this the progress
            # lines (experiment n, keep/discard) never reach the driver's console.
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        self.config = config
        self.researcher = researcher or make_researcher(offline_only=config.offline, model=config.model,
                                                        seed=config.seed)
        self.usage = Usage()
        self.repo = None
        self.root: Path | None = None
        self.claim = None
        self.keeper = None
        self.tracker = None
        self.ideas: list[str] = []
        self.log_text = ""
        self.stop_reason = ""
        self._pending: tuple[int, ResearchProposal] | None = None  # committed, not yet measured (resume)
        self.timings: list[dict] = []  # per experiment: seconds spent in each phase (bench_autoresearch)

    # ------------------------------------------------------------- set-up

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def notes_path(self) -> Path:
        return self.root / NOTES_FILE

    def prepare(self) -> None:
        """Open the repo, check out the branch (new, or existing with resume), claim it."""
        git = _git()
        cfg = self.config
        root = Path(cfg.repo).resolve() if cfg.repo else make_workspace(cfg.workspace)
        try:
            repo = git.Repo(root)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ResearchError(f"--repo {root} is not a git repository") from None
        if Path(repo.working_tree_dir).resolve() != root:
            raise ResearchError(f"--repo {root} is inside the repository {repo.working_tree_dir}; "
                                "pass the repository's top folder")
        try:
            repo.head.commit
        except ValueError:
            raise ResearchError(f"--repo {root} has no commits yet; commit {cfg.file} first") from None
        self.repo, self.root = repo, root
        _exclude(repo, [RESULTS_FILE, NOTES_FILE, STATE_DIR + "/"])
        if repo.is_dirty(untracked_files=False):
            raise ResearchError(f"{root} has uncommitted changes to tracked files; commit or stash them first "
                                "(the loop resets the working tree after every discard)")
        exists = cfg.branch in [h.name for h in repo.heads]
        resume = cfg.resume == "auto" and exists or cfg.resume is True
        if exists and not resume:
            raise ResearchError(f"branch {cfg.branch} already exists in {root}: pass --resume to continue it, "
                                "or --tag to start another")
        if resume and not exists:
            raise ResearchError(f"nothing to resume: {root} has no branch {cfg.branch}")
        self._claim()
        try:
            if exists:
                repo.heads[cfg.branch].checkout()
            else:
                repo.create_head(cfg.branch, repo.head.commit).checkout()
            self._switch_files()
            if not (root / cfg.file).is_file():
                raise ResearchError(f"{cfg.file} is not in {root} (branch {cfg.branch})")
            self.ideas, self.log_text = read_notes(self.notes_path)
            if resume:
                self._recover()
        except BaseException:
            self._release("abandoned", {"reason": "set-up failed"})
            raise
        log.info("AutoResearch on %s, branch %s, file %s (%s); proposer %s", root, cfg.branch, cfg.file,
                 "resumed" if resume else "new", self.researcher.name)

    # ------------------------------------------------------------- tracker

    @property
    def work_id(self) -> str:
        return f"{WORK_PREFIX}{self.root}:{self.config.branch}"

    def _owner(self) -> str:
        if self.config.owner:
            return self.config.owner
        try:
            import ray

            name = ray.get_runtime_context().get_actor_name()
        except Exception:  # noqa: BLE001 - not in Ray at all
            name = None
        return f"actor:{name}" if name else f"pid:{socket.gethostname()}:{os.getpid()}"

    def _claim(self) -> None:
        if self.config.tracker_namespace is None:
            return
        import ray

        from actors.tracker_client import LeaseKeeper, TrackerClient
        from actors.work_tracker import ACTOR_NAME

        self.tracker = TrackerClient(ray.get_actor(ACTOR_NAME, namespace=self.config.tracker_namespace))
        owner = self._owner()
        claim = self.tracker.claim(self.work_id, owner)
        if claim is None:
            held = self.tracker.get(self.work_id)
            if held is not None and held.state == "claimed" and self._holder_is_gone(held.owner):
                log.warning("branch %s is held by %s, which is gone: taking it over", self.config.branch, held.owner)
                self.tracker.release(self.work_id, held.token, "abandoned",
                                     {"reason": f"holder gone; taken over by {owner}"})
                claim = self.tracker.claim(self.work_id, owner)
        if claim is None:
            held = self.tracker.get(self.work_id)
            who = f" by {held.owner}" if held is not None else ""
            raise ResearchError(f"branch {self.config.branch} of {self.root} is being worked on{who}; "
                                "two AutoResearch loops never share a branch")
        self.claim = claim
        self.keeper = LeaseKeeper(self.tracker, claim)
        self.keeper.start()

    def _holder_is_gone(self, owner: str) -> bool:
        kind, _, rest = owner.partition(":")
        if kind == "actor":
            import ray

            try:
                ray.get_actor(rest, namespace=self.config.tracker_namespace)
                return False
            except ValueError:
                return True
        if kind == "pid":
            host, _, pid = rest.rpartition(":")
            if host != socket.gethostname():
                return False  # cannot tell from here: the lease expires after the TTL
            try:
                os.kill(int(pid), 0)
                return False
            except ProcessLookupError:
                return True
            except (PermissionError, ValueError):
                return False
        return False

    def _release(self, outcome: str, result: dict) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        if self.claim is not None and self.tracker is not None:
            self.tracker.release(self.work_id, self.claim.token, outcome, result)
        self.claim = self.keeper = None

    def _switch_files(self) -> None:
        """results.tsv and notes.md at the top belong to one branch at a time (named in
        .autoresearch/current); another branch's are parked under .autoresearch/branches/."""
        state = self.root / STATE_DIR
        marker = state / "current"
        current = marker.read_text().strip() if marker.exists() else None
        names = (RESULTS_FILE, NOTES_FILE)
        if current != self.config.branch:
            if current:
                park = state / "branches" / current.replace("/", "__")
                park.mkdir(parents=True, exist_ok=True)
                for name in names:
                    if (self.root / name).exists():
                        os.replace(self.root / name, park / name)
            mine = state / "branches" / self.config.branch.replace("/", "__")
            for name in names:
                if (mine / name).exists():
                    os.replace(mine / name, self.root / name)
                elif (self.root / name).exists():
                    # Files of unknown origin would be read as this branch's history.
                    os.replace(self.root / name, self.root / STATE_DIR / f"{name}.{time.strftime('%Y%m%d-%H%M%S')}")
        state.mkdir(parents=True, exist_ok=True)
        marker.write_text(self.config.branch + "\n")

    def _lease_lost(self) -> bool:
        return self.keeper is not None and self.keeper.lost.is_set()

    # ------------------------------------------------------------- state

    def rows(self) -> list[ResultRow]:
        return read_results(self.results_path)

    def _head(self) -> str:
        return self.repo.head.commit.hexsha

    def _reset(self, commit: str) -> None:
        self.repo.head.reset(commit, index=True, working_tree=True)

    def _tag(self, name: str, commit: str) -> str:
        tag = f"autoresearch/{self.config.tag}/{name}"
        if tag in [t.name for t in self.repo.tags]:
            tag = f"{tag}-{commit[:8]}"
        self.repo.create_tag(tag, ref=commit)
        return tag

    def _recover(self) -> None:
        """After a crash of the actor: bring the branch back in line with results.tsv."""
        rows = self.rows()
        s = standing(rows)
        head = self._head()
        if s.head_commit is None or head == s.head_commit:
            self._pending = None
            self._check_regression(rows)
            return
        commit = self.repo.head.commit
        parsed = proposal_from_commit(commit.message, (self.root / self.config.file).read_text())
        parents = [p.hexsha for p in commit.parents]
        if parsed and parents == [s.head_commit] and parsed[0] > s.experiments:
            # Committed, never measured: run it again rather than lose it.
            log.info("resume: experiment %d (%s) was committed but not measured; running it", parsed[0],
                     parsed[1].description)
            self._pending = parsed
            return
        tag = self._tag(f"discard/{s.experiments + 1}-orphan", head)
        log.warning("resume: branch head %s is not the kept head %s in results.tsv; tagged it %s and reset",
                    head[:10], s.head_commit[:10], tag)
        self._reset(s.head_commit)
        self._pending = None

    # ------------------------------------------------------------- running

    def _measure(self, source: str, name: str) -> Measurement:
        from actors.golf_runner import run_on_ray

        cfg = self.config
        log_path = self.root / STATE_DIR / "logs" / cfg.tag / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("running %s (%s; %d GPU(s), timeout %.0fs)", name, cfg.file, cfg.gpus, cfg.timeout_s)
        t0 = time.perf_counter()
        run = run_on_ray(source, Path(cfg.file).name, env=cfg.env, timeout_s=cfg.timeout_s, gpus=cfg.gpus,
                         cpus=cfg.cpus)
        wall = time.perf_counter() - t0
        log_path.write_text(run.log, encoding="utf-8")
        parsed = parse_log(run.log)
        val = parsed.get("val_bpb")
        val = float(val) if isinstance(val, (int, float)) and math.isfinite(val) else None
        crashed = run.failed or bool(parsed.get("crashed")) or val is None
        error = None
        if run.timed_out:
            error = f"timed out after {cfg.timeout_s:.0f}s"
        elif crashed:
            error = parsed.get("error") or (f"exit code {run.returncode}" if run.returncode else "no final val_bpb")
        m = Measurement(val_bpb=val if not crashed else None, artifact_bytes=parsed.get("artifact_bytes"),
                        crashed=crashed, error=error, seconds=run.seconds, timed_out=run.timed_out,
                        steps=parsed.get("steps"), log_path=log_path, wall_s=wall)
        log.info("%s: %s in %.0fs", name, f"crash ({error})" if crashed else f"val_bpb {val:.4f}, artifact "
                 f"{m.artifact_bytes or 0:,} bytes", run.seconds)
        return m

    def baseline(self) -> None:
        rows = self.rows()
        done = [r for r in rows if r.kind == "baseline"]
        head = self._head()
        source = (self.root / self.config.file).read_text()
        for i in range(len(done), BASELINE_RUNS):
            m = self._measure(source, f"baseline-{i + 1}")
            if m.crashed:
                raise ResearchError(f"the baseline run crashed ({m.error}); see {m.log_path}. Fix {self.config.file} "
                                    "before starting the loop")
            append_result(self.results_path, ResultRow(
                n=0, commit=head, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status="keep", kind="baseline",
                direction="baseline", description=f"baseline run {i + 1} of {BASELINE_RUNS}",
                reasoning="the file as it is; the spread of the baseline runs is the noise floor"))
        self._write_notes(self.rows())

    def _context(self, rows: list[ResultRow], source: str) -> ResearchContext:
        s = standing(rows)
        program = self.root / "program.md"
        return ResearchContext(
            file=self.config.file, source=source,
            program=program.read_text(encoding="utf-8") if program.exists() else "",
            results_tsv=self.results_path.read_text() if self.results_path.exists() else "",
            notes_md=self.notes_path.read_text() if self.notes_path.exists() else "",
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

    def _commit(self, n: int, proposal: ResearchProposal, source: str, amend: bool = False,
                fix: str = "") -> str:
        """Write and commit the experiment; `amend` replaces the experiment's own commit (a crash fix)."""
        path = self.root / self.config.file
        path.write_text(source, encoding="utf-8")
        self.repo.index.add([self.config.file])
        parents = list(self.repo.head.commit.parents) if amend else None
        message = commit_message(n, proposal) + (f"Fix: {fix}\n" if fix else "")
        c = self.repo.index.commit(message, author=_signature(), committer=_signature(),
                                   parent_commits=parents, head=True)
        return c.hexsha

    def step(self) -> ResultRow:
        """One experiment, from proposal to row. Returns the row written."""
        cfg = self.config
        t_start = time.perf_counter()
        rows = self.rows()
        s = standing(rows)
        pending, self._pending = self._pending, None
        t_propose = t_commit = 0.0
        if pending:
            n, proposal = pending
            source = (self.root / cfg.file).read_text()
            commit = self._head()
        else:
            n = s.experiments + 1
            source_before = (self.root / cfg.file).read_text()
            context = self._context(rows, source_before)
            proposal, source = self._ask(context)
            t_propose = time.perf_counter() - t_start
            t0 = time.perf_counter()
            commit = self._commit(n, proposal, source)
            t_commit = time.perf_counter() - t0
        if proposal.ideas:
            self.ideas = list(proposal.ideas)
        log.info("experiment %d: %s [%s, %s] commit %s", n, proposal.description, proposal.kind,
                 proposal.direction, commit[:10])
        t_run0 = time.perf_counter()
        m = self._measure(source, f"{n:03d}")
        t_run = time.perf_counter() - t_run0
        fixed = ""
        if m.crashed and not m.timed_out and self.researcher.can_fix_crashes:
            # One retry for a trivial fix. The crashed version stays reachable from a tag.
            try:
                fix, fixed_source = self._ask(self._context(rows, source), fix=(proposal, _tail(m.log_path)))
            except LLMError as exc:
                log.warning("experiment %d: no fix for the crash: %s", n, exc)
            else:
                first = m.error
                tag = self._tag(f"discard/{n}-crashed", commit)
                commit = self._commit(n, proposal, fixed_source, amend=True, fix=fix.description)
                source = fixed_source
                fixed = f" (first version crashed: {first}, tagged {tag}; retried once with a fix: {fix.description})"
                log.info("experiment %d crashed (%s); retrying with a fix: %s", n, first, fix.description)
                m = self._measure(source, f"{n:03d}-fix")
        t_after0 = time.perf_counter()
        status, why = self._decide(m, proposal, s, source)
        if status != "keep":
            tag = self._tag(f"discard/{n}", commit)
            self._reset(s.head_commit)
            why += f"; commit {commit[:10]} tagged {tag}, branch reset to {s.head_commit[:10]}"
        row = ResultRow(n=n, commit=commit, val_bpb=m.val_bpb, artifact_mb=m.artifact_mb, status=status,
                        kind=proposal.kind, direction=proposal.direction, description=proposal.description + fixed,
                        reasoning=proposal.reasoning_block())
        append_result(self.results_path, row)
        analysis = self._analysis(m, proposal, s, status, why, rows + [row])
        self._log_entry(LogEntry(n=n, title=proposal.description, status=status, commit=commit,
                                 reasoning=proposal.reasoning_block(), analysis=analysis))
        # results.tsv is read once per step (above); from here on the rows in hand are current.
        rows = self._check_regression(rows + [row])
        self._write_notes(rows)
        self._record_metrics(rows)
        self.timings.append({"n": n, "propose_s": t_propose, "commit_s": t_commit, "run_wall_s": t_run,
                             "training_s": m.seconds, "launch_s": max(0.0, m.wall_s - m.seconds),
                             "save_parse_s": max(0.0, t_run - m.wall_s),
                             "parse_decide_record_s": time.perf_counter() - t_after0, "status": status})
        return row

    def _decide(self, m: Measurement, proposal: ResearchProposal, s, source: str) -> tuple[str, str]:
        cap = self.config.cap_bytes
        floor = s.noise_floor or 0.0
        if m.crashed:
            return "crash", f"crashed: {m.error}"
        if m.artifact_bytes is None:
            return "discard", "the log has no 'Total submission size int8+zlib' line: the artifact size is unknown"
        if m.artifact_bytes > cap:
            return "discard", f"artifact {m.artifact_bytes:,} bytes is over the {cap:,}-byte cap"
        head = s.head_bpb
        if m.val_bpb < head - floor:
            return "keep", f"val_bpb {m.val_bpb:.4f} beats the kept {head:.4f} by more than the noise floor {floor:.4f}"
        if proposal.kind == "simplification" and m.val_bpb <= head + floor:
            return "keep", (f"a simplification: val_bpb {m.val_bpb:.4f} within the noise floor {floor:.4f} of "
                            f"the kept {head:.4f}")
        return "discard", (f"val_bpb {m.val_bpb:.4f} does not beat the kept {head:.4f} by more than the noise "
                           f"floor {floor:.4f}")

    def _check_regression(self, rows: list[ResultRow]) -> list[ResultRow]:
        """A regression across kept commits: reset to the best commit and log a backtrack row.
        Returns the rows as they now are."""
        s = standing(rows)
        if not regressed(s):
            return rows
        log.warning("regression: kept head %s at %.4f is worse than the best %s at %.4f; resetting to the best",
                    s.head_commit[:10], s.head_bpb, s.best_commit[:10], s.best_bpb)
        self._reset(s.best_commit)
        art = next((r.artifact_mb for r in reversed(rows) if r.commit == s.best_commit), None)
        row = ResultRow(
            n=s.experiments, commit=s.best_commit, val_bpb=s.best_bpb, artifact_mb=art, status="backtrack",
            kind="tweak", direction="backtrack",
            description=f"reset to the best commit {s.best_commit[:10]} ({s.best_description})",
            reasoning=f"the kept head {s.head_commit[:10]} at {s.head_bpb:.4f} regressed past the best "
            f"{s.best_bpb:.4f} by more than the noise floor {s.noise_floor or 0:.4f}")
        append_result(self.results_path, row)
        return rows + [row]

    def _analysis(self, m: Measurement, proposal: ResearchProposal, s, status: str, why: str,
                  rows: list[ResultRow]) -> str:
        if m.crashed:
            result = f"crashed ({m.error}) after {m.seconds:.0f}s; log {m.log_path.relative_to(self.root)}"
            against = "the hypothesis could not be tested"
        else:
            delta = m.val_bpb - s.head_bpb
            result = (f"val_bpb {m.val_bpb:.4f} against the kept {s.head_bpb:.4f} ({delta:+.4f}; noise floor "
                      f"{(s.noise_floor or 0):.4f}); artifact {m.artifact_bytes or 0:,} bytes; "
                      f"{m.steps if m.steps is not None else '?'} steps in {m.seconds:.0f}s")
            if delta < -(s.noise_floor or 0):
                against = "as expected: val_bpb went down by more than the noise"
            elif delta <= (s.noise_floor or 0):
                against = "not confirmed: the change is within the noise"
            else:
                against = "refuted: val_bpb went up"
        dead = dead_ends(rows)
        d = normalise_direction(proposal.direction)
        if status == "keep":
            lesson = f"{proposal.direction} helps here; worth pushing further"
        elif d in dead:
            lesson = f"{proposal.direction} is now a dead end (3 discards in a row): change direction"
        elif status == "crash":
            lesson = f"{proposal.direction} needs a working implementation before it can be judged"
        elif "cap" in why:
            lesson = "the artifact cap binds: spend bytes elsewhere or compress better"
        else:
            lesson = f"{proposal.direction} does not pay off at this budget"
        return f"ANALYSIS\nResult: {result}\nAgainst expectation: {against}\nWhy: {status}: {why}\nLesson: {lesson}\n"

    def _log_entry(self, entry: LogEntry) -> None:
        self.log_text = (self.log_text.rstrip() + "\n\n" + entry.render()).strip()

    def _write_notes(self, rows: list[ResultRow]) -> None:
        text = render_notes(branch=self.config.branch, file=self.config.file, rows=rows, ideas=self.ideas,
                            log_text=self.log_text, cap_bytes=self.config.cap_bytes)
        tmp = self.notes_path.with_name(f".{NOTES_FILE}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.notes_path)

    def _record_metrics(self, rows: list[ResultRow]) -> None:
        s = standing(rows)
        if s.best_bpb is None:
            return
        try:
            from actors.metrics import record_autoresearch_best
        except ImportError:
            return
        record_autoresearch_best(self.config.branch, s.best_bpb)

    # ------------------------------------------------------------- the whole run

    def run(self, iterations: int) -> dict:
        """Prepare, baseline, then `iterations` experiments. Returns a summary."""
        t0 = time.time()
        self.prepare()
        outcome, reason = "abandoned", "finished its iterations"
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
            reason = f"stopped by {type(exc).__name__}: {str(exc)[:300]}"
            raise
        finally:
            self._release(outcome, {"reason": reason})
        return self.summary(time.time() - t0)

    def summary(self, seconds: float = 0.0) -> dict:
        rows = self.rows()
        s = standing(rows)
        counts = {k: sum(r.status == k and r.kind != "baseline" for r in rows)
                  for k in ("keep", "discard", "crash", "backtrack")}
        return {"repo": str(self.root), "branch": self.config.branch, "head": self._head(),
                "best_commit": s.best_commit, "best_val_bpb": s.best_bpb, "baseline_val_bpb": s.baseline_bpb,
                "noise_floor": s.noise_floor, "experiments": s.experiments, **counts,
                "stop_reason": self.stop_reason, "proposer": self.researcher.name,
                "llm_tokens": self.usage.input_tokens + self.usage.output_tokens,
                "llm_cost_usd": self.usage.cost_usd, "seconds": round(seconds, 1)}


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- as an actor


def start_autoresearch(config: ResearchConfig, researcher: Researcher | None = None, name: str | None = None):
    """The loop as a Ray actor on this node (the repository lives here). Returns the handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = name or f"autoresearch-{config.tag}-{uuid.uuid4().hex[:6]}"
    config.owner = config.owner or f"actor:{name}"
    here = ray.get_runtime_context().get_node_id()
    cls = ray.remote(AutoResearch)
    return cls.options(
        name=name, namespace=config.tracker_namespace, num_cpus=0, max_restarts=0, max_task_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
    ).remote(config, researcher)


# --------------------------------------------------------------------------- CLI


def _cmd_parse_log(args: argparse.Namespace) -> int:
    path = Path(args.log)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"error: cannot read log {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(json.dumps(parse_log(text), indent=2, allow_nan=False, default=str))
    return 0


def _env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from actors.work_tracker import TrackerConfigError, TrackerStartError, connect_tracker

    try:
        env = _env_pairs(args.set)
        config = ResearchConfig(
            repo=args.repo, workspace=args.workspace, file=args.file, tag=args.tag or default_tag(),
            resume=args.resume, timeout_s=args.timeout_min * 60, gpus=args.gpus or 0, env=env,
            offline=args.offline, model=args.model, seed=args.seed, tracker_namespace=args.namespace)
    except (ResearchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.repo is not None and not Path(args.repo).is_dir():
        print(f"error: --repo {args.repo} is not a folder", file=sys.stderr)
        return 2
    import ray

    try:
        connect_tracker(state_path=args.state, namespace=args.namespace)
    except (TrackerConfigError, TrackerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.gpus is None:
        config.gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    handle = start_autoresearch(config)
    try:
        summary = ray.get(handle.run.remote(args.iterations))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, ResearchError):
            print(f"error: {cause}", file=sys.stderr)
            return 2
        raise
    print(format_summary(summary))
    return 0


def format_summary(summary: dict) -> str:
    best = summary.get("best_val_bpb")
    base = summary.get("baseline_val_bpb")
    lines = [f"AutoResearch {summary['branch']} in {summary['repo']} ({summary['proposer']})",
             f"  experiments {summary['experiments']}: kept {summary['keep']}, discarded {summary['discard']}, "
             f"crashed {summary['crash']}, backtracked {summary['backtrack']}"]
    if best is not None and base is not None:
        lines.append(f"  val_bpb baseline {base:.4f} -> best {best:.4f} ({best - base:+.4f}), noise floor "
                     f"{summary['noise_floor']:.4f}; best commit {summary['best_commit'][:10]}, "
                     f"head {summary['head'][:10]}")
    if summary.get("llm_tokens"):
        lines.append(f"  LLM tokens {summary['llm_tokens']}, ${summary['llm_cost_usd']:.4f}")
    if summary.get("stop_reason"):
        lines.append(f"  stopped early: {summary['stop_reason']}")
    lines.append(f"  results.tsv and notes.md in {summary['repo']}; {summary['seconds']:.0f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from actors.work_tracker import NAMESPACE

    parser = argparse.ArgumentParser(prog="python -m actors.autoresearch",
                                     description="The AutoResearch keep/discard loop over one training script.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("parse-log", help="parse a train_gpt.py log and print JSON")
    p.add_argument("log", help="path to the run log")
    p.set_defaults(func=_cmd_parse_log)

    r = sub.add_parser("run", help="run the loop",
                       description="Baseline twice, then ITERATIONS experiments, each a commit on "
                       "autoresearch/TAG, kept or discarded on val_bpb and the 16,000,000-byte artifact cap. "
                       "Claude proposes the changes when ANTHROPIC_API_KEY is set; otherwise (or with "
                       "--offline) one numeric hyperparameter default changes per experiment.")
    r.add_argument("--repo", type=Path, default=None,
                   help="git repository holding the file (default: a workspace made from examples/golf)")
    r.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE,
                   help="where the template workspace lives without --repo (default: %(default)s)")
    r.add_argument("--file", default="train_gpt.py", help="the file under research (default: %(default)s)")
    r.add_argument("--iterations", type=int, default=10, help="experiments to run after the baseline (default 10)")
    r.add_argument("--tag", default=None, help="branch autoresearch/TAG (default: today's date, e.g. nov22)")
    r.add_argument("--resume", action="store_true", help="continue an existing branch from results.tsv, "
                   "notes.md and the git log")
    r.add_argument("--offline", action="store_true", help="never call Claude, even with ANTHROPIC_API_KEY set")
    r.add_argument("--timeout-min", type=float, default=DEFAULT_TIMEOUT_S / 60,
                   help="wall-clock timeout per run, in minutes; a timeout is a crash (default 15)")
    r.add_argument("--gpus", type=int, default=None, help="GPUs each run holds (torchrun with one rank per GPU; "
                   "0 runs python on CPU; default: 1 when the cluster has a GPU, else 0)")
    r.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="environment variable for every run, e.g. MAX_WALLCLOCK_SECONDS=300 (repeatable)")
    r.add_argument("--model", default=None, help="Claude model (default: $ANTHROPIC_MODEL or the SDK default)")
    r.add_argument("--seed", type=int, default=0, help="tie-break seed of the offline proposer")
    r.add_argument("--state", type=Path, default=None, help="the WorkTracker's state file")
    r.add_argument("--namespace", default=NAMESPACE, help=argparse.SUPPRESS)
    r.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.iterations < 0:
            parser.error("--iterations must be >= 0")
        if args.timeout_min <= 0:
            parser.error("--timeout-min must be positive")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
