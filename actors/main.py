"""The main job: `python -m actors.main`.

For now it brings up the cluster's WorkTracker and takes one demo work item
through a full lease (claim, heartbeat, release as done), then prints the lease
table, the same one `python -m actors.work_tracker list` prints. The scaler
agents plug in here next.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from pathlib import Path

from actors.leases import LeaseState
from actors.tracker_client import LeaseKeeper, TrackerClient
from actors.work_tracker import (
    STATE_ENV,
    TrackerConfigError,
    TrackerStartError,
    connect_tracker,
    default_state_path,
    format_table,
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actors.main",
        description="Run the research cluster's main job: join the Ray cluster (or start a "
        "local one), bring up the WorkTracker, and work through a leased item.",
    )
    parser.add_argument(
        "--state", type=Path, default=None,
        help=f"the WorkTracker's Parquet state file (default: ${STATE_ENV} or {default_state_path()})",
    )
    parser.add_argument(
        "--hold-s", type=float, default=1.0,
        help="how long the demo holds its lease, heartbeating, before releasing it (default 1.0)",
    )
    args = parser.parse_args(argv)
    if args.hold_s < 0:
        parser.error("--hold-s must be zero or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("actors.main")

    try:
        tracker = connect_tracker(state_path=args.state)
    except (TrackerConfigError, TrackerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    client = TrackerClient(tracker)
    owner = f"main@{socket.gethostname()}"
    work_id = f"demo:{time.strftime('%Y%m%dT%H%M%S')}"

    claim = client.claim(work_id, owner)
    if claim is None:
        log.error("could not claim %s: someone else holds it", work_id)
        return 1
    log.info("claimed %s with token %d (lease until %s)", work_id, claim.token,
             time.strftime("%H:%M:%S", time.localtime(claim.expires_at)))
    # A short heartbeat interval so the demo shows heartbeats within --hold-s.
    with LeaseKeeper(client, claim, interval_s=max(args.hold_s / 3, 0.05)) as keeper:
        time.sleep(args.hold_s)
    if keeper.lost.is_set():
        log.error("lease on %s was lost while held", work_id)
        return 1
    if not client.heartbeat(work_id, claim.token):
        log.error("heartbeat on %s refused", work_id)
        return 1
    if not client.release(work_id, claim.token, LeaseState.DONE.value, {"demo": True}):
        log.error("release of %s refused", work_id)
        return 1
    log.info("released %s as done", work_id)

    import ray

    print(format_table(ray.get(tracker.list_claims.remote())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
