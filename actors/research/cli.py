"""`python -m actors.autoresearch run|parse-log`: the AutoResearch loop's command line.

    python -m actors.autoresearch run [--repo PATH] [--iterations K] [--tag T] [--resume] [--offline]
    python -m actors.autoresearch parse-log RUN.LOG

Every mistake that can be found without Ray (not a repository, uncommitted
changes, a missing file, an existing branch) is refused before Ray starts, in
one line, and leaves the repository as it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from actors.research.config import DEFAULT_TIMEOUT_S, DEFAULT_WORKSPACE, ResearchConfig, ResearchError, default_tag
from actors.research.logparse import parse_log
from actors.shared.cli import fail


def _cmd_parse_log(args: argparse.Namespace) -> int:
    path = Path(args.log)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return fail(f"cannot read log {path}: {exc.strerror or exc}")
    print(json.dumps(parse_log(text), indent=2, allow_nan=False, default=str))
    return 0


def _env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ResearchError(f"--set {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from actors.research.workspace import check_repository

    try:
        config = ResearchConfig.checked(
            repo=args.repo, workspace=args.workspace, file=args.file, tag=args.tag or default_tag(),
            resume=args.resume, timeout_s=args.timeout_min * 60, gpus=args.gpus or 0, env=_env_pairs(args.set),
            offline=args.offline, model=args.model, seed=args.seed, tracker_namespace=args.namespace)
        if config.repo is not None:
            check_repository(config, config.repo)  # refuse now, not after Ray has started
    except ResearchError as exc:
        return fail(str(exc))
    import ray

    from actors.research.loop import start_autoresearch
    from actors.tracker.actor import TrackerConfigError, TrackerStartError, connect_tracker

    try:
        connect_tracker(state_path=args.state, namespace=args.namespace, address=args.address)
    except (TrackerConfigError, TrackerStartError) as exc:
        return fail(str(exc), 1)
    if args.gpus is None:
        config.gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    handle = start_autoresearch(config)
    try:
        summary = ray.get(handle.run.remote(args.iterations))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, ResearchError):
            return fail(str(cause))
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
    from actors.tracker.actor import NAMESPACE

    parser = argparse.ArgumentParser(prog="python -m actors.autoresearch",
                                     description="The AutoResearch keep/discard loop over one training script.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("parse-log", help="parse a training log and print JSON")
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
    r.add_argument("--address", default=None, help="the Ray cluster to run on (default: $RAY_ADDRESS, else a "
                   "`ray start` cluster on this machine, else a new local Ray instance)")
    r.add_argument("--namespace", default=NAMESPACE, help=argparse.SUPPRESS)
    r.set_defaults(func=_cmd_run)
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.iterations < 0:
            parser.error("--iterations must be >= 0")
        if args.timeout_min <= 0:
            parser.error("--timeout-min must be positive")
        if args.gpus is not None and args.gpus < 0:
            parser.error("--gpus must be >= 0")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
