"""`python -m actors.autoresearch run|status|parse-log`: the AutoResearch loop's command line.

    python -m actors.autoresearch run [--repo PATH] [--researchers K] [--iterations N] [--tag T] [--resume]
                                      [--metric REGEX]
    python -m actors.autoresearch status [--repo PATH] [--tag T]
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
import time
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
            metric=args.metric, researchers=args.researchers, protect=args.protect, significance=args.significance,
            min_gain=args.min_gain, baseline_seeds=args.baseline_seeds, max_seeds=args.max_seeds,
            seed_var=args.seed_var, rescore="" if args.no_rescore else args.rescore, artifact=args.artifact)
        if config.repo is not None:
            check_repository(config, config.repo)  # refuse now, not after Ray has started
            apply_repo_settings(config, config.repo)  # a bad metric in program.md too
    except ResearchError as exc:
        return fail(str(exc))
    import ray

    from actors.research.team import start_autoresearch
    from actors.tracker.actor import TrackerConfigError, TrackerStartError, connect_tracker

    try:
        connect_tracker(state_path=args.state, namespace=args.namespace, address=args.address)
    except (TrackerConfigError, TrackerStartError) as exc:
        return fail(str(exc), 1)
    if args.gpus is None:
        config.gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    handle = start_autoresearch(config)
    ref = handle.run.remote(args.iterations)
    try:
        summary = _wait(ref, config)
    except KeyboardInterrupt:
        # The team cancels its researchers: runs stopped, claims released, unmeasured commits kept.
        ray.cancel(ref)
        try:
            ray.get(ref, timeout=60)
        except Exception:  # noqa: BLE001 - cancelled is what we asked for
            pass
        print(f"stopped: AutoResearch {config.branch} interrupted; continue with --resume", file=sys.stderr)
        return 130
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        if isinstance(cause, ResearchError):
            return fail(str(cause))
        raise
    print(format_summary(summary))
    return 0


def _wait(ref, config: ResearchConfig, every_s: float = 30.0) -> dict:
    """The team's summary; a progress line every `every_s` while it works."""
    import ray

    from actors.research.memory import read_results
    from actors.research.progress import STATUS_KIND, progress_line, read_statuses
    from actors.research.workspace import STATE_DIR

    root = Path(config.repo).resolve() if config.repo else config.workspace.resolve()
    while True:
        ready, _ = ray.wait([ref], timeout=every_s)
        if ready:
            return ray.get(ref)
        try:
            rows = read_results(root / "results.tsv")
            statuses = read_statuses(root / STATE_DIR / STATUS_KIND / config.tag)
            logging.getLogger("actors.autoresearch").info("%s", progress_line(rows, statuses))
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            logging.getLogger("actors.autoresearch").debug("no progress line: %s", exc)


def _cmd_status(args: argparse.Namespace) -> int:
    from actors.research.config import BRANCH_PREFIX
    from actors.research.memory import RESULTS_FILE, ResearchLogError, read_results
    from actors.research.progress import STATUS_KIND, read_statuses, status_lines
    from actors.research.workspace import STATE_DIR

    root = (args.repo or args.workspace).expanduser().resolve()
    if not (root / ".git").exists():
        return fail(f"{root} is not a research repository (no .git)")
    tag = args.tag
    if tag is None:
        current = root / STATE_DIR / "current"
        if not current.exists():
            return fail(f"no AutoResearch branch has run in {root}; pass --tag")
        tag = current.read_text().strip().removeprefix(BRANCH_PREFIX)
    results = root / RESULTS_FILE
    current = root / STATE_DIR / "current"
    if current.exists() and current.read_text().strip() != BRANCH_PREFIX + tag:
        results = root / STATE_DIR / "branches" / (BRANCH_PREFIX + tag).replace("/", "__") / RESULTS_FILE
    try:
        rows = read_results(results)
    except ResearchLogError as exc:
        return fail(str(exc))
    statuses = read_statuses(root / STATE_DIR / STATUS_KIND / tag)
    if not rows and not statuses:
        return fail(f"nothing recorded for {BRANCH_PREFIX}{tag} in {root}")
    now = time.time()
    for st in statuses:
        if st.get("state") not in ("stopped",) and now - st.get("updated", now) > 3600:
            st["doing"] = f"{st.get('doing', '')} (no update for {int((now - st['updated']) // 60)} min)"
    print(status_lines(rows, statuses, BRANCH_PREFIX + tag))
    print(f"results.tsv, notes.md and progress.png in {results.parent}")
    return 0


