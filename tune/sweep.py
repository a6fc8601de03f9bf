"""Running hardware-scaling sweeps: what the command line asks for
(`SweepConfig`), which shapes this cluster can hold, one Tune experiment per
shape (`run_pair`: the searcher of tune.search, the trials of tune.trial),
resume, W&B, and the report at the end (analysis.hardware).

`python -m tune.hw_scaling` (tune.hw_scaling) parses the command line and
calls `run_sweeps` or `analyze`.

Tune keeps each experiment in the storage (train.storage: --storage, else
$RAY_AUTORESEARCH_STORAGE), under STORAGE/sweeps/<name of OUT>/hs_g{g}n{n}, so a
sweep outlives the node that drove it: --resume restores from there (what it
holds is copied into OUT first), and after each shape its trials are copied
into OUT for the report. Without a storage, OUT is Tune's storage, as on a laptop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from analysis.files import atomic_write_json
from train.storage import Storage, copy_down, resolve_storage, storage_field, write_bytes
from tune.recipes import DEFAULT_RECIPE, Hardware, RecipeError, load_recipe
from tune.search import METRIC, RoundLimiter, make_searcher
from tune.space import MAX_GPUS_PER_NODE, HardwareSpace
from tune.trial import hw_trial, progress_callback_class, trial_dirname, trial_resources

DEFAULT_OUT = Path("runs/hw_scaling")
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
    storage: str | None = Field(None, description="where Tune keeps the experiments (default "
                                "$RAY_AUTORESEARCH_STORAGE, else OUT)")

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        return storage_field(v)

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


# -- running ------------------------------------------------------------------------


def sweeps_storage(cfg: SweepConfig, storage: Storage | None) -> Storage:
    """Where Tune keeps this command's experiments: OUT itself without a storage."""
    out = cfg.out.resolve()
    return storage.join("sweeps", out.name) if storage is not None else Storage(str(out))


def run_pair(cfg: SweepConfig, recipe, settings: dict, g: int, n: int, cluster_cpus: float,
             storage: Storage | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep of one shape. Returns a summary with
    `interrupted`, `finished`, `errored` and the best result."""
    from ray import tune

    name = f"hs_g{g}n{n}"
    out = cfg.out.resolve()
    exp_dir = out / name
    root = sweeps_storage(cfg, storage)
    exp_store = root.join(name)
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
    if cfg.resume and tune.Tuner.can_restore(exp_store.uri):
        print(f"[{name}] resuming {exp_store.display}", flush=True)
        tuner = tune.Tuner.restore(exp_store.uri, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        created = not exp_dir.exists()
        exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(exp_dir / "hw_meta.json", meta)
        callbacks: list = [progress_callback_class()(name, cfg.max_trials, space.names)]
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
                trial_dirname_creator=trial_dirname,
                trial_name_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(name=name, storage_path=root.uri, callbacks=callbacks, verbose=0,
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
        if storage is not None:
            if (exp_dir / "hw_meta.json").is_file():  # beside Tune's state, for a resume from another node
                write_bytes(exp_store.join("hw_meta.json"), (exp_dir / "hw_meta.json").read_bytes())
            copy_down(exp_store, exp_dir)  # the trials' results, for the report
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
    atomic_write_json(exp_dir / "summary.json", summary)
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


def check_resume(cfg: SweepConfig, pairs: list[tuple[int, int]], recipe_name: str, settings: dict,
                 storage: Storage | None = None) -> None:
    """Refuse to write over an earlier sweep, or to resume one with other settings.
    With a storage, what it holds of these sweeps is copied into OUT first: the
    node that started them may be gone."""
    for g, n in pairs:
        exp_dir = cfg.out / f"hs_g{g}n{n}"
        if storage is not None:
            copy_down(sweeps_storage(cfg, storage).join(exp_dir.name), exp_dir)
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

    storage = resolve_storage(cfg.storage)
    init_ray(log_to_driver=False)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if len(nodes) > 1 and (storage is None or storage.is_local):
        print(f"note: this cluster has {len(nodes)} nodes and the sweep's state stays in "
              f"{storage.uri if storage else cfg.out.resolve()}; if that is this node's disk, it is lost with "
              "this node: set --storage s3://... or gs://... to keep it", flush=True)
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    pairs, skipped = plan_pairs(cfg, nodes)
    for line in skipped:
        print(line, flush=True)
    if not pairs:
        raise UserError("no hardware shape to sweep: every --gpu-counts x --node-counts pair was skipped")
    check_resume(cfg, pairs, recipe.name, settings, storage)
    print(f"sweeping {len(pairs)} shape(s): {', '.join(f'hs_g{g}n{n}' for g, n in pairs)}; recipe {recipe.name}; "
          f"results under {cfg.out}" + (f", Tune's state in {sweeps_storage(cfg, storage).display}" if storage
                                        else ""), flush=True)

    summaries = []
    for g, n in pairs:
        summary = run_pair(cfg, recipe, settings, g, n, cluster_cpus, storage)
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
            print(f"  {m} to target ~ G^{fit.slope:+.3f} (R^2 {fit.r2:.3f})")
    print(f"report: {paths['markdown']}")
    return report
