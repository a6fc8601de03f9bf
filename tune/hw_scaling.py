"""Hardware-scaling sweeps on Ray Tune, and their analysis.

    python -m tune.hw_scaling --gpu-counts 1 2 4 8 --node-counts 1 2 --max-trials 50 \\
        --batch-size 4 --max-parallel-jobs 4 [--recipe MODULE:FUNCTION] [--local] [--resume] \\
        [--set key=value ...] [--wandb-project P] [--sequential] [--pareto] [--out DIR]
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
are not run again.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tune.recipes import DEFAULT_RECIPE, Hardware, RecipeError, load_recipe
from tune.space import MAX_GPUS_PER_NODE, HardwareSpace

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("runs/hw_scaling")
METRIC = "score"
EXIT_USER_ERROR, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class UserError(ValueError):
    """Something the user asked for cannot be done; the message says what and why."""


# -- configuration ------------------------------------------------------------------


class SweepConfig(BaseModel):
    """What the command line asks for, validated on construction."""

    model_config = ConfigDict(extra="forbid")

    gpu_counts: list[int] = Field(min_length=1)
    node_counts: list[int] = Field(min_length=1)
    max_trials: int = Field(50, ge=1, le=10_000)
    batch_size: int = Field(4, ge=1, le=1024, description="suggestions drawn per round")
    max_parallel_jobs: int = Field(4, ge=1, le=1024)
    recipe: str = DEFAULT_RECIPE
    overrides: list[str] = Field(default_factory=list)
    local: bool = False
    local_workers: bool = False
    resume: bool = False
    wandb_project: str | None = None
    sequential: bool = False
    pareto: bool = False
    sampler: Literal["gp", "tpe"] = "gp"
    seed: int = Field(0, ge=0)
    cpus_per_gpu: float = Field(1.0, gt=0)
    usd_per_gpu_hour: float = Field(2.0, ge=0)
    target_performance: float = Field(0.9, gt=0, le=1)
    out: Path = DEFAULT_OUT
    analyze: bool = True

    @field_validator("gpu_counts", "node_counts")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x < 1]
        if bad:
            raise ValueError(f"{bad[0]} is not a count of hardware; every count must be at least 1")
        return sorted(set(v))

    @property
    def round_size(self) -> int:
        return 1 if self.sequential else self.batch_size

    @property
    def parallel(self) -> int:
        return 1 if self.sequential else self.max_parallel_jobs


def _format_validation_error(exc: ValidationError) -> str:
    from train.spec import format_validation_error

    flags = {"gpu_counts": "--gpu-counts", "node_counts": "--node-counts", "max_trials": "--max-trials",
             "batch_size": "--batch-size", "max_parallel_jobs": "--max-parallel-jobs",
             "target_performance": "--target-performance", "cpus_per_gpu": "--cpus-per-gpu",
             "usd_per_gpu_hour": "--usd-per-gpu-hour", "seed": "--seed"}
    text = format_validation_error(exc)
    for field, flag in flags.items():
        text = text.replace(f"{field}.", f"{flag} ").replace(f"{field}:", f"{flag}:")
    return text


# -- the searcher ---------------------------------------------------------------------


def make_sampler(kind: str, seed: int):
    """Optuna's GP sampler with no random start beyond the seeded default point
    (n_startup_trials=1: the default is that first trial), or TPE."""
    import optuna

    if kind == "gp":
        try:
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=1), "gp"
        except (AttributeError, ImportError) as exc:  # optuna < 3.6, or no torch
            logger.warning("GPSampler unavailable (%s): falling back to TPE", exc)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=1, multivariate=True,
                                      constant_liar=True), "tpe"


def make_searcher(space: HardwareSpace, kind: str = "gp", seed: int = 0, pareto: bool = False):
    """OptunaSearch over the hardware space, seeded at the recipe's defaults."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler, used = make_sampler(kind, seed)  # both handle one objective and several
    metric, mode = (["score", "cost"], ["max", "min"]) if pareto else (METRIC, "max")
    searcher = OptunaSearch(space=space.optuna_space(), metric=metric, mode=mode,
                            points_to_evaluate=[space.default_point()], sampler=sampler)
    return searcher, used


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class RoundLimiter(_searcher_base()):
    """Suggestions in rounds: the first round is the seed point alone, each later
    one `batch_size` suggestions; a round starts once every trial of the one
    before has finished, so each round's suggestions see all earlier results.
    (How many of them run at once is Tune's max_concurrent_trials.)"""

    def __init__(self, searcher, batch_size: int, first_round: int = 1):
        self.searcher = searcher
        self.batch_size = batch_size
        self.first_round = first_round
        self.round = 0
        self.drawn: set[str] = set()
        self.finished: set[str] = set()
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        size = self.first_round if self.round == 0 else self.batch_size
        if len(self.drawn) >= size:
            if not self.drawn <= self.finished:
                return None  # wait for the round to finish
            self.round += 1
            self.drawn, self.finished = set(), set()
        suggestion = self.searcher.suggest(trial_id)
        if suggestion is not None and suggestion != self.FINISHED:
            self.drawn.add(trial_id)
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)
        if trial_id in self.drawn:
            self.finished.add(trial_id)

    # Tune saves a wrapper's own state with get_state/set_state and the wrapped
    # OptunaSearch (the study) with its save/restore.
    def get_state(self) -> dict:
        return {"round": self.round, "drawn": set(self.drawn), "finished": set(self.finished),
                "batch_size": self.batch_size, "first_round": self.first_round}

    def set_state(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# -- the trial ------------------------------------------------------------------------


class _TargetTracker:
    """Turns each evaluation into the trial's report: the running GPU-hours and
    cost of the shape, and where the target score was first reached."""

    def __init__(self, target: float | None, gpus: int, usd_per_gpu_hour: float):
        self.target, self.gpus, self.usd = target, gpus, usd_per_gpu_hour
        self.prev: dict | None = None
        self.best = -math.inf
        self.hit: dict | None = None

    def update(self, samples: float, time_s: float, score: float) -> dict[str, float]:
        from analysis.hardware import crossing

        gpu_hours = self.gpus * time_s / 3600
        point = {"score": score, "samples": float(samples), "time_s": float(time_s), "gpu_hours": gpu_hours,
                 "cost": gpu_hours * self.usd}
        self.best = max(self.best, score)
        if self.hit is None and self.target is not None:
            self.hit = crossing([self.prev, point] if self.prev else [point], self.target)
        self.prev = point
        hit = self.hit or {}
        nan = float("nan")
        return {
            **point,
            "best_score": self.best,
            "reached_target": 1.0 if self.hit else 0.0,
            "samples_to_target": hit.get("samples", nan),
            "time_to_target": hit.get("time_s", nan),
            "gpu_hours_to_target": hit.get("gpu_hours", nan),
            "cost_to_target": hit.get("cost", nan),
        }


def hw_trial(config: dict) -> None:
    """The Tune function trainable: one trial of one hardware shape."""
    from ray import tune

    recipe = load_recipe(config["recipe"])
    settings = config["settings"]
    hw = Hardware(**config["hardware"])
    space = recipe.space(hw.gpus_per_node, hw.nodes, settings)
    hp = space.resolve({name: config[name] for name in space.names})
    problems = space.check(hp)
    if problems:  # cannot happen for a point of the space; refuse rather than measure the wrong thing
        raise ValueError("; ".join(problems))
    tracker = _TargetTracker(settings.get("target_score"), hw.total_gpus, hw.usd_per_gpu_hour)
    fixed = {"started_at": time.time(), "batch_size": hp["batch_size"], "minibatch_size": hp["minibatch_size"],
             "total_gpus": hw.total_gpus, "gpus_per_node": hw.gpus_per_node, "nodes": hw.nodes,
             "target_score": settings.get("target_score") if settings.get("target_score") is not None else math.nan}

    # Each report goes to Tune when the next one arrives, so that the last one
    # can say `finished`: result.json then tells a finished trial from one that
    # was cut short, with no extra row.
    held: list[dict] = []

    def report(metrics: dict) -> None:
        score = float(recipe.evaluate(metrics, settings))
        extra = {k: v for k, v in metrics.items()
                 if k not in ("samples", "time_s") and (isinstance(v, (int, float, str)) and not isinstance(v, bool))}
        if held:
            tune.report(held.pop())
        held.append({**extra, **tracker.update(metrics["samples"], metrics["time_s"], score), **fixed,
                     "finished": 0.0})

    recipe.train(hp, settings, hw, report)
    if not held:
        raise RuntimeError(f"recipe {recipe.name} reported no evaluation")
    tune.report({**held.pop(), "finished": 1.0})


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def trial_resources(hw: Hardware):
    """What one trial reserves: the shape it measures."""
    from ray.tune import PlacementGroupFactory

    if not hw.local:
        bundle = {"GPU": hw.gpus_per_node, "CPU": hw.gpus_per_node * hw.cpus_per_gpu}
        return PlacementGroupFactory([{}] + [bundle] * hw.nodes, strategy="STRICT_SPREAD")
    if hw.mode == "workers":
        return PlacementGroupFactory([{}, {"CPU": hw.cpus}], strategy="PACK")
    return PlacementGroupFactory([{"CPU": hw.cpus}])


def _progress_callback_class():
    from ray.tune import Callback

    class Progress(Callback):
        """One line per trial start and end (Tune's own table is off)."""

        def __init__(self, name: str, max_trials: int, names: tuple[str, ...]):
            self.name, self.max_trials, self.names = name, max_trials, names

        def _params(self, trial) -> str:
            parts = []
            for k in self.names:
                v = trial.config.get(k)
                parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
            return " ".join(parts)

        def on_trial_start(self, iteration, trials, trial, **info):
            print(f"[{self.name}] trial {trial.trial_id} started: {self._params(trial)}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            done = sum(1 for t in trials if t.status == "TERMINATED") + 1
            to_target = r.get("samples_to_target", math.nan)
            print(f"[{self.name}] trial {trial.trial_id} finished ({min(done, self.max_trials)}/{self.max_trials}): "
                  f"score {r.get('score', math.nan):.4f}, batch {r.get('batch_size')}, "
                  f"minibatch {r.get('minibatch_size')}, {r.get('time_s', math.nan):.1f} s, "
                  f"cost ${r.get('cost', math.nan):.4f}, samples to target "
                  f"{'not reached' if to_target != to_target else f'{to_target:,.0f}'}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"[{self.name}] trial {trial.trial_id} failed: {trial.error_file or 'see the Ray logs'}",
                  file=sys.stderr, flush=True)

    return Progress


# -- planning -----------------------------------------------------------------------


def plan_pairs(cfg: SweepConfig, nodes_resources: list[dict[str, float]]) -> tuple[list[tuple[int, int]], list[str]]:
    """The (g, n) pairs to sweep, and a message for each one skipped.
    `nodes_resources`: the resources of each alive node of the cluster."""
    pairs, skipped = [], []
    for n in cfg.node_counts:
        for g in cfg.gpu_counts:
            if g > MAX_GPUS_PER_NODE:
                skipped.append(f"skipping hs_g{g}n{n}: {g} GPUs per node is more than the {MAX_GPUS_PER_NODE} "
                               "a node has")
                continue
            if not cfg.local:
                fits = [r for r in nodes_resources
                        if r.get("GPU", 0) >= g and r.get("CPU", 0) >= g * cfg.cpus_per_gpu]
                if len(fits) < n:
                    have = sorted((int(r.get("GPU", 0)) for r in nodes_resources), reverse=True)
                    skipped.append(
                        f"skipping hs_g{g}n{n}: needs {g} GPU(s) and {g * cfg.cpus_per_gpu:g} CPU(s) on each of {n} "
                        f"node(s); this cluster's nodes have {have or 'no'} GPUs"
                        + ("" if any(have) else " (use --local to map the shapes onto CPU workers)")
                    )
                    continue
            pairs.append((g, n))
    return pairs, skipped


def hardware_for(cfg: SweepConfig, g: int, n: int, cluster_cpus: float) -> tuple[Hardware, str]:
    """The trial shape of (g, n), and how it maps onto this cluster in words."""
    total = g * n
    if not cfg.local:
        hw = Hardware(g, n, local=False, cpus_per_gpu=cfg.cpus_per_gpu, usd_per_gpu_hour=cfg.usd_per_gpu_hour)
        return hw, (f"{g} GPU(s) on each of {n} node(s) (placement group, STRICT_SPREAD), one DDP worker per GPU")
    cpus = float(max(1, min(total, int(cluster_cpus))))
    mode = "workers" if cfg.local_workers else "inprocess"
    hw = Hardware(g, n, local=True, cpus=cpus, mode=mode, usd_per_gpu_hour=cfg.usd_per_gpu_hour)
    how = (f"{total} gloo DDP worker process(es) sharing {cpus:g} CPU(s)" if mode == "workers"
           else f"one trial process with {cpus:g} CPU thread(s)")
    return hw, (f"--local: {g} GPU(s) x {n} node(s) -> {how} (min(g*n = {total}, {cluster_cpus:g} CPUs in the "
                f"cluster)); batches as for {total} GPUs; GPU-hours and cost count {total} nominal GPU(s)")


def _meta(cfg: SweepConfig, recipe_name: str, settings: dict, space: HardwareSpace, hw: Hardware,
          mapping: str, sampler: str) -> dict[str, Any]:
    return {
        "gpus_per_node": hw.gpus_per_node, "nodes": hw.nodes, "total_gpus": hw.total_gpus,
        "local": hw.local, "mode": hw.mode if hw.local else "cluster", "mapping": mapping,
        "recipe": recipe_name, "settings": settings, "max_trials": cfg.max_trials,
        "batch_size": cfg.round_size, "max_parallel_jobs": cfg.parallel, "pareto": cfg.pareto,
        "sampler": sampler, "seed": cfg.seed, "usd_per_gpu_hour": cfg.usd_per_gpu_hour,
        "min_batch": space.min_batch, "batch_exponents": [0, space.max_exponent],
        "minibatch_shifts": [0, space.unit.max_shift], "default_point": space.default_point(),
    }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


# -- running ------------------------------------------------------------------------


def run_pair(cfg: SweepConfig, recipe, settings: dict, g: int, n: int, cluster_cpus: float) -> dict[str, Any]:
    """Run (or resume) the sweep of one shape. Returns a summary with
    `interrupted`, `finished`, `errored` and the best result."""
    from ray import tune

    name = f"hs_g{g}n{n}"
    out = cfg.out.resolve()
    exp_dir = out / name
    space = recipe.space(g, n, settings)
    hw, mapping = hardware_for(cfg, g, n, cluster_cpus)
    searcher, sampler = make_searcher(space, cfg.sampler, cfg.seed, cfg.pareto)
    meta = _meta(cfg, recipe.name, settings, space, hw, mapping, sampler)
    trainable = tune.with_resources(hw_trial, trial_resources(hw))
    print(f"[{name}] {mapping}", flush=True)
    print(f"[{name}] min batch {space.min_batch} samples; batch = min_batch * 2^k, k in [0, {space.max_exponent}]; "
          f"minibatch = batch >> s, s in [0, {space.unit.max_shift}]; {cfg.max_trials} trials, rounds of "
          f"{cfg.round_size}, {cfg.parallel} at once; sampler {sampler}"
          + (", Pareto: score max / cost min" if cfg.pareto else ""), flush=True)

    created = False
    if cfg.resume and tune.Tuner.can_restore(str(exp_dir)):
        print(f"[{name}] resuming {exp_dir}", flush=True)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        created = not exp_dir.exists()
        exp_dir.mkdir(parents=True, exist_ok=True)
        _write_json(exp_dir / "hw_meta.json", meta)
        callbacks: list = [_progress_callback_class()(name, cfg.max_trials, space.names)]
        if cfg.wandb_project:
            callbacks.append(_wandb_callback(cfg.wandb_project, out))
        tuner = tune.Tuner(
            trainable,
            param_space={"recipe": recipe.name, "settings": settings, "hardware": asdict(hw)},
            tune_config=tune.TuneConfig(
                search_alg=RoundLimiter(searcher, cfg.round_size, first_round=1),
                num_samples=cfg.max_trials,
                max_concurrent_trials=cfg.parallel,
                # Trials of one shape ask for the same resources: keeping their
                # processes saves a Python + torch start per trial.
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
                trial_name_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(name=name, storage_path=str(out), callbacks=callbacks, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    t0 = time.time()
    watch = _InterruptWatch()
    try:
        grid = tuner.fit()
    except Exception:
        if created and not any(p.is_dir() for p in exp_dir.iterdir()):
            shutil.rmtree(exp_dir, ignore_errors=True)  # no half-written experiment left behind
        raise
    finally:
        stopped = watch.done()
    finished = sum(1 for r in grid if r.error is None and (r.metrics.get("finished") or r.metrics.get("done")))
    errored = [r for r in grid if r.error is not None]
    best = None
    ok = [r for r in grid if r.error is None and r.metrics.get(METRIC) is not None]
    if ok:
        best = max(ok, key=lambda r: r.metrics[METRIC])
    summary = {"name": name, "finished": finished, "errored": len(errored),
               "interrupted": stopped or finished + len(errored) < cfg.max_trials, "wall_s": time.time() - t0,
               "best": None if best is None else {k: best.metrics.get(k) for k in (
                   "score", "batch_size", "minibatch_size", "samples_to_target", "time_to_target", "cost")},
               "best_config": None if best is None else {k: best.config.get(k) for k in space.names},
               "first_error": _last_line(errored[0].error) if errored else None}
    _write_json(exp_dir / "summary.json", summary)
    state = "interrupted" if summary["interrupted"] else "done"
    best_text = "no result" if best is None else (
        f"best score {best.metrics['score']:.4f} at " + " ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary["best_config"].items()))
    print(f"[{name}] {state}: {finished}/{cfg.max_trials} trials finished, {len(errored)} failed, "
          f"{summary['wall_s']:.0f} s; {best_text}", flush=True)
    return summary


def _last_line(error) -> str:
    """The exception's own message, the last line of Ray's wrapped traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else repr(error)


class _InterruptWatch:
    """Whether Ctrl+C (SIGINT) stopped a `Tuner.fit`. Tune replaces the SIGINT
    handler during fit and, on the first signal, stops the experiment and puts
    back the handler it found, which is this one; so finding this handler in
    place afterwards means a signal came. The previous handler is restored."""

    def __init__(self):
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self)
        self.hit = False

    def __call__(self, signum, frame):  # a signal Tune did not catch
        self.hit = True
        raise KeyboardInterrupt

    def done(self) -> bool:
        if not self.active:
            return False
        tune_catches = not int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0"))
        stopped = self.hit or (tune_catches and signal.getsignal(signal.SIGINT) is self)
        signal.signal(signal.SIGINT, self.previous)
        return stopped


def _wandb_env() -> None:
    """Offline W&B without an API key (no key lookup, no prompt); a restored
    experiment's W&B callback needs this as much as a new one."""
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")


def _wandb_callback(project: str, out: Path):
    """W&B through Tune's callback: online with WANDB_API_KEY, offline without
    (and whatever WANDB_MODE says, e.g. disabled in tests)."""
    _wandb_env()
    mode = os.environ.get("WANDB_MODE", "online")
    return __getattr__("QuietWandbLoggerCallback")(project=project, mode=mode, dir=str(out))


def __getattr__(name: str):
    # Built on first use (importing wandb is slow) yet found by pickle, which
    # stores the sweep's callbacks in the experiment for Tuner.restore.
    if name == "QuietWandbLoggerCallback":
        from ray.air.integrations.wandb import WandbLoggerCallback

        class QuietWandbLoggerCallback(WandbLoggerCallback):
            """Tune keeps its callbacks to the end of the process, when this
            one's __del__ runs after Ray's module is torn down and prints a
            traceback; there is nothing left to clean up by then."""

            def __del__(self):
                try:
                    super().__del__()
                except Exception:
                    pass

        QuietWandbLoggerCallback.__module__ = __name__
        globals()[name] = QuietWandbLoggerCallback
        return QuietWandbLoggerCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_resume(cfg: SweepConfig, pairs: list[tuple[int, int]], recipe_name: str, settings: dict) -> None:
    """Refuse to write over an earlier sweep, or to resume one with other settings."""
    for g, n in pairs:
        exp_dir = cfg.out / f"hs_g{g}n{n}"
        if not exp_dir.exists() or not any(exp_dir.iterdir()):
            continue
        if not cfg.resume:
            raise UserError(f"{exp_dir} already holds a sweep; pass --resume to continue it, or choose another --out")
        meta_path = exp_dir / "hw_meta.json"
        if meta_path.is_file():
            old = json.loads(meta_path.read_text())
            now = {"recipe": recipe_name, "settings": settings, "max_trials": cfg.max_trials,
                   "batch_size": cfg.round_size, "max_parallel_jobs": cfg.parallel, "pareto": cfg.pareto,
                   "seed": cfg.seed, "local": cfg.local,
                   "mode": ("workers" if cfg.local_workers else "inprocess") if cfg.local else "cluster",
                   "usd_per_gpu_hour": cfg.usd_per_gpu_hour}
            diff = [k for k in now if k in old and old[k] != now[k]]
            if diff:
                shown = "; ".join(f"{k}: was {old[k]!r}, now {now[k]!r}" for k in diff)
                raise UserError(f"{exp_dir} was started with other settings ({shown}); resume with the same "
                                "arguments, or choose another --out")


def run_sweeps(cfg: SweepConfig) -> int:
    """Everything `python -m tune.hw_scaling` does after parsing. Returns the exit code."""
    import ray

    from train.ray_session import init_ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables, our lines only
    _wandb_env()
    recipe = load_recipe(cfg.recipe)
    settings = recipe.with_overrides(cfg.overrides)
    for g in cfg.gpu_counts:  # the space of every shape must build before anything starts
        for n in cfg.node_counts:
            if g <= MAX_GPUS_PER_NODE:
                try:
                    recipe.space(g, n, settings)
                except ValueError as exc:
                    raise RecipeError(f"recipe {recipe.name}: {exc}") from None
    if cfg.local_workers and not cfg.local:
        raise UserError("--local-workers only goes with --local")

    init_ray(log_to_driver=False)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    pairs, skipped = plan_pairs(cfg, nodes)
    for line in skipped:
        print(line, flush=True)
    if not pairs:
        raise UserError("no hardware shape to sweep: every --gpu-counts x --node-counts pair was skipped")
    check_resume(cfg, pairs, recipe.name, settings)
    print(f"sweeping {len(pairs)} shape(s): {', '.join(f'hs_g{g}n{n}' for g, n in pairs)}; recipe {recipe.name}; "
          f"results under {cfg.out}", flush=True)

    summaries = []
    for g, n in pairs:
        summary = run_pair(cfg, recipe, settings, g, n, cluster_cpus)
        summaries.append(summary)
        if summary["interrupted"]:
            print(f"interrupted: rerun the same command with --resume to continue (results so far in {cfg.out})",
                  file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
    if not cfg.analyze:
        return 0
    if all(s["finished"] == 0 for s in summaries):
        first = next((s["first_error"] for s in summaries if s["first_error"]), "no trial finished")
        print(f"error: every trial failed; the first error: {first}", file=sys.stderr)
        return EXIT_FAILED
    analyze(cfg.out, cfg.target_performance, wandb_project=cfg.wandb_project)
    return 0


def analyze(results_dir: Path, target_performance: float = 0.9, out_dir: Path | None = None,
            wandb_project: str | None = None):
    """Read the sweeps' results, write the report, print the recommendations."""
    from analysis.hardware import PRIORITY_NOTES, HardwareScalingAnalyzer

    analyzer = HardwareScalingAnalyzer(target_performance=target_performance)
    analyzer.load_tune_results(results_dir)
    if wandb_project:
        added = analyzer.load_wandb(wandb_project)
        if added:
            print(f"added {added} run(s) from W&B project {wandb_project}")
    report = analyzer.analyze()
    paths = analyzer.write(report, out_dir or results_dir)
    print(f"target score {report.target_score:.4g} ({target_performance:g} x best {report.best_score:.4g})")
    for priority, name in report.recommendations.items():
        if name is None:
            print(f"  {priority:<12} ({PRIORITY_NOTES[priority]}): no configuration reached the target")
        else:
            c = report.config(name)
            print(f"  {priority:<12} ({PRIORITY_NOTES[priority]}): {name} "
                  f"({c.gpus_per_node} GPU(s) x {c.nodes} node(s)), FOM {c.fom[priority]:.3f}")
    for m, fit in report.fits.items():
        if fit is not None:
            print(f"  {m} to target ~ G^{fit.exponent:+.3f} (R^2 {fit.r2:.3f})")
    print(f"report: {paths['markdown']}")
    return report


# -- command line -------------------------------------------------------------------


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
            raise UserError(_format_validation_error(exc)) from None
        return run_sweeps(cfg)
    except (UserError, RecipeError, NoResults) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
