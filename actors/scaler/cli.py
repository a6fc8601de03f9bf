"""ScalerAgent: find MVEs with a positive verdict and scale them up.

The agent itself is `actors.scaler.agent.ScalerAgent`; this module holds the
command line that shows what the agents would pick up:

    python -m actors.scaler scan [--experiments DIR] [--code DIR] [--proposals DIR] [--json]

It reads live claims from the WorkTracker when a Ray cluster is already
running, and never starts Ray itself: a scan is a read-only look at the
folders, and starting a cluster as a side effect would surprise the user.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from actors.scaler.discovery import MVE, SCALE_PREFIX, find_mves, normalise_claim
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


def _row(mve: MVE) -> dict:
    return {
        "id": mve.id,
        "slug": mve.slug,
        "scalable": mve.scalable,
        "verdict": mve.verdict.label,
        "evidence": mve.verdict.evidence,
        "reason": mve.reason,
    }


def format_mves(mves: list[MVE]) -> str:
    rows = [(m.id, m.slug, "yes" if m.scalable else "no", m.reason) for m in mves]
    return format_table(("ID", "SLUG", "SCALABLE", "REASON"), rows,
                        empty="(no MVE folders: expected names like 001_my_experiment)")


def _scan(args: argparse.Namespace) -> int:
    for flag, path in (("--experiments", args.experiments), ("--code", args.code), ("--proposals", args.proposals)):
        if path is None:
            continue
        if not path.exists():
            hint = " (create it if nothing has been scaled yet)" if flag == "--code" else ""
            return fail(f"{flag} folder not found: {path}{hint}")
        if not path.is_dir():
            return fail(f"{flag} is not a folder: {path}")
    claimed, claims_source = live_claims()
    try:
        mves = find_mves(args.experiments, args.code, args.proposals, claimed=claimed)
    except OSError as exc:  # the folder vanished or is unreadable mid-scan
        return fail(str(exc))
    if args.json:
        for mve in mves:
            print(json.dumps(_row(mve), ensure_ascii=False))
    else:
        n_ok = sum(m.scalable for m in mves)
        print(format_mves(mves))
        print(f"\n{len(mves)} MVE(s), {n_ok} scalable; claims: {claims_source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m actors.scaler",
        description="Find MVEs worth scaling up (positive verdict, criteria met, "
        "not scaled, not claimed).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_scan = sub.add_parser("scan", help="list MVEs and whether each is scalable, with the reason")
    p_scan.add_argument("--experiments", type=Path, default=Path("examples/experiments"),
                        help="folder of NNN_slug MVE folders (default: %(default)s)")
    p_scan.add_argument("--code", type=Path, default=Path("examples/code"),
                        help="folder of NNN_scaled outputs (default: %(default)s)")
    p_scan.add_argument("--proposals", type=Path, default=None,
                        help="folder of NNN_*.md proposals (default: next to --experiments)")
    p_scan.add_argument("--json", action="store_true", help="one JSON object per MVE per line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "scan":
        return _scan(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
