"""Chaos benchmark: interrupt the main job many times at random points, then finish it.

The CI test (tests/integration/test_chaos.py) interrupts twice (SIGTERM, SIGKILL); this runs as
many rounds as asked, each interrupted by a random kind (SIGINT, SIGTERM, SIGKILL
of the driver, `ray.kill` of an agent) after a random delay, then one normal run,
and checks what a user would: every scalable MVE scaled exactly once, no claim
held, none of the user's files changed. It prints a table and writes JSON.

    python scripts/bench_chaos.py [--rounds 8] [--seed 0] [--min-s 5 --max-s 40] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="interrupted rounds before the final run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-s", type=float, default=5.0, help="earliest interruption, seconds into a round")
    parser.add_argument("--max-s", type=float, default=40.0, help="latest interruption")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    import os

    import ray

    from tests.chaos import KINDS, ChaosRun, check, fingerprint_user_files
    from tests.support import pristine_examples

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        examples = Path(tmp) / "examples"
        shutil.copytree(pristine_examples(), examples)
        before = fingerprint_user_files(examples)
        ledger = (examples / "experiments/EXPERIMENTS.md").read_text()
        run = ChaosRun(examples, Path(tmp) / "state.parquet", f"chaos-{uuid.uuid4().hex[:8]}", env, seed=args.seed)
        t0 = time.monotonic()
        for i in range(args.rounds):
            kind = rng.choice(KINDS)
            after = rng.uniform(args.min_s, args.max_s)
            code, took = run.interrupt(kind, after)
            rows.append({"round": i + 1, "kind": kind, "after_s": round(after, 1), "exit": code,
                         "stop_s": round(took, 1)})
            print(f"round {i + 1}: {run.log[-1]}", flush=True)
        final = run.finish()
        total = time.monotonic() - t0
        tracker = ray.get_actor("work_tracker", namespace=run.namespace)
        problems = check(examples, tracker, ["001", "002", "003"], ledger.count("\n## "))
        if fingerprint_user_files(examples) != before:
            problems.append("a file of the user's changed")
        if not (examples / "experiments/EXPERIMENTS.md").read_text().startswith(ledger):
            problems.append("the ledger was rewritten, not appended to")
    ray.shutdown()

    print(f"\n{'round':>5}  {'kind':<8}  {'after s':>7}  {'exit':>5}  {'stop s':>6}")
    for r in rows:
        print(f"{r['round']:>5}  {r['kind']:<8}  {r['after_s']:>7}  {str(r['exit']):>5}  {r['stop_s']:>6}")
    graceful = [r["stop_s"] for r in rows if r["kind"] in ("SIGINT", "SIGTERM") and r["stop_s"]]
    print(f"\ninterruptions {len(rows)}, final run exit {final.returncode}, total {total:.0f}s; graceful stops "
          f"median {statistics.median(graceful) if graceful else float('nan'):.1f}s, max "
          f"{max(graceful) if graceful else float('nan'):.1f}s")
    print("problems: " + ("; ".join(problems) if problems else "none (every scalable MVE scaled exactly once, "
                          "no claim held, the user's files unchanged)"))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "chaos.json"
    out.write_text(json.dumps({"rounds": rows, "final_exit": final.returncode, "total_s": total,
                               "problems": problems, "log": run.log}, indent=2))
    print(f"wrote {out}")
    return 0 if not problems and final.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
