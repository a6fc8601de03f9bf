"""Benchmark the WorkTracker on local Ray.

Measures, in one run:
  1. durable claim+release pairs per second, and p50/p99 claim latency, with
     1, 10 and 50 concurrent callers (each call answers only after its change
     is in the Parquet snapshot on disk; every pair takes fresh work, so the
     table grows as it would), beside the same calls to a no-op actor: the
     floor that Ray's own call path sets on this machine;
  2. the cost of one snapshot write at 100, 1,000 and 10,000 claims.

The throughput runs are made with the copy of the snapshot to a storage off
and on (`copy`: none, or s3 = moto's S3 server on 127.0.0.1, uploaded every
2 s in the background, as `connect_tracker(storage=...)` does); `--no-copy`
leaves the copy-on runs out.

Targets (issue 2): >= 1,000 durable mutations/s with 50 callers, p99 claim
latency < 50 ms, on a 2-core machine.

    python scripts/bench_tracker.py [--seconds 5] [--callers 1 10 50] [--no-copy] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from actors.tracker.store import SnapshotStore  # noqa: E402
from actors.tracker.rules import LeaseTable  # noqa: E402
from actors.tracker.actor import connect_tracker, stop_tracker  # noqa: E402


@ray.remote(num_cpus=0, max_concurrency=1000)
class RayFloor:
    """The same calls answered at once, with no lease logic and no disk: what
    one async actor call costs on this machine, the floor under the tracker."""

    def __init__(self):
        self.token = 0

    async def claim(self, work_id, owner, request_id=None):
        self.token += 1
        return {"work_id": work_id, "token": self.token}

    async def release(self, work_id, token, outcome, result=None):
        return True

    async def info(self):
        return {"commits": 0, "records": 0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _caller(handle, name: str, measure_from: float, stop_at: float, latencies: list[float]) -> int:
    """Claim and release fresh work until `stop_at`; count and time only what
    starts after `measure_from` (the warm-up absorbs actor and loop start-up)."""
    pairs = i = 0
    while time.perf_counter() < stop_at:
        work_id = f"{name}/{i}"
        i += 1
        t0 = time.perf_counter()
        grant = await handle.claim.remote(work_id, name, uuid.uuid4().hex)
        claim_s = time.perf_counter() - t0
        if grant is None:
            raise RuntimeError(f"fresh work {work_id} was refused")
        token = grant["token"] if isinstance(grant, dict) else grant.token
        if not await handle.release.remote(work_id, token, "done"):
            raise RuntimeError(f"release of {work_id} was refused")
        if t0 >= measure_from:
            latencies.append(claim_s)
            pairs += 1
    return pairs


async def _mark_commits(handle, at: float, window: dict) -> int:
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    window["start"] = time.perf_counter()
    window["start_commits"] = (await handle.info.remote())["commits"]
    return 0


def bench_throughput(callers: int, seconds: float, workdir: Path, floor: bool = False, warmup_s: float = 1.0,
                     storage: str | None = None) -> dict:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    if floor:
        handle = RayFloor.remote()
    else:
        state = workdir / f"state-{callers}-{'copy' if storage else 'nocopy'}.parquet"
        handle = connect_tracker(state, namespace=namespace, storage=storage)
    latencies: list[float] = []

    window: dict[str, float] = {}

    async def run() -> int:
        measure_from = time.perf_counter() + warmup_s
        stop_at = measure_from + seconds
        counts = await asyncio.gather(
            *(_caller(handle, f"c{i}", measure_from, stop_at, latencies) for i in range(callers)),
            _mark_commits(handle, measure_from, window),
        )
        window["end"] = time.perf_counter()
        window["end_commits"] = ray.get(handle.info.remote())["commits"]
        return sum(counts[:-1])

    pairs = asyncio.run(run())
    elapsed = window["end"] - window["start"]
    commits = window["end_commits"] - window["start_commits"]
    info = ray.get(handle.info.remote())
    if floor:
        ray.kill(handle)
    else:
        stop_tracker(namespace=namespace)
    mutations = 2 * pairs
    return {
        "actor": "ray floor (no-op)" if floor else "WorkTracker",
        "copy": "s3" if storage else "none",
        "callers": callers,
        "pairs": pairs,
        "seconds": round(elapsed, 2),
        "pairs_per_s": round(pairs / elapsed, 1),
        "mutations_per_s": round(mutations / elapsed, 1),
        "claim_p50_ms": round(percentile(latencies, 50) * 1e3, 2),
        "claim_p99_ms": round(percentile(latencies, 99) * 1e3, 2),
        "snapshot_writes": commits,
        "mutations_per_write": round(mutations / max(commits, 1), 1),
        "records_at_end": info["records"],
        "copies": info.get("copies", 0),
    }


def bench_snapshot(n: int, workdir: Path, repeats: int = 7) -> dict:
    table = LeaseTable(ttl_s=1800)
    for i in range(n):
        grant = table.claim(f"scale:{i:05d}", f"scaler-{i % 5}", uuid.uuid4().hex)
        if i % 2:
            table.release(grant.work_id, grant.token, "done", {"val_loss": 3.2, "gpu_hours": 1.5})
    store = SnapshotStore(workdir / f"snap-{n}.parquet")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        size = store.write(*table.snapshot())
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    loaded = store.load()
    load_s = time.perf_counter() - t0
    assert len(loaded.records) == n
    return {
        "claims": n,
        "write_median_ms": round(statistics.median(times) * 1e3, 2),
        "write_max_ms": round(max(times) * 1e3, 2),
        "load_ms": round(load_s * 1e3, 2),
        "bytes": size,
    }


def start_s3() -> str:
    """moto's S3 server on 127.0.0.1 and a bucket; the tracker finds it through the
    usual AWS_* environment, set here before Ray starts."""
    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    pyarrow.fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                            allow_bucket_creation=True).create_dir("bench")
    return "s3://bench/ray-autoresearch"


def print_table(title: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--snapshot-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="where bench_tracker.json goes")
    parser.add_argument("--no-copy", action="store_true", help="leave out the runs with the copy to S3 on")
    args = parser.parse_args(argv)

    os.environ.pop("RAY_AUTORESEARCH_STORAGE", None)  # the copy is on only where this script says
    storage = None if args.no_copy else start_s3()  # before Ray starts: its workers inherit the environment
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="bench-tracker-") as tmp:
        workdir = Path(tmp)
        throughput = []
        for c in args.callers:
            throughput.append(bench_throughput(c, args.seconds, workdir))
            if storage:
                throughput.append(bench_throughput(c, args.seconds, workdir, storage=storage))
            throughput.append(bench_throughput(c, args.seconds, workdir, floor=True))
        snapshots = [bench_snapshot(n, workdir) for n in args.snapshot_sizes]
    ray.shutdown()

    print_table("Durable claim+release through the actor (local Ray, 2 CPUs)", throughput)
    print_table("Snapshot write (fsync'd, atomic rename) by table size", snapshots)
    print()
    verdict = {}
    for c in args.callers:
        tracker = next(r for r in throughput if r["callers"] == c and r["actor"] == "WorkTracker"
                       and r["copy"] == "none")
        floor = next(r for r in throughput if r["callers"] == c and r["actor"] != "WorkTracker")
        verdict[c] = {
            "mutations_per_s": tracker["mutations_per_s"],
            "ratio_to_1000_target": round(tracker["mutations_per_s"] / 1000, 2),
            "ratio_to_ray_floor": round(tracker["mutations_per_s"] / floor["mutations_per_s"], 2),
            "claim_p99_ms": tracker["claim_p99_ms"],
            "ray_floor_p99_ms": floor["claim_p99_ms"],
        }
        print(
            f"{c:>3} callers: {tracker['mutations_per_s']:.0f} durable mutations/s "
            f"({verdict[c]['ratio_to_1000_target']}x the 1,000/s target, "
            f"{verdict[c]['ratio_to_ray_floor']}x bare Ray calls); p99 claim "
            f"{tracker['claim_p99_ms']} ms (target < 50; bare Ray calls {floor['claim_p99_ms']} ms)"
        )
        copied = next((r for r in throughput if r["callers"] == c and r["copy"] == "s3"), None)
        if copied:
            verdict[c]["with_s3_copy"] = {k: copied[k] for k in ("mutations_per_s", "claim_p50_ms", "claim_p99_ms",
                                                                  "copies")}
            print(f"{'':>3}          with the S3 copy on: {copied['mutations_per_s']:.0f} mutations/s, p99 claim "
                  f"{copied['claim_p99_ms']} ms, {copied['copies']} uploads")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_tracker.json"
    out.write_text(json.dumps({"throughput": throughput, "snapshot": snapshots, "verdict": verdict,
                               "loadavg": load}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
