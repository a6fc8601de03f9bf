"""The main job: `python -m actors.main --scalers N`.

Joins the Ray cluster (as under `ray job submit`) or starts local Ray, brings
up the WorkTracker, starts N ScalerAgents over the experiments folder and, beside
them, the AutoResearch loop on its research repository (unless
`--no-autoresearch`), shows progress while they work, and prints what was scaled,
failed and skipped with GPU-hours and cost, and what the loop kept. `--interval
MINUTES` repeats the round forever. Exits 1 if an agent crashed or every MVE
of the round failed, 2 on bad arguments, 128+N when stopped by signal N (Ctrl-C: 130, SIGTERM: 143) after the
agents released their claims.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import uuid
from pathlib import Path

from actors.research.cli import format_summary as format_research_summary
from actors.research.config import DEFAULT_WORKSPACE, ResearchConfig, ResearchError, default_tag
from actors.shared.cli import fail, format_table
from actors.tracker.owners import display_name
from actors.tracker.store import StatePathError, check_state_path
from actors.tracker.actor import (
    NAMESPACE,
    STATE_ENV,
    TrackerConfigError,
    TrackerStartError,
    connect_tracker,
    default_state_path,
)

log = logging.getLogger("actors.main")
PROGRESS_EVERY_S = 10.0
WAIT_S = 0.5  # how often the driver looks up from waiting: a stop request is acted on this fast
STOP_GRACE_S = 30.0  # how long agents get to let go after a stop request before they are killed


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actors.main",
        description="Scale up every MVE with a positive verdict: N ScalerAgents claim MVEs through the "
        "WorkTracker, plan them (Claude with ANTHROPIC_API_KEY set, else the offline planner), write "
        "code/NNN_scaled/, smoke-test and train them on Ray Train, and record the results.",
    )
    parser.add_argument("--scalers", type=int, default=2, help="number of ScalerAgent actors (default 2)")
    parser.add_argument("--experiments", type=Path, default=Path("examples/experiments"),
                        help="the research folder: NNN_slug/ MVE folders, or flat NNN_results.md files "
                        "beside a code/NNN/ folder (default: %(default)s)")
    parser.add_argument("--code", type=Path, default=Path("examples/code"),
                        help="where NNN_scaled folders are written (default: %(default)s)")
    parser.add_argument("--proposals", type=Path, default=None, help="folder of NNN_*.md proposals (default: beside --experiments)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one round, then exit (the default)")
    when.add_argument("--interval", type=float, metavar="MINUTES", help="repeat the round every MINUTES, forever")
    parser.add_argument("--no-launch", action="store_true", help="plan, write and smoke-test, but do not train")
    parser.add_argument("--dry-run", action="store_true", help="plan only: write nothing, train nothing")
    parser.add_argument("--model", default=None, help="Claude model for planning (default: $ANTHROPIC_MODEL or the SDK default)")
    parser.add_argument("--target-params", type=int, default=None, metavar="N",
                        help="parameters the offline planner scales each model to (default 25,000,000)")
    agentic = parser.add_argument_group("Planning with Claude (ANTHROPIC_API_KEY set)")
    agentic.add_argument("--planner", choices=("agentic", "single"), default="agentic",
                         help="agentic: Claude reads the MVE, writes the code, smoke-tests, fixes and submits "
                         "(default); single: one tool-use call for the plan")
    agentic.add_argument("--agent-max-turns", type=int, default=None, metavar="N",
                         help="turns of one MVE's agentic session (default 40)")
    agentic.add_argument("--agent-max-tokens", type=int, default=None, metavar="N",
                         help="billed tokens of one MVE's session, cache reads included (default 3,000,000)")
    agentic.add_argument("--agent-max-usd", type=float, default=None, metavar="USD",
                         help="dollars of one MVE's session (default 2.00)")
    parser.add_argument("--ledger", type=Path, default=None, help="ledger file (default: EXPERIMENTS/EXPERIMENTS.md)")
    parser.add_argument("--state", type=Path, default=None,
                        help=f"the WorkTracker's Parquet state file (default: ${STATE_ENV} or {default_state_path()})")
    research = parser.add_argument_group("AutoResearch (the keep/discard loop beside the scalers)")
    research.add_argument("--no-autoresearch", action="store_true", help="do not start the AutoResearch loop")
    research.add_argument("--autoresearch-iterations", type=int, default=1, metavar="K",
                          help="experiments per round after the baseline's seeded runs (default 1)")
    research.add_argument("--autoresearch-repo", type=Path, default=None, metavar="PATH",
                          help="git repository holding train_gpt.py (default: a workspace made from examples/golf "
                          "in --autoresearch-workspace)")
    research.add_argument("--autoresearch-workspace", type=Path, default=DEFAULT_WORKSPACE, metavar="DIR",
                          help="where that workspace lives (default: %(default)s, which outlives `ray job submit` "
                          "working directories)")
    research.add_argument("--autoresearch-tag", default=None, metavar="TAG",
                          help="branch autoresearch/TAG, continued when it exists (default: today, e.g. nov22)")
    research.add_argument("--researchers", type=int, default=1, metavar="K",
                          help="AutoResearch researchers in parallel, one git worktree each, one results.tsv "
                          "(default 1)")
    parser.add_argument("--storage", default=None, metavar="URI",
                        help="where training checkpoints and the WorkTracker's copy go, reachable from every node: "
                        "s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or a shared folder (default: "
                        "$RAY_AUTORESEARCH_STORAGE, else beside each run on this machine)")
    parser.add_argument("--address", default=None, help="the Ray cluster to run on (default: $RAY_ADDRESS, else a "
                        "`ray start` cluster on this machine, else a new local Ray instance)")
    parser.add_argument("--namespace", default=NAMESPACE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.autoresearch_iterations < 0:
        parser.error("--autoresearch-iterations must be >= 0")
    if args.researchers < 1:
        parser.error("--researchers must be at least 1")
    if args.autoresearch_repo is not None and not args.autoresearch_repo.is_dir():
        parser.error(f"--autoresearch-repo folder not found: {args.autoresearch_repo}")
    if args.scalers < 1:
        parser.error("--scalers must be at least 1")
    if args.interval is not None and args.interval <= 0:
        parser.error("--interval must be a positive number of minutes")
    if not args.experiments.is_dir():
        parser.error(f"--experiments folder not found: {args.experiments}")
    if args.proposals is not None and not args.proposals.is_dir():
        parser.error(f"--proposals folder not found: {args.proposals}")
    try:
        check_state_path(args.state or default_state_path())
    except StatePathError as exc:
        parser.error(f"--state: {exc}")
    return args


def format_summary(outcomes: list[dict]) -> str:
    if not outcomes:
        return "Nothing to scale: no scalable, unclaimed MVE left."
    rows = [(o["mve_id"], o["status"], o["agent"], "-" if o.get("val_loss") is None else f"{o['val_loss']:.3f}",
             f"{o.get('gpu_hours', 0):.2f}", f"${o.get('cost_usd', 0):.2f}", f"{o.get('seconds', 0):.0f}",
             (o.get("reason") or "")[:100])
            for o in sorted(outcomes, key=lambda o: o["mve_id"])]
    lines = [format_table(("MVE", "STATUS", "AGENT", "VAL_LOSS", "GPU_H", "COST", "SECONDS", "REASON"), rows)]
    by = {s: sum(o["status"] == s for o in outcomes)
          for s in ("scaled", "failed", "declined", "skipped", "planned", "scaffolded", "lost", "stopped")}
    lines.append("")
    lines.append(
        "scaled {scaled}, failed {failed}, declined {declined}, skipped {skipped}, planned {planned}, "
        "scaffolded {scaffolded}, lost {lost}, stopped {stopped}; ".format(**by)
        + f"GPU-hours {sum(o.get('gpu_hours', 0) for o in outcomes):.2f}, "
        f"cost ${sum(o.get('cost_usd', 0) for o in outcomes):.2f}, "
        f"LLM tokens {sum(o.get('llm_tokens', 0) for o in outcomes):,} (billed, cache included), "
        f"LLM ${sum(o.get('llm_cost_usd', 0) for o in outcomes):.4f}"
    )
    return "\n".join(lines)


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (what `ray job stop` sends) become a request to
    stop: the round cancels every agent's task, and agents release their claims
    and set their unfinished folders aside. A second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at: float | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "StopSignals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # asked twice: do not wait for the agents
        self.signum, self.at = signum, time.time()
        log.warning("%s: stopping; the agents release their claims (press Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


def run_round(agents: dict, tracker, research=None, iterations: int = 0, stop: StopSignals | None = None,
              research_progress=None) -> tuple[list[dict], list[str], dict | None]:
    """One round: every agent scales what it can claim, and the AutoResearch team
    (when given) runs `iterations` experiments per researcher. Returns (outcomes,
    crashes, research summary). On a stop request every task is cancelled; actors
    that have not let go after STOP_GRACE_S are killed (the tracker then hands their
    claims on at once). `research_progress()` gives the researchers' line."""
    import ray

    actors = {**agents, **({"autoresearch": research} if research is not None else {})}
    pending = {agent.run_once.remote(): name for name, agent in agents.items()}
    if research is not None:
        pending[research.run.remote(iterations)] = "autoresearch"
    outcomes: list[dict] = []
    crashes: list[str] = []
    summary = None
    cancelled_at = None
    last_progress = time.time()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=WAIT_S)
        for ref in ready:
            name = pending.pop(ref)
            try:
                got = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                log.info("%s stopped", name)
                continue
            except ray.exceptions.RayError as exc:
                cause = exc.as_instanceof_cause() if isinstance(exc, ray.exceptions.RayTaskError) else exc
                if isinstance(cause, ResearchError):
                    crashes.append(f"{name}: {cause}")
                elif stop is not None and stop.signum and isinstance(exc, ray.exceptions.RayActorError):
                    continue  # we killed it after the grace period
                else:
                    crashes.append(f"{name}: {str(exc).strip().splitlines()[-1][:300]}")
                log.error("%s crashed: %s", name, crashes[-1])
                continue
            if name == "autoresearch":
                summary = got
                log.info("autoresearch finished its round: %d experiment(s)", got["experiments"])
            else:
                outcomes.extend(got)
                log.info("%s finished its round: %d MVE(s)", name, len(got))
        if stop is not None and stop.signum and pending:
            if cancelled_at is None:
                cancelled_at = time.time()
                for ref in pending:
                    ray.cancel(ref)
            elif time.time() - cancelled_at > STOP_GRACE_S:
                for ref, name in list(pending.items()):
                    log.warning("%s did not stop within %.0fs: killing it", name, STOP_GRACE_S)
                    ray.kill(actors[name], no_restart=True)
                    pending.pop(ref)
        if pending and time.time() - last_progress >= PROGRESS_EVERY_S:
            last_progress = time.time()
            _log_progress(agents, pending, tracker)
            if research_progress is not None and "autoresearch" in pending.values():
                log.info("%s", research_progress())
    return outcomes, crashes, summary


