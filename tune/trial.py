"""One trial of a hardware-scaling sweep: the Tune function trainable, the
resources it reserves (the shape it measures), and the progress lines.

Each trial reserves a placement group with one bundle of g GPUs per node and
STRICT_SPREAD (so n distinct nodes), in which the recipe starts one DDP worker
per GPU; with --local the shape maps onto CPU (tune.recipes.Hardware). Every
report carries score, samples, time, GPU-hours and cost, and where the target
score was first reached.
"""

from __future__ import annotations

import math
import sys
import time

from tune.recipes import Hardware, load_recipe


class TargetTracker:
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
    tracker = TargetTracker(settings.get("target_score"), hw.total_gpus, hw.usd_per_gpu_hour)
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


def trial_dirname(trial) -> str:
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


def progress_callback_class():
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
