"""The main job: `python -m actors.main --scalers N`.

Joins the Ray cluster (as under `ray job submit`) or starts local Ray, brings
up the WorkTracker, starts N ScalerAgents over the experiments folder and, beside
them, the AutoResearch loop on its research repository (unless
`--no-autoresearch`), shows progress while they work, and prints what was scaled,
failed and skipped with GPU-hours and cost, and what the loop kept. `--interval
MINUTES` repeats the round forever. Exits 1 if an agent crashed, 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from actors.research.cli import format_summary as format_research_summary
from actors.research.config import DEFAULT_WORKSPACE, ResearchConfig, ResearchError, default_tag
from actors.shared.cli import fail, format_table
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


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actors.main",
        description="Scale up every MVE with a positive verdict: N ScalerAgents claim MVEs through the "
        "WorkTracker, plan them (Claude with ANTHROPIC_API_KEY set, else the offline planner), write "
        "code/NNN_scaled/, smoke-test and train them on Ray Train, and record the results.",
    )
    parser.add_argument("--scalers", type=int, default=2, help="number of ScalerAgent actors (default 2)")
    parser.add_argument("--experiments", type=Path, default=Path("examples/experiments"),
                        help="folder of NNN_slug MVE folders (default: %(default)s)")
    parser.add_argument("--code", type=Path, default=Path("examples/code"),
                        help="where NNN_scaled folders are written (default: %(default)s)")
    parser.add_argument("--proposals", type=Path, default=None, help="folder of NNN_*.md proposals (default: beside --experiments)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one round, then exit (the default)")
    when.add_argument("--interval", type=float, metavar="MINUTES", help="repeat the round every MINUTES, forever")
    parser.add_argument("--no-launch", action="store_true", help="plan, write and smoke-test, but do not train")
    parser.add_argument("--dry-run", action="store_true", help="plan only: write nothing, train nothing")
    parser.add_argument("--model", default=None, help="Claude model for planning (default: $ANTHROPIC_MODEL or the SDK default)")
    parser.add_argument("--ledger", type=Path, default=None, help="ledger file (default: EXPERIMENTS/EXPERIMENTS.md)")
    parser.add_argument("--state", type=Path, default=None,
                        help=f"the WorkTracker's Parquet state file (default: ${STATE_ENV} or {default_state_path()})")
    research = parser.add_argument_group("AutoResearch (the keep/discard loop beside the scalers)")
    research.add_argument("--no-autoresearch", action="store_true", help="do not start the AutoResearch loop")
    research.add_argument("--autoresearch-iterations", type=int, default=1, metavar="K",
                          help="experiments per round after the two baseline runs (default 1)")
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
          for s in ("scaled", "failed", "skipped", "planned", "scaffolded", "lost")}
    lines.append("")
    lines.append(
        "scaled {scaled}, failed {failed}, skipped {skipped}, planned {planned}, scaffolded {scaffolded}, "
        "lost {lost}; ".format(**by)
        + f"GPU-hours {sum(o.get('gpu_hours', 0) for o in outcomes):.2f}, "
        f"cost ${sum(o.get('cost_usd', 0) for o in outcomes):.2f}, "
        f"LLM tokens {sum(o.get('llm_tokens', 0) for o in outcomes)}, "
        f"LLM ${sum(o.get('llm_cost_usd', 0) for o in outcomes):.4f}"
    )
    return "\n".join(lines)


def run_round(agents: dict, tracker, research=None, iterations: int = 0, research_progress=None
              ) -> tuple[list[dict], list[str], dict | None]:
    """One round: every agent scales what it can claim, and the AutoResearch loop
    (when given) runs `iterations` experiments per researcher. Returns (outcomes,
    crashes, research summary). `research_progress()` gives the researchers' line."""
    import ray

    pending = {agent.run_once.remote(): name for name, agent in agents.items()}
    if research is not None:
        pending[research.run.remote(iterations)] = "autoresearch"
    outcomes: list[dict] = []
    crashes: list[str] = []
    summary = None
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S)
        for ref in ready:
            name = pending.pop(ref)
            try:
                got = ray.get(ref)
                if name == "autoresearch":
                    summary = got
                    log.info("autoresearch finished its round: %d experiment(s)", got["experiments"])
                else:
                    outcomes.extend(got)
                    log.info("%s finished its round: %d MVE(s)", name, len(got))
            except ray.exceptions.RayError as exc:
                cause = exc.as_instanceof_cause() if isinstance(exc, ray.exceptions.RayTaskError) else exc
                if isinstance(cause, ResearchError):
                    crashes.append(f"{name}: {cause}")
                else:
                    crashes.append(f"{name}: {str(exc).strip().splitlines()[-1][:300]}")
                log.error("%s crashed: %s", name, crashes[-1])
        if pending and not ready:
            held = [f"{c.work_id} by {c.owner}" for c in ray.get(tracker.list_claims.remote("claimed"))
                    if not c.work_id.startswith("autoresearch:")]
            log.info("working: %s; %d agent(s) busy", ", ".join(held) or "no claims held", len(pending))
            if research_progress is not None and "autoresearch" in pending.values():
                log.info("%s", research_progress())
    return outcomes, crashes, summary


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pydantic import ValidationError

    from actors.scaler.agent import ScalerAgent
    from actors.scaler.options import ScalerOptions
    from train.spec import format_validation_error

    try:  # checked before Ray starts
        options = ScalerOptions(experiments=args.experiments, code=args.code, proposals=args.proposals,
                                ledger=args.ledger, launch=not args.no_launch, dry_run=args.dry_run,
                                model=args.model, tracker_namespace=args.namespace)
    except ValidationError as exc:
        return fail(format_validation_error(exc))
    try:
        tracker = connect_tracker(state_path=args.state, namespace=args.namespace, address=args.address)
    except (TrackerConfigError, TrackerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.code.mkdir(parents=True, exist_ok=True)
    agent_cls = ray.remote(ScalerAgent)
    # On this node: the experiments and code folders are here, and so is the API key
    # (only the head's Ray processes have it); training jobs still go where the GPUs are.
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    agents = {
        f"scaler-{i}": agent_cls.options(num_cpus=0, max_restarts=0, scheduling_strategy=here).remote(
            f"scaler-{i}", options)
        for i in range(args.scalers)
    }
    research = None
    if not (args.no_autoresearch or args.dry_run or args.no_launch):
        from actors.research.team import research_progress, start_autoresearch

        try:
            config = ResearchConfig.checked(
                repo=args.autoresearch_repo.resolve() if args.autoresearch_repo else None,
                workspace=args.autoresearch_workspace.expanduser().resolve(),
                tag=args.autoresearch_tag or default_tag(), resume="auto", model=args.model,
                gpus=1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0, tracker_namespace=args.namespace,
                researchers=args.researchers)
        except ResearchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        research = start_autoresearch(config)
        progress = lambda: research_progress(config)  # noqa: E731
    crashed = False
    if research is None:
        progress = None
    while True:
        t0 = time.time()
        outcomes, crashes, research_summary = run_round(agents, tracker, research, args.autoresearch_iterations,
                                                        progress)
        print(format_summary(outcomes))
        if research_summary is not None:
            print(format_research_summary(research_summary))
        print(f"round took {time.time() - t0:.0f}s")
        for c in crashes:
            print(f"agent crashed: {c}", file=sys.stderr)
        crashed = crashed or bool(crashes)
        if args.interval is None:
            break
        log.info("next round in %.0f minute(s)", args.interval)
        time.sleep(args.interval * 60)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
