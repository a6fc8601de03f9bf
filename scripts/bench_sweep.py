"""Benchmark the sweep's searcher: seeded GP search against random search.

    python scripts/bench_sweep.py [--seeds 5] [--trials 16] [--batch-size 4] [--set key=value ...]
                                  [--out runs/bench_sweep]

Both searchers get the same trial budget on the default recipe (the training
engine's GPT on the byte corpus) at one shape (1 GPU, mapped to one CPU
thread), in a tiny-train mode (`BENCH_SETTINGS`, changeable with --set) so a
trial takes about a second. The GP searcher is exactly what a sweep uses:
OptunaSearch with Optuna's GPSampler (n_startup_trials=1), seeded at the
recipe's defaults, behind the same RoundLimiter (the defaults alone, then
rounds of --batch-size suggestions). Random search is OptunaSearch with
Optuna's RandomSampler over the same space, with no seed point. Trials run
here, in-process, without Tune: what is measured is the search, not the
scheduling.

For each seed (the searchers' seed; the training seed is fixed, so a point
always scores the same): the number of trials each searcher needs until its
best score reaches 99% of the best score either found with that seed. A
searcher that never gets there counts as budget + 1 (shown as ">N"). The target
is for the GP to need half the trials of random search or fewer (median ratio
<= 0.5). Prints a table and writes OUT/bench_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH_SETTINGS = ["d_model=32", "n_layers=2", "n_heads=2", "seq_len=32", "seqs_per_gpu=4", "steps=60",
                  "eval_interval=60", "eval_seqs=64", "max_bytes=500000"]


def make_objective(recipe, settings, space):
    from tune.recipes import Hardware

    hw = Hardware(1, 1, local=True, cpus=1)

    def objective(point: dict) -> float:
        hp = space.resolve(point)
        assert not space.check(hp)
        scores = []
        recipe.train(hp, settings, hw, lambda m: scores.append(recipe.evaluate(m, settings)))
        return scores[-1]

    return objective


def run_search(kind: str, space, objective, trials: int, batch_size: int, seed: int) -> list[float]:
    """Scores in the order the searcher proposed the points."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from tune.search import RoundLimiter, make_searcher

    if kind == "gp":
        searcher, _ = make_searcher(space, "gp", seed=seed)
        limiter = RoundLimiter(searcher, batch_size, first_round=1)
    else:
        searcher = OptunaSearch(space=space.optuna_space(), metric="score", mode="max",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
        limiter = RoundLimiter(searcher, batch_size, first_round=batch_size)
    scores: list[float] = []
    n = 0
    while n < trials:
        round_ids = []
        while n < trials:
            tid = f"t{n}"
            point = limiter.suggest(tid)
            if point is None:
                break
            round_ids.append((tid, point))
            n += 1
        for tid, point in round_ids:
            score = objective(point)
            scores.append(score)
            limiter.on_trial_complete(tid, {"score": score})
    return scores


def trials_to_reach(scores: list[float], threshold: float) -> int | None:
    best = float("-inf")
    for i, s in enumerate(scores, 1):
        best = max(best, s)
        if best >= threshold:
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/bench_sweep.py", description=__doc__.split("\n\n")[1])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=16, help="trial budget per search (default 16)")
    parser.add_argument("--batch-size", type=int, default=4, help="suggestions per round, as in a sweep (default 4)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe settings on top of the tiny-train mode")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_sweep"))
    args = parser.parse_args(argv)

    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)
    from tune.recipes import load_recipe

    recipe = load_recipe("tune.recipes.gpt:train")
    settings = recipe.with_overrides(BENCH_SETTINGS + args.overrides)
    space = recipe.space(1, 1, settings)
    objective = make_objective(recipe, settings, space)

    rows = []
    t_start = time.time()
    for seed in range(args.seeds):
        runs = {}
        for kind in ("gp", "random"):
            t0 = time.time()
            runs[kind] = (run_search(kind, space, objective, args.trials, args.batch_size, seed), time.time() - t0)
        best = max(max(s) for s, _ in runs.values())
        threshold = 0.99 * best
        row = {"seed": seed, "best": best, "threshold": threshold}
        for kind, (scores, wall) in runs.items():
            row[kind] = {"trials_to_99": trials_to_reach(scores, threshold), "best": max(scores), "scores": scores,
                         "wall_s": wall}
        rows.append(row)
        print(f"seed {seed}: best {best:.4f}; GP {_n(row['gp']['trials_to_99'], args.trials)} trials, "
              f"random {_n(row['random']['trials_to_99'], args.trials)} trials", flush=True)

    def counted(kind):
        return [r[kind]["trials_to_99"] or args.trials + 1 for r in rows]

    gp, rnd = counted("gp"), counted("random")
    ratios = [g / r for g, r in zip(gp, rnd)]
    summary = {
        "median_trials_gp": statistics.median(gp), "median_trials_random": statistics.median(rnd),
        "mean_trials_gp": statistics.mean(gp), "mean_trials_random": statistics.mean(rnd),
        "median_ratio": statistics.median(ratios),
        "ratio_of_medians": statistics.median(gp) / statistics.median(rnd),
        "target": "GP needs <= 0.5 x the trials of random search",
    }
    summary["met"] = summary["ratio_of_medians"] <= 0.5
    print()
    print(f"trials to reach 99% of the best score found by either (budget {args.trials}, rounds of "
          f"{args.batch_size}; >N: not reached)")
    print(f"| seed | best score | GP (seeded) | random | GP best | random best |")
    print(f"|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['best']:.4f} | {_n(r['gp']['trials_to_99'], args.trials)} | "
              f"{_n(r['random']['trials_to_99'], args.trials)} | {r['gp']['best']:.4f} | {r['random']['best']:.4f} |")
    print(f"| median | | {summary['median_trials_gp']:g} | {summary['median_trials_random']:g} | | |")
    print(f"| mean | | {summary['mean_trials_gp']:.1f} | {summary['mean_trials_random']:.1f} | | |")
    print()
    print(f"GP / random (ratio of medians): {summary['ratio_of_medians']:.2f}; median per-seed ratio "
          f"{summary['median_ratio']:.2f}; target <= 0.5: {'met' if summary['met'] else 'NOT met'}")
    print(f"wall time {time.time() - t_start:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_sweep.json"
    path.write_text(json.dumps({"settings": settings, "trials": args.trials, "batch_size": args.batch_size,
                                "seeds": args.seeds, "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {path}")
    return 0


def _n(v: int | None, budget: int) -> str:
    return f">{budget}" if v is None else str(v)


if __name__ == "__main__":
    sys.exit(main())
