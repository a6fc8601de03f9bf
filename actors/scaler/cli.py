"""ScalerAgent: find MVEs with a positive verdict and scale them up.

The agent itself is `actors.scaler.agent.ScalerAgent`; this module holds the
command line that shows what the agents would pick up:

    python -m actors.scaler scan [--experiments DIR] [--code DIR] [--proposals DIR]
                                 [--judge auto|claude|heuristics] [--details] [--json]

It reads both layouts (experiment folders and flat NNN_results.md files with
code in code/NNN/), says how many files it read, which judge decided, which
files it could not read, and why each MVE is (not) scalable. It reads live
claims from the WorkTracker when a Ray cluster is already running, and never
starts Ray itself: a scan is a read-only look at the folders, and starting a
cluster as a side effect would surprise the user.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from actors.scaler.discovery import MVE, SCALE_PREFIX, ScanResult, normalise_claim, scan
from actors.scaler.judge_claude import make_judge
from actors.shared.cli import fail, format_table
from actors.tracker.actor import running_tracker

logger = logging.getLogger(__name__)

CLAIMS_TIMEOUT_S = 30.0


def live_claims() -> tuple[set[str], str]:
    """MVE ids claimed in the running WorkTracker, and where that answer came from.

    No cluster (or a cluster without a tracker) means nobody can hold a claim.
    """
    import ray

    try:
        tracker = running_tracker()
    except Exception as exc:  # a malformed RAY_ADDRESS, an unreachable cluster
        return set(), f"could not reach the Ray cluster ({exc}): no claims read"
    if tracker is None:
        return set(), "no Ray cluster with a work tracker running: no claims"
    try:
        claims = ray.get(tracker.list_claims.remote("claimed"), timeout=CLAIMS_TIMEOUT_S)
    except Exception as exc:
        return set(), f"work tracker did not answer ({exc}): no claims read"
    ids = {normalise_claim(c.work_id) for c in claims if c.work_id.startswith(SCALE_PREFIX)}
    return ids, f"{len(ids)} claim(s) from the running work tracker"


def _rel(path: Path | None, root: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def _row(mve: MVE) -> dict:
    return {
        "id": mve.id,
        "slug": mve.slug,
        "status": mve.status,
        "scalable": mve.scalable,
        "layout": mve.layout,
        "judge": mve.judge,
        "verdict": mve.verdict.label,
        "evidence": mve.verdict.evidence,
        "evidence_source": mve.verdict.source,
        "reason": mve.reason,
        "criteria": mve.criteria,
        "quotes": mve.evidence,
        "notes": mve.notes,
        "shared_with": mve.shared_with,
        "path": _rel(mve.path, mve.root),
        "code": _rel(mve.code_path, mve.root),
        "proposal": _rel(mve.proposal, mve.root),
        "files": [_rel(p, mve.root) for p in mve.files],
    }


def format_mves(mves: list[MVE], details: bool = False) -> str:
    rows = [(m.id, m.slug or "-", m.status, m.layout, m.reason) for m in mves]
    table = format_table(("ID", "SLUG", "STATUS", "LAYOUT", "REASON"), rows, empty="(no MVEs)")
    if not details:
        return table
    lines = [table, ""]
    for m in mves:
        extra = [f"    quote: {q}" for q in m.evidence] + [f"    note: {n}" for n in m.notes]
        if extra:
            lines += [f"{m.id} ({m.judge}):"] + extra
    return "\n".join(lines)


def format_scan_summary(result: ScanResult, where: str = "") -> str:
    """The lines that keep a scan from being silent: files read, MVEs by status,
    which judge decided, unreadable files, and the layouts looked for when none was found."""
    counts = result.counts()
    by_status = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items()) or "none"
    lines = [f"read {result.files_read} file(s) of {result.files_seen}{' in ' + where if where else ''}; "
             f"{len(result.mves)} MVE(s): {by_status}"]
    judges = result.judges()
    if judges:
        lines.append("judged by: " + ", ".join(f"{j} ({n})" for j, n in sorted(judges.items())))
    if not result.mves:
        lines.append(f"no MVE found: looked for {result.looked_for}")
    for path, why in result.unreadable:
        lines.append(f"unreadable: {path}: {why}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


ATTENTION = ("scaled_by_hand", "ambiguous", "duplicate", "unreadable", "blocked")


def scan_report(experiments: Path, code: Path, proposals: Path | None = None, model: str | None = None,
                offline: bool = False) -> str:
    """What `actors.main` prints before each round: the scan summary, and one
    line for each MVE a person should look at (scaled by hand, ambiguous, a
    shared number, unreadable, blocked). Judging here, once, also fills the
    judge's cache before the agents scan."""
    try:
        result = scan(experiments, code, proposals, judge=make_judge(model, offline=offline))
    except OSError as exc:
        return f"scan of {experiments} failed: {exc}"
    lines = [format_scan_summary(result, str(experiments))]
    if not result.mves:
        lines[0] += _hint(Path(experiments))
    lines += [f"  {m.id} {m.status.replace('_', ' ')}: {m.reason[:160]}" for m in result.mves
              if m.status in ATTENTION]
    return "\n".join(lines)


