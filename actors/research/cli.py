"""`python -m actors.autoresearch run|parse-log`: the AutoResearch loop's command line.

    python -m actors.autoresearch run [--repo PATH] [--iterations K] [--tag T] [--resume] [--offline]
    python -m actors.autoresearch parse-log RUN.LOG [--metric REGEX] [--repo PATH] [--json]

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
from actors.research.logparse import MetricError, parse_log
from actors.shared.cli import fail


def _cmd_parse_log(args: argparse.Namespace) -> int:
    from actors.research.repo_settings import read_repo_settings

    path = Path(args.log)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # "\r" kept: line numbers as grep -n counts
    except OSError as exc:
        return fail(f"cannot read log {path}: {exc.strerror or exc}")
    metric = args.metric
    if metric is None and args.repo is not None:
        if not args.repo.is_dir():
            return fail(f"--repo {args.repo} is not a folder")
        try:
            metric = read_repo_settings(args.repo).metric
        except ResearchError as exc:
            return fail(str(exc))
    try:
        parsed = parse_log(text, metric=metric)
    except MetricError as exc:
        return fail(f"--{exc}")
    print(json.dumps(parsed, indent=2, allow_nan=False, default=str) if args.json else format_parsed(parsed, metric))
    return 0


def format_parsed(r: dict, metric: str | None = None) -> str:
    """parse-log's answer for a person: the score, the line it was read from, crashed or not."""
    def num(v, unit=""):
        return "?" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:,.1f}") + unit

    rows = []
    if r["crashed"]:
        rows.append(("val_bpb", "none: the run crashed"))
        rows.append(("crashed", f"yes: {r['error']}"))
        if r["metric_line"]:
            rows.append(("score line", f"{r['metric_line_no']}: {r['metric_line']} (not a result: see above)"))
        if r["last_val_bpb"] is not None:
            rows.append(("last val_bpb", f"{r['last_val_bpb']} (what the run had reached; not a result)"))
    else:
        loss = f"  (val_loss {r['val_loss']})" if r["val_loss"] is not None else ""
        rows.append(("val_bpb", f"{r['val_bpb']}{loss}"))
        rows.append(("score line", f"{r['metric_line_no']}: {r['metric_line']}"))
        rows.append(("crashed", "no"))
    rows.append(("metric", f"pinned: {metric}" if metric else "default: the last val_bpb that is not training "
                 "progress, exact line before its rounded twin"))
    if r["artifact_bytes"] is not None or r["model_bytes"] is not None:
        rows.append(("artifact", f"{num(r['artifact_bytes'])} bytes (model {num(r['model_bytes'])}, "
                     f"code {num(r['code_bytes'])})"))
    rows.append(("params", num(r["model_params"])))
    rows.append(("peak memory", num(r["peak_memory_mib"], " MiB")))
    steps = f"{num(r['steps'])}" + (f"/{r['total_steps']:,}" if r["total_steps"] else "")
    rows.append(("training", f"{num(r['training_seconds'], ' s')}, {steps} steps"))
    return "\n".join(f"{k:<13}{v}" for k, v in rows)


def _env_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ResearchError(f"--set {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    from actors.research.repo_settings import apply_repo_settings
    from actors.research.workspace import check_repository

    try:
        config = ResearchConfig.checked(
            repo=args.repo, workspace=args.workspace, file=args.file, tag=args.tag or default_tag(),
            resume=args.resume, timeout_s=args.timeout_min * 60, gpus=args.gpus or 0, env=_env_pairs(args.set),
            offline=args.offline, model=args.model, seed=args.seed, tracker_namespace=args.namespace,
            metric=args.metric)
        if config.repo is not None:
            check_repository(config, config.repo)  # refuse now, not after Ray has started
            apply_repo_settings(config, config.repo)  # a bad metric in program.md too
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
    p = sub.add_parser("parse-log", help="read a training log: its score, the line it is on, crashed or not",
                       description="Read a training log as the loop does: the score (the last val_bpb that is "
                       "not training progress, or the line --metric pins), the line it was read from, whether "
                       "the run crashed, and the size, memory and time it reports. Exit 0 whenever the log "
                       "could be read, crashed or not.")
    p.add_argument("log", help="path to the run log")
    p.add_argument("--metric", default=None, metavar="REGEX",
                   help="the score line: a regular expression; its group 'value' or first group, else the "
                   "val_bpb on the line, is the score (e.g. '^val_bpb:' or 'final_int6_sliding_window_exact')")
    p.add_argument("--repo", type=Path, default=None,
                   help="read the metric from this research repository's autoresearch.toml or program.md")
    p.add_argument("--json", action="store_true", help="print every field as JSON")
    p.set_defaults(func=_cmd_parse_log)

    r = sub.add_parser("run", help="run the loop",
                       description="Baseline twice, then ITERATIONS experiments, each a commit on "
                       "autoresearch/TAG, kept or discarded on val_bpb (and, in a Parameter Golf repository, the "
                       "16,000,000-byte artifact cap). "
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
    r.add_argument("--metric", default=None, metavar="REGEX",
                   help="pin the score line (see parse-log --help); default: the repository's "
                   "autoresearch.toml or program.md, else the run's final val_bpb")
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
