"""Benchmark AutoResearch with one researcher against two: experiments per hour and
the overhead per run outside the training process.

Both arms run the same golf template (examples/golf, a fresh workspace each) with
the same per-run budget (`MAX_WALLCLOCK_SECONDS`) and one thread per run
(`NUM_THREADS=1`), the offline proposer, researchers as Ray actors on a local Ray
instance of this script's own (one CPU per run), claims in a WorkTracker of its
own. Each researcher runs `--iterations` experiments of its own; the baseline
seeds, extra seeds and re-measures are part of the run, held-out re-scores are
switched off (they depend on how many keeps happen, not on K).

Measured from the researchers' phase timings (the loop's `on_phase` hook, written
to a file by each actor):

- experiments/h: decided experiments per hour of the whole run (baseline included);
  runs/h: training runs per hour (extra seeds and re-measures included);
- overhead per run: everything a researcher does outside its training process
  (propose, commit, record under the team lock, Ray task launch, log transfer and
  parse), divided by its runs, and as a share of the mean training time. Idle
  waiting at the end (a researcher done while the other finishes) is reported apart.

Targets: K=2 / K=1 experiments per hour >= 1.8; overhead < 5% of the run's time.

    python scripts/bench_research.py [--budget-s 30] [--iterations 3] [--max-seeds 2] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class PhaseLog:
    """The loop's `on_phase` hook, as a picklable object that appends JSON lines to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, n: int, phase: str, seconds: float, details: dict) -> None:
        line = json.dumps({"t": time.time(), "n": n, "phase": phase, "s": seconds, **details})
        with open(self.path, "a") as f:
            f.write(line + "\n")


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_arm(k: int, args, root: Path, namespace: str) -> dict:
    import ray

    from actors.research.config import ResearchConfig
    from actors.research.memory import read_results
    from actors.research.team import start_autoresearch

    log = root / f"phases-k{k}.jsonl"
    cfg = ResearchConfig(workspace=root / f"workspace-k{k}", tag=f"bench{k}", offline=True, researchers=k,
                         env={"MAX_WALLCLOCK_SECONDS": str(args.budget_s), "NUM_THREADS": "1"}, rescore="",
                         timeout_s=args.budget_s * 6 + 120, tracker_namespace=namespace, max_seeds=args.max_seeds)
    before = load()
    t0 = time.time()
    summary = ray.get(start_autoresearch(cfg, on_phase=PhaseLog(str(log))).run.remote(args.iterations))
    wall = time.time() - t0
    phases = [json.loads(line) for line in log.read_text().splitlines()]
    rows = read_results(root / f"workspace-k{k}" / "results.tsv")
    runs = [p for p in phases if p["phase"] == "run"]
    training = sum(p["training_s"] for p in runs)
    waiting = sum(p["s"] for p in phases if p["phase"] == "wait")
    work = sum(p["s"] for p in phases if p["phase"] in ("propose", "commit", "run", "record"))
    overhead = work - training
    experiments = sum(r.is_experiment for r in rows)
    return {"k": k, "wall_s": wall, "experiments": experiments, "runs": len(runs),
            "experiments_per_hour": experiments / wall * 3600, "runs_per_hour": len(runs) / wall * 3600,
            "mean_training_s": training / len(runs), "overhead_per_run_s": overhead / len(runs),
            "overhead_share": overhead / training, "idle_wait_s": waiting,
            "phase_medians_s": {ph: statistics.median([p["s"] for p in phases if p["phase"] == ph] or [0.0])
                                for ph in ("propose", "commit", "record")},
            "launch_median_s": statistics.median(p["run_wall_s"] - p["training_s"] for p in runs),
            "best_val_bpb": summary["best_val_bpb"], "keep": summary["keep"], "discard": summary["discard"],
            "load_before": before, "load_after": load()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=30.0, help="MAX_WALLCLOCK_SECONDS of every run")
    parser.add_argument("--iterations", type=int, default=3, help="experiments per researcher")
    parser.add_argument("--max-seeds", type=int, default=2, help="runs of a candidate before a small gain is "
                        "given up (the loop's default is 5; fewer keeps the benchmark's length predictable)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    import ray

    from actors.tracker.actor import connect_tracker, stop_tracker

    namespace = f"bench-research-{os.getpid()}"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    arms = []
    with tempfile.TemporaryDirectory(prefix="bench-research-") as tmp:
        connect_tracker(Path(tmp) / "state.parquet", namespace=namespace)
        try:
            for k in (1, 2):
                arms.append(run_arm(k, args, Path(tmp), namespace))
        finally:
            stop_tracker(namespace=namespace)
    ray.shutdown()

    one, two = arms
    ratio = two["experiments_per_hour"] / one["experiments_per_hour"]
    runs_ratio = two["runs_per_hour"] / one["runs_per_hour"]
    print(f"AutoResearch K=1 vs K=2: golf template, MAX_WALLCLOCK_SECONDS={args.budget_s:g}, NUM_THREADS=1, "
          f"{args.iterations} experiments per researcher, --max-seeds {args.max_seeds}, offline proposer, "
          "local Ray with 2 CPUs")
    head = f"{'K':<3}{'wall s':>9}{'exps':>6}{'runs':>6}{'exps/h':>9}{'runs/h':>9}{'train s':>9}" \
           f"{'ovh s/run':>11}{'ovh %':>8}{'idle s':>8}{'best':>9}"
    print(head)
    for a in arms:
        print(f"{a['k']:<3}{a['wall_s']:>9.0f}{a['experiments']:>6}{a['runs']:>6}{a['experiments_per_hour']:>9.1f}"
              f"{a['runs_per_hour']:>9.1f}{a['mean_training_s']:>9.1f}{a['overhead_per_run_s']:>11.2f}"
              f"{a['overhead_share']:>8.1%}{a['idle_wait_s']:>8.0f}{a['best_val_bpb']:>9.4f}")
    print(f"K=2 / K=1: experiments/h x{ratio:.2f} (target >= 1.8: {'met' if ratio >= 1.8 else 'MISSED'}), "
          f"runs/h x{runs_ratio:.2f}")
    worst = max(a["overhead_share"] for a in arms)
    print(f"overhead outside the training process: {worst:.1%} of the run's time at worst "
          f"(target < 5%: {'met' if worst < 0.05 else 'MISSED'})")
    for a in arms:
        print(f"K={a['k']}: phase medians {json.dumps({k: round(v, 3) for k, v in a['phase_medians_s'].items()})}, "
              f"launch {a['launch_median_s']:.2f}s; load before: {a['load_before']}; after: {a['load_after']}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "research.json"
    out.write_text(json.dumps({"budget_s": args.budget_s, "iterations": args.iterations,
                               "max_seeds": args.max_seeds, "arms": arms,
                               "experiments_per_hour_ratio": ratio, "runs_per_hour_ratio": runs_ratio}, indent=2))
    print(f"wrote {out}")
    return 0 if ratio >= 1.8 and worst < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