def _hint(experiments: Path) -> str:
    """A likely mistake: --experiments names the research folder, not its experiments/."""
    inner = experiments / "experiments"
    if inner.is_dir():
        return f"; did you mean --experiments {inner} --code {experiments / 'code'}?"
    return ""


def _scan(args: argparse.Namespace) -> int:
    for flag, path in (("--experiments", args.experiments), ("--code", args.code), ("--proposals", args.proposals)):
        if path is None:
            continue
        if not path.exists():
            hint = " (create it if nothing has been scaled yet)" if flag == "--code" else ""
            return fail(f"{flag} folder not found: {path}{hint}")
        if not path.is_dir():
            return fail(f"{flag} is not a folder: {path}")
    if args.judge == "claude" and not os.environ.get("ANTHROPIC_API_KEY"):
        return fail("--judge claude needs ANTHROPIC_API_KEY; without a key the heuristics judge (--judge auto)")
    judge = make_judge(args.model, offline=args.judge == "heuristics", cache_dir=args.judge_cache)
    claimed, claims_source = live_claims()
    try:
        result = scan(args.experiments, args.code, args.proposals, claimed=claimed, judge=judge)
    except OSError as exc:  # the folder vanished or is unreadable mid-scan
        return fail(str(exc))
    summary = format_scan_summary(result, str(args.experiments))
    if not result.mves:
        summary += _hint(args.experiments)
    if args.json:
        for mve in result.mves:
            print(json.dumps(_row(mve), ensure_ascii=False))
        print(summary, file=sys.stderr)  # stdout stays one JSON object per line
    else:
        print(format_mves(result.mves, details=args.details))
        print()
        print(summary)
        print(f"claims: {claims_source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m actors.scaler",
        description="Find MVEs worth scaling up (positive verdict, criteria met, "
        "not scaled, not claimed), in experiment folders or flat NNN_results.md files.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_scan = sub.add_parser("scan", help="list MVEs and whether each is scalable, with the reason")
    p_scan.add_argument("--experiments", type=Path, default=Path("examples/experiments"),
                        help="folder of NNN_slug/ folders or NNN_results.md files (default: %(default)s)")
    p_scan.add_argument("--code", type=Path, default=Path("examples/code"),
                        help="folder of NNN/ code and NNN_scaled/ outputs (default: %(default)s)")
    p_scan.add_argument("--proposals", type=Path, default=None,
                        help="folder of NNN-slug.md proposals (default: next to --experiments)")
    p_scan.add_argument("--judge", choices=("auto", "claude", "heuristics"), default="auto",
                        help="who reads the verdicts: Claude when ANTHROPIC_API_KEY is set (auto), or the "
                        "offline heuristics (default: %(default)s)")
    p_scan.add_argument("--judge-cache", type=Path, default=None, metavar="DIR",
                        help="where Claude's answers are cached by file hash (default: $RAY_AUTORESEARCH_JUDGE_CACHE "
                        "or ~/.ray-autoresearch/judge_cache)")
    p_scan.add_argument("--model", default=None, help="Claude model for the judge (default: $ANTHROPIC_MODEL or "
                        "the SDK default)")
    p_scan.add_argument("--details", action="store_true", help="print the quotes and notes behind each row")
    p_scan.add_argument("--json", action="store_true", help="one JSON object per MVE per line (summary on stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "scan":
        return _scan(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
