"""Benchmark the AutoResearch loop's overhead per experiment.

Everything an iteration does outside the training run itself (propose and
validate, commit, launch the Ray task, save and parse the log, decide, tag or
reset, write results.tsv and notes.md), as a share of the run budget. Target:
under 5% at a 5-minute budget (Parameter Golf's runs are 10 minutes; autoresearch's 5).

The overhead does not depend on how long the training runs, so the training
here is the golf template cut to a few seconds; the share is then computed for
the budget asked for. The offline proposer is used: with Claude, the propose
phase adds the API latency (typically 10-60 s for a diff of a 10 kB file), which
this machine cannot measure.

    python scripts/bench_autoresearch.py [--iterations 5] [--budget-s 300] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("propose_s", "commit_s", "launch_s", "save_parse_s", "record_s")


class PhaseTimer:
    """The loop's `on_phase` hook: one row of phase times per experiment (its extra
    seeded runs, if any, added in)."""

    def __init__(self):
        self.by_n: dict[int, dict] = {}

    def __call__(self, n: int, phase: str, seconds: float, details: dict) -> None:
        row = self.by_n.setdefault(n, {"n": n, **{p: 0.0 for p in PHASES}, "training_s": 0.0, "run_wall_s": 0.0})
        if phase == "run":  # split the run's wall time: training, launch (Ray), saving and parsing the log
            row["training_s"] += details["training_s"]
            row["run_wall_s"] += seconds
            row["launch_s"] += max(0.0, details["run_wall_s"] - details["training_s"])
            row["save_parse_s"] += max(0.0, seconds - details["run_wall_s"])
        elif f"{phase}_s" in row:
            row[f"{phase}_s"] += seconds

    @property
    def rows(self) -> list[dict]:
        return [self.by_n[n] for n in sorted(self.by_n) if n > 0 and self.by_n[n]["record_s"] > 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=300.0, help="the run budget the share is taken of")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args()

    import ray

    from actors.research.config import ResearchConfig
    from actors.research.loop import AutoResearch
    from tests.support import make_golf_repo

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_golf_repo(Path(tmp) / "repo")
        timer = PhaseTimer()
        loop = AutoResearch(ResearchConfig(repo=Path(repo.working_tree_dir), tag="bench", offline=True, rescore=""),
                            on_phase=timer)
        t0 = time.time()
        loop.run(args.iterations)
        total = time.time() - t0
    ray.shutdown()

    rows = timer.rows
    med = {p: statistics.median(r[p] for r in rows) for p in PHASES + ("training_s", "run_wall_s")}
    overhead = [sum(r[p] for p in PHASES) for r in rows]
    per_iter = statistics.median(overhead)
    share = per_iter / args.budget_s

    print(f"AutoResearch overhead per experiment ({len(rows)} experiments, offline proposer, local Ray, "
          f"golf template cut to ~{med['training_s']:.1f}s of training)")
    print(f"{'phase':<26}{'median s':>10}{'max s':>10}")
    for p in PHASES:
        print(f"{p:<26}{med[p]:>10.3f}{max(r[p] for r in rows):>10.3f}")
    print(f"{'overhead total':<26}{per_iter:>10.3f}{max(overhead):>10.3f}")
    print(f"{'(training process)':<26}{med['training_s']:>10.3f}")
    print(f"share of a {args.budget_s:.0f}s run budget: {share:.2%}  (target < 5%: "
          f"{'met' if share < 0.05 else 'MISSED'})")
    print(f"whole run incl. the baseline seeds: {total:.1f}s")

    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "autoresearch.json"
    out.write_text(json.dumps({"timings": rows, "median": med, "overhead_s": per_iter, "budget_s": args.budget_s,
                               "share": share, "total_s": total}, indent=2))
    print(f"wrote {out}")
    return 0 if share < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
