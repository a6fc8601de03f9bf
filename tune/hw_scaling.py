"""Hardware-scaling sweeps on Ray Tune, and their analysis.

    python -m tune.hw_scaling --gpu-counts 1 2 4 8 --node-counts 1 2 --max-trials 50 \\
        --batch-size 4 --max-parallel-jobs 4 [--recipe MODULE:FUNCTION] [--local] [--resume] \\
        [--set key=value ...] [--wandb-project P] [--sequential] [--pareto] [--out DIR] [--storage URI]
    python -m tune.hw_scaling analyze DIR [--target-performance 0.9]

For each hardware shape (g GPUs per node x n nodes) one Tune experiment,
`hs_g{g}n{n}`, searches the recipe's hyperparameters with Optuna's GP sampler
through OptunaSearch (TPE with --sampler tpe, or where GPSampler is missing):

- the first round is the recipe's defaults alone (`points_to_evaluate`); the
  GP models the results from the first completed trial on (n_startup_trials=1),
  so there is no random warm-up beyond that point. Later rounds draw
  --batch-size suggestions each, once every trial of the round before has
  finished; at most --max-parallel-jobs trials run at once;
- --pareto optimises score (max) and cost (min) together, Optuna keeping the
  Pareto front (log-EHVI in the GP sampler);
- the space has the hardware built in (tune.space): batch = min_batch * 2**k
  with min_batch = the recipe's per-GPU unit * g * n, minibatch = batch >> s
  with s bounded so it always divides the batch;
- each trial reserves the shape it measures: a placement group with one bundle
  of g GPUs per node and STRICT_SPREAD (so n distinct nodes), in which the
  recipe starts one DDP worker per GPU. With --local the shape maps to CPU:
  one trial process holding min(g * n, CPUs in the cluster) CPUs and training
  with that many threads on the same global batch (or, with --local-workers,
  g * n gloo DDP workers sharing those CPUs).

Every trial reports score, samples, time, GPU-hours and cost at each
evaluation, and samples/time/GPU-hours/cost to the recipe's target score. Tune
writes CSV, JSON and TensorBoard logs of every trial; --wandb-project adds W&B
(offline without WANDB_API_KEY). When the sweeps end, DIR/report.md,
DIR/hardware_scaling.csv and the plots are written (analysis.hardware).
--resume continues interrupted experiments with Tuner.restore; finished trials
are not run again. --storage URI (or $RAY_AUTORESEARCH_STORAGE) keeps Tune's
state where every node reaches it (s3://, gs://, a shared folder), so a sweep
resumes even when the node that drove it is gone.

This module is the command line; tune.sweep runs the sweeps, tune.search holds
the searcher and its rounds, tune.trial the trial and its resources.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from train.spec import format_validation_error
from train.storage import StorageError
from tune.recipes import DEFAULT_RECIPE, RecipeError
from tune.sweep import (
    DEFAULT_OUT,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    SweepConfig,
    UserError,
    analyze,
    run_sweeps,
)

# The fields of SweepConfig whose flag is not --field-name.
_FLAGS = {"overrides": "--set", "analyze": "--no-analyze"}


def _flag(loc: tuple) -> str:
    """The command-line flag behind a SweepConfig field, for error messages."""
    field = str(loc[0]) if loc else ""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def _default_settings() -> dict:
    from tune.recipes.gpt import SETTINGS

    return SETTINGS


def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tune.hw_scaling",
        description="Hardware-scaling sweeps on Ray Tune: for each GPUs-per-node x nodes shape, a Bayesian "
        "hyperparameter sweep (Optuna GP via OptunaSearch, seeded at the recipe's defaults) whose trials reserve "
        "that shape; then power-law fits of samples, time and cost to a target score against the number of GPUs, "
        "and a recommended shape per priority. `python -m tune.hw_scaling analyze DIR` redoes the report from "
        "results on disk.",
        epilog="settings of the default recipe (--set): "
        + " ".join(f"{k}={v}" for k, v in _default_settings().items())
        + ". Example (a laptop): python -m tune.hw_scaling --local --gpu-counts 1 2 --node-counts 1 --max-trials 4",
    )
    p.add_argument("--gpu-counts", type=int, nargs="+", default=[1, 2, 4, 8], metavar="G",
                   help="GPUs per node to sweep (default 1 2 4 8; over 8 is skipped)")
    p.add_argument("--node-counts", type=int, nargs="+", default=[1], metavar="N", help="nodes to sweep (default 1)")
    p.add_argument("--max-trials", type=int, default=50, help="trials per shape (default 50)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="suggestions drawn per round; a round starts when the one before has finished (default 4)")
    p.add_argument("--max-parallel-jobs", type=int, default=4, help="trials running at once per shape (default 4)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, metavar="MODULE:FUNCTION",
                   help=f"the train function of a recipe module that also has evaluate() and HYPERPARAMS "
                        f"(default {DEFAULT_RECIPE}: the engine's GPT on the byte corpus)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a recipe setting, e.g. --set steps=40 --set d_model=32 (repeatable)")
    p.add_argument("--local", action="store_true",
                   help="map each shape onto CPU: one trial process with min(g*n, cluster CPUs) CPUs")
    p.add_argument("--local-workers", action="store_true",
                   help="with --local: train each trial on g*n gloo DDP worker processes (the cluster code path)")
    p.add_argument("--resume", action="store_true", help="continue interrupted sweeps under --out (Tuner.restore)")
    p.add_argument("--wandb-project", default=None, help="also log trials to W&B (offline without WANDB_API_KEY)")
    p.add_argument("--sequential", action="store_true",
                   help="one trial at a time, each suggestion seeing every earlier result "
                        "(--batch-size 1 --max-parallel-jobs 1)")
    p.add_argument("--pareto", action="store_true", help="optimise score (max) and cost (min) together")
    p.add_argument("--sampler", choices=("gp", "tpe"), default="gp", help="Optuna sampler (default gp)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--cpus-per-gpu", type=float, default=1.0, help="CPUs reserved with each GPU (default 1)")
    p.add_argument("--usd-per-gpu-hour", type=float, default=2.0, help="price for the cost metric (default 2.0)")
    p.add_argument("--target-performance", type=float, default=0.9,
                   help="report: the target is this fraction of the best score reached (default 0.9)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results, report and plots (default {DEFAULT_OUT})")
    p.add_argument("--storage", default=None, metavar="URI",
                   help="where Tune keeps the sweeps' state, reachable from every node: s3://BUCKET/PREFIX, "
                        "gs://BUCKET/PREFIX or a shared folder (default: $RAY_AUTORESEARCH_STORAGE, else --out)")
    p.add_argument("--no-analyze", dest="analyze", action="store_false",
                   help="skip the report (scripts/launch_hw_sweeps.py writes it once all shapes are done)")
    return p


def _analyze_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tune.hw_scaling analyze",
        description="Rewrite the hardware-scaling report (report.md, hardware_scaling.csv, trials.csv, "
        "scaling.png, fom.png) from the hs_g*n* Tune results under DIR.",
    )
    p.add_argument("dir", type=Path, help="the --out of the sweeps")
    p.add_argument("--target-performance", type=float, default=0.9,
                   help="the target is this fraction of the best score reached (default 0.9)")
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default DIR)")
    p.add_argument("--wandb-project", default=None, help="also read this W&B project's runs (online only)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from analysis.hardware import NoResults

    try:
        if argv[:1] == ["analyze"]:
            args = _analyze_parser().parse_args(argv[1:])
            if not 0 < args.target_performance <= 1:
                raise UserError(f"--target-performance: must be in (0, 1], got {args.target_performance}")
            analyze(args.dir, args.target_performance, out_dir=args.out, wandb_project=args.wandb_project)
            return 0
        args = _sweep_parser().parse_args(argv)
        try:
            cfg = SweepConfig(**vars(args))
        except ValidationError as exc:
            raise UserError(format_validation_error(exc, where=_flag)) from None
        return run_sweeps(cfg)
    except (UserError, RecipeError, NoResults, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