def format_summary(summary: dict) -> str:
    best = summary.get("best_val_bpb")
    base = summary.get("baseline_val_bpb")
    lines = [f"AutoResearch {summary['branch']} in {summary['repo']} ({summary['proposer']}, "
             f"{summary.get('researchers', 1)} researcher(s))",
             f"  experiments {summary['experiments']}: kept {summary['keep']}, discarded {summary['discard']}, "
             f"crashed {summary['crash']}, backtracked {summary['backtrack']}; {summary.get('runs', 0)} runs"
             + (f", {summary['pending']} undecided" if summary.get("pending") else "")]
    if best is not None and base is not None:
        lines.append(f"  val_bpb baseline {base:.4f} -> best {best:.4f} ({best - base:+.4f}), seed noise sd "
                     f"{summary['noise_floor'] or 0:.4f}; best commit {summary['best_commit'][:10]}, "
                     f"head {summary['head'][:10]}")
    if summary.get("llm_tokens"):
        lines.append(f"  LLM tokens {summary['llm_tokens']}, ${summary['llm_cost_usd']:.4f}")
    if summary.get("stop_reason"):
        lines.append(f"  stopped early: {summary['stop_reason']}")
    lines.append(f"  results.tsv, notes.md and progress.png in {summary['repo']}; {summary['seconds']:.0f}s")
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

    st = sub.add_parser("status", help="what each researcher does, experiments, keeps, the best val_bpb",
                        description="Reads results.tsv and the researchers' status files; needs no Ray.")
    st.add_argument("--repo", type=Path, default=None, help="the research repository (default: the workspace)")
    st.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE, help=argparse.SUPPRESS)
    st.add_argument("--tag", default=None, help="the branch autoresearch/TAG (default: the last one run)")
    st.set_defaults(func=_cmd_status)

    r = sub.add_parser("run", help="run the loop",
                       description="K researchers in git worktrees of one repository share results.tsv and "
                       "notes.md: the file is run with BASELINE_SEEDS seeds, then each researcher runs "
                       "ITERATIONS experiments, each a commit kept on autoresearch/TAG only when a t-test over "
                       "seeded runs says it beats the best (and, in a Parameter Golf repository, the artifact is "
                       "under the 16,000,000-byte cap). "
                       "Claude proposes the changes when ANTHROPIC_API_KEY is set; otherwise (or with "
                       "--offline) one numeric hyperparameter default changes per experiment.")
    r.add_argument("--repo", type=Path, default=None,
                   help="git repository holding the file (default: a workspace made from examples/golf)")
    r.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE,
                   help="where the template workspace lives without --repo (default: %(default)s)")
    r.add_argument("--file", default="train_gpt.py", help="the file under research (default: %(default)s)")
    r.add_argument("--iterations", type=int, default=10, help="experiments each researcher runs after the "
                   "baseline; extra seeds and re-measures come on top (default 10)")
    r.add_argument("--researchers", type=int, default=1, metavar="K",
                   help="researchers in parallel, each in its own git worktree, each run holding --gpus GPUs "
                   "or one CPU (default 1)")
    r.add_argument("--protect", action="append", default=[], metavar="PATH",
                   help="a file no proposal may change, hashed before every run (repeatable; prepare.py is "
                   "protected whenever the repository has one)")
    r.add_argument("--significance", type=float, default=0.05, metavar="P",
                   help="keep when a one-sided t-test over seeded runs gives p < P (default 0.05; "
                   "Parameter Golf records: 0.01)")
    r.add_argument("--min-gain", type=float, default=0.0, help="the val_bpb a keep must beat the best by "
                   "(default 0; Parameter Golf records: 0.005)")
    r.add_argument("--baseline-seeds", type=int, default=3, help="seeded runs of the file as it is (default 3)")
    r.add_argument("--max-seeds", type=int, default=5, help="runs of a candidate before a small gain is given up "
                   "(default 5)")
    r.add_argument("--seed-var", default="SEED", help="the environment variable each run's seed goes in "
                   "(default SEED)")
    r.add_argument("--rescore", default=None, metavar="CMD",
                   help="command that re-scores a kept run's artifact on a held-out split and prints val_bpb, "
                   "with {artifact} and {file} (default: the golf template harness's, when present)")
    r.add_argument("--no-rescore", action="store_true", help="no held-out re-score of kept artifacts")
    r.add_argument("--artifact", default="final_model.int8.ptz", help="the file each run leaves for the "
                   "re-score (default %(default)s)")
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
        if args.researchers < 1:
            parser.error("--researchers must be at least 1")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