def _log_progress(agents: dict, pending: dict, tracker) -> None:
    """One line per busy agent (what it does and for how long), then the claims held."""
    import ray

    busy = set(pending.values())
    refs = {name: agents[name].status.remote() for name in sorted(busy) if name in agents}
    for name, ref in refs.items():
        try:
            s = ray.get(ref, timeout=5)
            log.info("%s: %s for %.0fs", name, s["doing"], s["for_s"])
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
            log.info("%s: busy", name)
    # The researchers' own claims (changes, seeds) are in their progress line, not here.
    held = [f"{c.work_id} by {display_name(c.owner)}" for c in ray.get(tracker.list_claims.remote("claimed"))
            if not c.work_id.startswith("autoresearch:")]
    log.info("claims held: %s; %d task(s) running", ", ".join(held) or "none", len(pending))


def stopped_line(stop: StopSignals, tracker, started: float) -> str:
    """The one line a stopped run prints: what it let go of and how to continue."""
    import ray

    released = [c for c in ray.get(tracker.list_claims.remote())
                if c.released_at and c.released_at >= (stop.at or started) and c.state.value in ("abandoned",
                                                                                               "evicted")]
    held = [c.work_id for c in ray.get(tracker.list_claims.remote("claimed"))]
    what = ", ".join(sorted(c.work_id for c in released)) or "no claims"
    return (f"stopped by {stop.name} after {time.time() - started:.0f}s: released {what}"
            + (f"; still held: {', '.join(held)}" if held else "")
            + "; unfinished folders were set aside; run the same command again to continue")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from actors.scaler.options import ScalerOptions
    from train.spec import format_validation_error

    try:  # every setting is checked before Ray starts
        budget = {k: v for k, v in (("agent_max_turns", args.agent_max_turns),
                                    ("agent_max_tokens", args.agent_max_tokens),
                                    ("agent_max_usd", args.agent_max_usd),
                                    ("target_params", args.target_params)) if v is not None}
        options = ScalerOptions(experiments=args.experiments, code=args.code, proposals=args.proposals,
                                ledger=args.ledger, launch=not args.no_launch, dry_run=args.dry_run,
                                model=args.model, tracker_namespace=args.namespace, storage=args.storage,
                                planner=args.planner, **budget)
        config = None
        if not (args.no_autoresearch or args.dry_run or args.no_launch):
            config = ResearchConfig.checked(
                repo=args.autoresearch_repo.resolve() if args.autoresearch_repo else None,
                workspace=args.autoresearch_workspace.expanduser().resolve(),
                tag=args.autoresearch_tag or default_tag(), resume="auto", model=args.model,
                tracker_namespace=args.namespace, researchers=args.researchers)
    except ValidationError as exc:
        return fail(format_validation_error(exc))
    except ResearchError as exc:
        return fail(str(exc))
    stop = StopSignals().install()
    try:
        return _run(args, options, config, stop)
    except KeyboardInterrupt:  # the second signal: leave at once; dead owners' claims are handed on
        print(f"stopped at once by a second {stop.name or 'signal'}; the tracker hands the agents' claims on "
              "as soon as they are gone", file=sys.stderr)
        return 128 + (stop.signum or signal.SIGINT)
    finally:
        stop.restore()


