"""`python -m actors.work_tracker list|clean|import`: who works on what, clearing
stale leases, and importing the old JSON tracker's state.

`list` and `clean` talk to the running tracker when a Ray cluster with one is
up, and read (or, for `clean`, rewrite) the Parquet state file directly when
none is. `import PATH/active_work.json` writes the state file directly, under
its writer lock (a running tracker holds that lock: stop it first), and never
starts or joins Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from actors.shared.cli import format_table
from actors.tracker.old_state import ImportPlan, OldStateError, plan_import, read_old_state
from actors.tracker.actor import NAMESPACE, STATE_ENV, default_state_path, running_tracker
from actors.tracker.rules import Claim, LeaseState, LeaseTable
from actors.tracker.store import SnapshotStore, StateLockedError, StatePathError, check_state_path


def format_claims(claims: list[Claim], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for c in claims:
        claimed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.claimed_at))
        expires = f"{c.expires_at - now:.0f}s" if c.live else "-"
        rows.append((c.work_id, c.owner, c.state.value, c.token, c.attempts, claimed, expires))
    return format_table(("WORK_ID", "OWNER", "STATE", "TOKEN", "ATTEMPTS", "CLAIMED", "EXPIRES_IN"), rows,
                        empty="(no claims)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m actors.work_tracker",
        description="Inspect and clean the WorkTracker's leases: through the running "
        "actor when a Ray cluster is up, from its Parquet state file when none is.",
    )
    parser.add_argument("--namespace", default=NAMESPACE, help=argparse.SUPPRESS)
    parser.add_argument("--address", default=None,
                        help="the Ray cluster to read (default: $RAY_ADDRESS, else a `ray start` cluster on this "
                        "machine, else none: the state file is read directly)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="show who works on what")
    p_list.add_argument("--state-filter", choices=[s.value for s in LeaseState], help="only claims in this state")
    p_clean = sub.add_parser("clean", help="evict expired leases (all live ones with --all)")
    p_clean.add_argument(
        "--all", action="store_true", help="evict every live lease, expired or not (the agents are known dead)"
    )
    p_import = sub.add_parser("import", help="import the old tracker's active_work.json (twice changes nothing)")
    p_import.add_argument("path", type=Path, metavar="PATH/active_work.json")
    p_import.add_argument("--code", type=Path, default=None,
                          help="the code folder whose NNN_scaled/results.json proves a completed scaling "
                          "(default: code/ beside PATH's folder, or inside it)")
    p_import.add_argument("--dry-run", action="store_true", help="show the claims it would write; write nothing")
    for p in (p_list, p_clean, p_import):
        p.add_argument("--json", action="store_true", help="one JSON object per claim")
        p.add_argument(
            "--state", type=Path, default=None,
            help=f"the Parquet state file (default: ${STATE_ENV} or {default_state_path()})",
        )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    state_path = (args.state.expanduser().resolve() if args.state else default_state_path())
    try:
        check_state_path(state_path, writable=args.command != "list" and not getattr(args, "dry_run", False))
    except StatePathError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "import":
        return _import(args, state_path)

    handle = running_tracker(args.namespace, args.address)
    if handle is not None:
        import ray

        running_path = ray.get(handle.info.remote())["state_path"]
        if args.state is not None and Path(running_path) != state_path:
            handle = None  # the user asked about another file: read that file
    if handle is not None:
        source = f"running tracker ({running_path})"
        if args.command == "list":
            claims = ray.get(handle.list_claims.remote(args.state_filter))
        else:
            claims = ray.get(handle.clean.remote(args.all))
    else:
        source = str(state_path)
        if not state_path.exists() and not SnapshotStore(state_path).prev_path.exists():
            print(f"No claims: no tracker is running and {state_path} does not exist.")
            return 0
        store = SnapshotStore(state_path)
        if args.command == "list":
            loaded = store.load(set_aside=False)
            table = LeaseTable(records=loaded.records, next_token=loaded.next_token)
            claims = table.list_claims(args.state_filter)
        else:
            try:
                store.lock()
            except StateLockedError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            try:
                loaded = store.load()
                # Offline, time is the wall clock: nobody has heartbeated since
                # the tracker went down, so stored expiries are the truth.
                table = LeaseTable(records=loaded.records, next_token=loaded.next_token, clock=time.time)
                claims = table.evict_all_live() if args.all else table.evict_stale()
                if claims or loaded.source != "current":
                    store.write(*table.snapshot())
            finally:
                store.close()

    if args.json:
        for c in claims:
            print(json.dumps(c.model_dump(mode="json")))
    elif args.command == "list":
        print(f"# {source}")
        print(format_claims(claims))
    else:
        print(f"# {source}: evicted {len(claims)} lease(s)")
        if claims:
            print(format_claims(claims))
    return 0


def _code_dir(args: argparse.Namespace) -> Path | None:
    if args.code is not None:
        return args.code
    here = args.path.resolve().parent
    for candidate in (here.parent / "code", here / "code"):
        if candidate.is_dir():
            return candidate
    return None


def format_import(plan: ImportPlan) -> str:
    claims = sorted(plan.write + plan.unchanged + plan.kept, key=lambda c: c.work_id)
    written = {c.work_id for c in plan.write}
    rows = [(c.work_id, c.owner, c.state.value, c.token, c.attempts,
             "new" if c.work_id in written else "-", plan.reasons.get(c.work_id, "")) for c in claims]
    return format_table(("WORK_ID", "OWNER", "STATE", "TOKEN", "ATTEMPTS", "WRITTEN", "HOW"), rows,
                        empty="(no entries)")


def _import(args: argparse.Namespace, state_path: Path) -> int:
    """Read the old file, plan the records, and write them under the state file's lock."""
    try:
        entries = read_old_state(args.path)
    except OldStateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.code is not None and not args.code.is_dir():
        print(f"error: --code folder not found: {args.code}", file=sys.stderr)
        return 2
    code = _code_dir(args)
    store = SnapshotStore(state_path)
    if not args.dry_run:
        try:
            store.lock()
        except StateLockedError as exc:
            print(f"error: {exc}; stop it, or import into another --state", file=sys.stderr)
            return 1
    try:
        loaded = store.load(set_aside=not args.dry_run)
        plan = plan_import(entries, loaded.records, loaded.next_token, source=args.path, code_dir=code)
        if plan.write and not args.dry_run:
            replaced = {c.work_id for c in plan.write}
            store.write([r for r in loaded.records if r.work_id not in replaced] + plan.write, plan.next_token)
    finally:
        store.close()
    if args.json:
        for c in sorted(plan.write + plan.unchanged + plan.kept, key=lambda c: c.work_id):
            print(json.dumps({**c.model_dump(mode="json"), "how": plan.reasons.get(c.work_id, ""),
                              "written": c in plan.write}))
        return 0
    what = "would write" if args.dry_run else "wrote"
    print(f"# {args.path} -> {state_path}{' (dry run: nothing written)' if args.dry_run else ''}")
    print(format_import(plan))
    print(f"\n{len(entries)} old entries: {what} {len(plan.write)} claim(s), {len(plan.unchanged)} unchanged, "
          f"{len(plan.kept)} kept as they were; scaled results checked in {code or '(no code folder found)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