def _run(args, options, config, stop: StopSignals) -> int:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.scaler.agent import ScalerAgent
    from actors.scaler.cli import scan_report

    started = time.time()
    try:
        tracker = connect_tracker(state_path=args.state, namespace=args.namespace, address=args.address,
                                  storage=options.storage)
    except (TrackerConfigError, TrackerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Ray's core installs its own SIGTERM handler when it starts (it prints a stack
    # and exits 1): take SIGTERM back, so that `ray job stop` lets the agents release.
    stop.install()
    if stop.signum:
        print(stopped_line(stop, tracker, started), file=sys.stderr)
        return 128 + stop.signum
    args.code.mkdir(parents=True, exist_ok=True)
    agent_cls = ray.remote(ScalerAgent)
    # On this node: the experiments and code folders are here, and so is the API key
    # (only the head's Ray processes have it); training jobs still go where the GPUs are.
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    run_id = uuid.uuid4().hex[:6]
    # Named, so that the tracker can tell when one is gone and hand its claims on at once.
    agents = {
        f"scaler-{i}": agent_cls.options(name=f"scaler-{i}-{run_id}", namespace=args.namespace, num_cpus=0,
                                         max_restarts=0, max_concurrency=2,  # status() answers while it works
                                         scheduling_strategy=here).remote(f"scaler-{i}", options)
        for i in range(args.scalers)
    }
    research = None
    progress = None
    if config is not None:
        from actors.research.team import research_progress, start_autoresearch

        config = config.model_copy(update={"gpus": 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0})
        research = start_autoresearch(config)
        progress = lambda: research_progress(config)  # noqa: E731
    crashed = all_failed = False
    while True:
        t0 = time.time()
        # Never silent: the files read, the MVEs found, and those a person should look at.
        print(scan_report(options.experiments, options.code, options.proposals, options.model, options.offline),
              flush=True)
        outcomes, crashes, research_summary = run_round(agents, tracker, research, args.autoresearch_iterations,
                                                        stop, progress)
        if stop.signum:
            print(stopped_line(stop, tracker, started), file=sys.stderr)
            return 128 + stop.signum
        print(format_summary(outcomes))
        if research_summary is not None:
            print(format_research_summary(research_summary))
        print(f"round took {time.time() - t0:.0f}s")
        for c in crashes:
            print(f"agent crashed: {c}", file=sys.stderr)
        crashed = crashed or bool(crashes)
        all_failed = bool(outcomes) and all(o["status"] == "failed" for o in outcomes)
        if all_failed:
            print(f"every MVE failed ({len(outcomes)}); see REASON above", file=sys.stderr)
        if args.interval is None:
            break
        log.info("next round in %.0f minute(s)", args.interval)
        deadline = time.time() + args.interval * 60
        while time.time() < deadline and not stop.signum:
            time.sleep(WAIT_S)
        if stop.signum:
            print(stopped_line(stop, tracker, started), file=sys.stderr)
            return 128 + stop.signum
    return 1 if crashed or all_failed else 0


if __name__ == "__main__":
    sys.exit(main())
