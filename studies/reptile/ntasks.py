"""Does held-out performance of Reptile follow a power law in the number of training tasks?

    python -m studies.reptile [--n-tasks 50 100 300 1000] [--seeds 0 1 2]
        [--meta-steps 10000] [--eval-interval 500] [--quick] [--out DIR] [--resume]

One Ray Tune trial per (N_tasks, seed), each with its own resources
(--cpus-per-trial, --gpus-per-trial), meta-trains Reptile on N_tasks training
tasks and scores the meta-learned initialisation on a fixed set of held-out
tasks every --eval-interval meta-steps; at the end it also scores the baselines
(zero-shot, and fine-tuning from scratch without meta-learning). The driver then
fits L_meta = a * N_tasks^-beta to the final held-out losses of all runs, with
bootstrap intervals, and writes:

    OUT/scaling_law_results.csv   one row per run
    OUT/power_law_fit.json        beta, a, R^2, intervals
    OUT/scaling_law_plot.png      log-log: runs, mean +- sd per N_tasks, the fit
    OUT/baseline_comparison.png   meta-learning against the baselines
    OUT/summary_report.json       everything above in one place
    OUT/ntasks_{N}_seed_{S}/      config.json, train_stats.csv, eval_stats.csv, final_result.json

It joins the running Ray cluster (RAY_ADDRESS, or `ray start`) or starts a local
one. On a multi-node cluster OUT must be on storage every node can write.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("studies.reptile.ntasks")  # the same name under `python -m`

PROFILES: dict[str, dict[str, Any]] = {
    # The study as the issue specifies it: hours on a laptop CPU, minutes on a GPU node.
    "full": {"n_tasks": [50, 100, 300, 1000], "seeds": [0, 1, 2], "meta_steps": 10_000, "eval_interval": 500,
             "test_tasks": 500, "eval_tasks": 100},
    # Minutes on a 2-core laptop, every output file, the same task family.
    "quick": {"n_tasks": [10, 30, 100, 300], "seeds": [0, 1], "meta_steps": 1500, "eval_interval": 250,
              "test_tasks": 200, "eval_tasks": 100},
}

RESULT_COLUMNS = (
    "n_tasks", "seed", "meta_test_loss", "meta_test_acc", "meta_test_loss_sem", "zero_shot_loss", "zero_shot_acc",
    "scratch_loss", "scratch_acc", "scratch_tuned_loss", "scratch_tuned_acc", "scratch_tuned_lr", "scratch_tuned_steps",
    "train_query_loss", "factors_seen", "meta_steps", "wall_s",
)
OUTPUT_FILES = ("scaling_law_results.csv", "power_law_fit.json", "scaling_law_plot.png", "baseline_comparison.png",
                "summary_report.json")
RUN_FILES = ("config.json", "train_stats.csv", "eval_stats.csv", "final_result.json")


class UsageError(ValueError):
    """A mistake in the command line or the output folder: one message, exit 2."""


def run_name(n_tasks: int, seed: int) -> str:
    return f"ntasks_{n_tasks}_seed_{seed}"


# ---------------------------------------------------------------------------
# the Tune trial
# ---------------------------------------------------------------------------


def reptile_trial(config: dict) -> None:
    """One (N_tasks, seed) run inside a Tune trial: reports every evaluation to Tune
    and writes its files under config['out']/ntasks_N_seed_S."""
    import torch
    from ray import tune

    from studies.reptile.config import ReptileConfig
    from studies.reptile.meta import run_reptile

    torch.set_num_threads(max(1, int(config["cpus"])))
    cfg = ReptileConfig.model_validate(config["reptile"])
    n_tasks, seed = config["run"]["n_tasks"], config["run"]["seed"]
    device = "cuda" if config.get("gpus", 0) > 0 and torch.cuda.is_available() else None
    result = run_reptile(cfg, n_tasks, seed, out_dir=Path(config["out"]) / run_name(n_tasks, seed),
                         report=tune.report, device=device)
    final = {k: result[k] for k in ("n_tasks", "seed", "meta_test_loss", "meta_test_acc", "wall_s")}
    final["scratch_tuned_loss"] = result["baselines"]["scratch_tuned"]["loss"]
    final["done_run"] = True
    tune.report(final)


def _progress_callback(total: int):
    """A Tune callback that logs each trial's evaluations and its end, so a sweep
    that runs for hours says where it is without Tune's progress tables."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.finished = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            run = run_name(result.get("n_tasks"), result.get("seed"))
            if result.get("done_run"):
                return
            if "test_loss" in result:
                logger.info("%s step %s: held-out loss %.4f, accuracy %.3f", run, result.get("step"),
                            result["test_loss"], result["test_acc"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.finished += 1
            r = trial.last_result or {}
            logger.info("finished %s (%d/%d): meta-test loss %.4f (no-meta baseline %.4f) in %.0f s",
                        run_name(r.get("n_tasks"), r.get("seed")), self.finished, total,
                        r.get("meta_test_loss", float("nan")), r.get("scratch_tuned_loss", float("nan")),
                        r.get("wall_s", float("nan")))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.finished += 1
            logger.error("a trial failed (%d/%d): %s", self.finished, total, trial.config.get("run"))

    return Progress()


def run_sweep(runs: list[tuple[int, int]], reptile_cfg: dict, out: Path, cpus: float, gpus: float,
              verbose: bool = False) -> list[str]:
    """Run `runs` as Tune trials; returns the error messages of failed trials."""
    from ray import tune

    trainable = tune.with_resources(reptile_trial, {"cpu": cpus, "gpu": gpus})
    tuner = tune.Tuner(
        trainable,
        param_space={
            "run": tune.grid_search([{"n_tasks": n, "seed": s} for n, s in runs]),
            "reptile": reptile_cfg,
            "out": str(out),
            "cpus": cpus,
            "gpus": gpus,
        },
        # Reusing a trial's actor for the next trial saves starting a worker and importing torch again.
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"reptile_scaling-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(out / "ray_results"),
            verbose=1 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[_progress_callback(len(runs))],
        ),
    )
    grid = tuner.fit()
    errors = []
    for i in range(len(grid)):
        r = grid[i]
        if r.error is not None:
            run = (r.config or {}).get("run", {})
            errors.append(f"{run_name(run.get('n_tasks'), run.get('seed'))}: {str(r.error).strip().splitlines()[-1]}")
    return errors


# ---------------------------------------------------------------------------
# analysis: CSV, fit, plots, summary (no Ray)
# ---------------------------------------------------------------------------


def load_results(out: Path, runs: list[tuple[int, int]]) -> list[dict]:
    results = []
    for n, s in runs:
        path = out / run_name(n, s) / "final_result.json"
        if path.is_file():
            results.append(json.loads(path.read_text()))
    return results


def _row(r: dict) -> dict:
    b = r["baselines"]
    return {
        "n_tasks": r["n_tasks"], "seed": r["seed"], "meta_test_loss": r["meta_test_loss"],
        "meta_test_acc": r["meta_test_acc"], "meta_test_loss_sem": r.get("meta_test_loss_sem"),
        "zero_shot_loss": b["zero_shot"]["loss"], "zero_shot_acc": b["zero_shot"]["acc"],
        "scratch_loss": b["scratch"]["loss"], "scratch_acc": b["scratch"]["acc"],
        "scratch_tuned_loss": b["scratch_tuned"]["loss"], "scratch_tuned_acc": b["scratch_tuned"]["acc"],
        "scratch_tuned_lr": b["scratch_tuned"].get("lr"), "scratch_tuned_steps": b["scratch_tuned"].get("steps"),
        "train_query_loss": r.get("train_query_loss"), "factors_seen": r.get("factors_seen"),
        "meta_steps": r.get("meta_steps"), "wall_s": r.get("wall_s"),
    }


def _mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def write_study_outputs(out: Path, results: list[dict], meta: dict | None = None, n_bootstrap: int = 1000) -> dict:
    """From the runs' final results: the CSV, the power-law fit, both plots and the
    summary report. Returns the summary."""
    from analysis.files import atomic_write_json, atomic_write_text, nan_to_none
    from analysis.scaling_laws import FitError, fit_power_law

    rows = sorted((_row(r) for r in results), key=lambda r: (r["n_tasks"], r["seed"]))
    table = io.StringIO()
    w = csv.DictWriter(table, fieldnames=RESULT_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "scaling_law_results.csv", table.getvalue())

    x = [r["n_tasks"] for r in rows]
    y = [r["meta_test_loss"] for r in rows]
    fit = fit_power_law(x, y, n_bootstrap=n_bootstrap, seed=0)
    fit_doc = {
        "law": "L_meta = a * N_tasks^-beta",
        "metric": "meta-test loss: cross-entropy on the queries of the held-out tasks after adaptation",
        "a": fit.a, "beta": fit.b, "r2": fit.r2, "r2_linear": fit.r2_linear,
        "intervals": {"a": fit.intervals["a"], "beta": fit.intervals["b"]},
        "stderr": {"a": fit.stderr["a"], "beta": fit.stderr["b"]},
        "confidence": fit.confidence, "bootstrap": fit.bootstrap, "n_bootstrap_ok": fit.n_bootstrap_ok,
        "n_points": fit.n_points, "n_tasks_values": sorted(set(x)),
        "note": None if fit.intervals["b"] is not None else
        "no intervals: as many points as parameters (add N_tasks values or seeds)",
        "fit": fit.to_dict(),
        "with_offset": None,
    }
    if len(set(x)) >= 4:  # L = a * N^-beta + c: a floor the pure power law cannot show
        try:
            off = fit_power_law(x, y, offset=True, n_bootstrap=n_bootstrap, seed=0)
            fit_doc["with_offset"] = {"law": "L_meta = a * N_tasks^-beta + c", "a": off.a, "beta": off.b, "c": off.c,
                                      "r2": off.r2, "intervals": {"a": off.intervals["a"], "beta": off.intervals["b"],
                                                                  "c": off.intervals["c"]}}
        except FitError as exc:
            fit_doc["with_offset"] = {"error": str(exc)}
    atomic_write_json(out / "power_law_fit.json", nan_to_none(fit_doc))
    fit.plot(out / "scaling_law_plot.png", xlabel="N_tasks (meta-training tasks)",
             ylabel="meta-test loss on held-out tasks",
             title="Reptile: held-out loss vs number of training tasks")

    per_n = []
    for n in sorted(set(x)):
        sub = [r for r in rows if r["n_tasks"] == n]
        entry = {"n_tasks": n, "runs": len(sub)}
        for key in ("meta_test_loss", "meta_test_acc", "scratch_tuned_loss", "scratch_tuned_acc", "scratch_loss",
                    "scratch_acc", "zero_shot_loss", "zero_shot_acc", "train_query_loss"):
            vals = [r[key] for r in sub if r[key] is not None]
            if vals:
                entry[key], entry[key + "_sd"] = _mean_sd(vals)
        entry["meta_beats_scratch"] = entry["meta_test_loss"] < entry["scratch_tuned_loss"]
        per_n.append(entry)
    baselines = {}
    for name in ("zero_shot", "scratch", "scratch_tuned"):
        loss, loss_sd = _mean_sd([r[f"{name}_loss"] for r in rows])
        acc, acc_sd = _mean_sd([r[f"{name}_acc"] for r in rows])
        baselines[name] = {"loss": loss, "loss_sd": loss_sd, "acc": acc, "acc_sd": acc_sd}
    _plot_baselines(out / "baseline_comparison.png", per_n, baselines)

    means = [e["meta_test_loss"] for e in per_n]
    summary = {
        **(meta or {}),
        "runs": len(rows),
        "n_tasks": sorted(set(x)),
        "seeds": sorted({r["seed"] for r in rows}),
        "power_law": {k: fit_doc[k] for k in ("law", "a", "beta", "r2", "intervals", "confidence", "n_points")},
        "per_n_tasks": per_n,
        "baselines": baselines,
        "meta_beats_scratch_at_every_n_tasks": all(e["meta_beats_scratch"] for e in per_n),
        "meta_beats_zero_shot_at_every_n_tasks": all(e["meta_test_loss"] < e["zero_shot_loss"] for e in per_n),
        "mean_loss_decreases_with_n_tasks": all(b < a for a, b in zip(means, means[1:])),
        "files": list(OUTPUT_FILES) + [f"{run_name(r['n_tasks'], r['seed'])}/{f}" for r in rows for f in RUN_FILES],
    }
    atomic_write_json(out / "summary_report.json", nan_to_none(summary))
    return summary


def _plot_baselines(path: Path, per_n: list[dict], baselines: dict) -> None:
    from analysis.plots import new_figure, save_figure

    fig, axes = new_figure(ncols=2)
    n = [e["n_tasks"] for e in per_n]
    styles = {"zero_shot": ("zero-shot (no adaptation)", "C7", ":"),
              "scratch": ("no meta-learning: scratch, same steps and lr", "C1", "--"),
              "scratch_tuned": ("no meta-learning: scratch, tuned steps and lr", "C3", "-.")}
    for ax, metric, label in ((axes[0], "loss", "held-out query loss"), (axes[1], "acc", "held-out query accuracy")):
        key = "meta_test_loss" if metric == "loss" else "meta_test_acc"
        ax.errorbar(n, [e[key] for e in per_n], yerr=[e.get(key + "_sd", 0.0) for e in per_n], fmt="o-", color="C0",
                    capsize=4, label="Reptile (meta-learned init)")
        for name, (text, color, ls) in styles.items():
            b = baselines[name]
            ax.axhline(b[metric], color=color, ls=ls, label=text)
            if b[f"{metric}_sd"] > 0:
                ax.axhspan(b[metric] - b[f"{metric}_sd"], b[metric] + b[f"{metric}_sd"], color=color, alpha=0.1)
        ax.set_xscale("log")
        ax.set_xticks(n)
        ax.set_xticklabels([str(v) for v in n])
        ax.minorticks_off()
        ax.set_xlabel("N_tasks (meta-training tasks)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[0].set_title("loss (lower is better)")
    axes[1].set_title("accuracy (higher is better)")
    save_figure(fig, path)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _number(kind: type, lowest_ok, what: str):
    """An argparse type: `kind` (int or float), finite, and passing `lowest_ok`."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {what}, got {text!r}") from None
        if not lowest_ok(v) or not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a {what}, got {text}")
        return v

    return parse


_positive_int = _number(int, lambda v: v >= 1, "positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "non-negative integer")
_positive_float = _number(float, lambda v: v > 0, "positive number")
_nonneg_float = _number(float, lambda v: v >= 0, "non-negative number")


def build_parser() -> argparse.ArgumentParser:
    q, f = PROFILES["quick"], PROFILES["full"]
    p = argparse.ArgumentParser(
        prog="python -m studies.reptile",
        description=(
            "Reptile N_tasks scaling study. One Ray Tune trial per (N_tasks, seed) meta-trains Reptile "
            "(5-way 5-shot by default) on N_tasks training tasks, scores it on a fixed set of held-out tasks "
            "every --eval-interval meta-steps and against baselines (zero-shot; fine-tuning from scratch "
            "without meta-learning), then fits L_meta = a * N_tasks^-beta with bootstrap intervals. The "
            "default task family is synthetic and needs no download."
        ),
        epilog=(
            "outputs: OUT/scaling_law_results.csv, power_law_fit.json, scaling_law_plot.png, "
            "baseline_comparison.png, summary_report.json and OUT/ntasks_{N}_seed_{S}/{config.json, "
            "train_stats.csv, eval_stats.csv, final_result.json}.\n\n"
            "examples:\n"
            "  python -m studies.reptile --quick --out runs/reptile_quick\n"
            "  python -m studies.reptile --out runs/reptile --resume\n"
            "  python -m studies.reptile --model hf --task-family banking77 --gpus-per-trial 1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n-tasks", type=_positive_int, nargs="+", metavar="N",
                   help=f"numbers of meta-training tasks, at least two different ones (default {' '.join(map(str, f['n_tasks']))}; "
                        f"--quick: {' '.join(map(str, q['n_tasks']))})")
    p.add_argument("--seeds", type=_nonneg_int, nargs="+", metavar="S",
                   help=f"seeds per N_tasks (default {' '.join(map(str, f['seeds']))}; --quick: {' '.join(map(str, q['seeds']))})")
    p.add_argument("--meta-steps", type=_positive_int, metavar="K",
                   help=f"Reptile meta-steps per run (default {f['meta_steps']}; --quick: {q['meta_steps']})")
    p.add_argument("--eval-interval", type=_positive_int, metavar="K",
                   help=f"meta-steps between held-out evaluations (default {f['eval_interval']}; --quick: {q['eval_interval']})")
    p.add_argument("--quick", action="store_true",
                   help="a small sweep that finishes in minutes on a 2-core laptop and writes every file; "
                        "flags given explicitly still win")
    p.add_argument("--out", type=Path, help="output folder (default runs/reptile_scaling-TIMESTAMP)")
    p.add_argument("--resume", action="store_true",
                   help="continue in an existing --out: runs whose final_result.json exists are skipped")
    g = p.add_argument_group("Reptile")
    g.add_argument("--inner-steps", type=_positive_int, default=5, help="SGD steps per task in meta-training (default 5)")
    g.add_argument("--inner-lr", type=_positive_float, default=0.5, help="inner SGD learning rate (default 0.5)")
    g.add_argument("--meta-lr", type=_positive_float, default=1.0,
                   help="outer step size, annealed linearly to 0 (default 1.0)")
    g.add_argument("--meta-batch", type=_positive_int, default=5, help="tasks per meta-step (default 5)")
    g.add_argument("--eval-inner-steps", type=_nonneg_int, default=10,
                   help="adaptation steps on a held-out task's support set (default 10)")
    g.add_argument("--ways", type=_positive_int, default=5, help="classes per task (default 5)")
    g.add_argument("--shots", type=_positive_int, default=5, help="support examples per class (default 5)")
    g.add_argument("--queries", type=_positive_int, default=15, help="query examples per class (default 15)")
    g.add_argument("--test-tasks", type=_positive_int, metavar="T",
                   help=f"held-out tasks scored at the end (default {f['test_tasks']}; --quick: {q['test_tasks']})")
    g.add_argument("--eval-tasks", type=_positive_int, metavar="T",
                   help=f"held-out tasks scored at each interval (default {f['eval_tasks']}, at most --test-tasks)")
    m = p.add_argument_group("model and data")
    m.add_argument("--task-family", choices=("synthetic", "banking77"), default="synthetic",
                   help="synthetic (default, no download) or banking77 (text, with --model hf)")
    m.add_argument("--model", choices=("small", "hf"), default="small",
                   help="small MLP (default) or a Hugging Face LM adapted with LoRA")
    m.add_argument("--hf-model", default=None, help="Hugging Face model name or folder (default TinyLlama-1.1B-Chat)")
    m.add_argument("--lora-rank", type=_nonneg_int, default=0,
                   help="LoRA rank (small model: 0 = train the feature layer fully; hf: default 8)")
    m.add_argument("--banking77-path", type=Path, default=None, help="folder holding Banking77's train.csv and test.csv")
    r = p.add_argument_group("resources and output")
    r.add_argument("--cpus-per-trial", type=_positive_float, default=1.0, help="CPUs each trial reserves (default 1)")
    r.add_argument("--gpus-per-trial", type=_nonneg_float, default=0.0, help="GPUs each trial reserves (default 0)")
    r.add_argument("--bootstrap", type=_nonneg_int, default=1000, help="bootstrap resamples of the fit (default 1000)")
    r.add_argument("--verbose", action="store_true", help="show Ray Tune's progress and the trials' logs")
    return p


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The profile's settings, overridden by the flags given explicitly."""
    profile = PROFILES["quick" if args.quick else "full"]
    s = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in profile.items()}
    if args.eval_tasks is None:  # the profile's default shrinks with a smaller --test-tasks
        s["eval_tasks"] = min(s["eval_tasks"], s["test_tasks"])
    elif s["eval_tasks"] > s["test_tasks"]:
        raise UsageError(f"--eval-tasks ({s['eval_tasks']}) must be at most --test-tasks ({s['test_tasks']}): "
                         f"the tasks scored at each interval are the first of the held-out tasks")
    return s


def _reptile_config(args, s: dict):
    from pydantic import ValidationError

    from studies.reptile.config import DEFAULT_HF_MODEL, ReptileConfig

    if (args.model == "hf") != (args.task_family == "banking77"):
        raise UsageError("--model hf goes with --task-family banking77 (text), and the small model with the "
                         "synthetic tasks: give both or neither")
    try:
        return ReptileConfig(
            ways=args.ways, shots=args.shots, queries=args.queries, task_family=args.task_family,
            banking77_path=str(args.banking77_path) if args.banking77_path else None,
            inner_steps=args.inner_steps, inner_lr=args.inner_lr, meta_lr=args.meta_lr, meta_batch=args.meta_batch,
            meta_steps=s["meta_steps"], eval_inner_steps=args.eval_inner_steps, eval_interval=s["eval_interval"],
            log_interval=max(1, min(50, s["eval_interval"] // 5 or 1)), eval_tasks=s["eval_tasks"],
            test_tasks=s["test_tasks"], model=args.model, lora_rank=args.lora_rank,
            hf_model=args.hf_model or DEFAULT_HF_MODEL, device="cuda" if args.gpus_per_trial > 0 else "auto",
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise UsageError(f"{where + ': ' if where else ''}{msg}") from None


def _check_out(out: Path, resume: bool) -> None:
    """Refuse an --out that is a file, holds another study (without --resume) or
    cannot be created; leaves nothing behind."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.exists():
        if any(out.iterdir()) and not resume:
            raise UsageError(f"--out {out} already holds files; pass --resume to continue that study, "
                             f"or choose another folder")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write to --out {out}")
        return
    missing = [out]
    while not missing[-1].parent.exists():
        missing.append(missing[-1].parent)
    if not missing[-1].parent.is_dir():
        raise UsageError(f"cannot write to --out {out}: {missing[-1].parent} is not a writable folder")
    try:  # the only sure test: create it, then take it away again
        out.mkdir(parents=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    for d in missing:
        d.rmdir()


def _check_resumed_runs(out: Path, runs: list[tuple[int, int]], reptile_cfg: dict) -> list[tuple[int, int]]:
    """The runs still to do; refuses finished runs made with other settings."""
    todo = []
    for n, s in runs:
        d = out / run_name(n, s)
        if (d / "final_result.json").is_file():
            try:
                old = json.loads((d / "config.json").read_text())["reptile"]
            except (OSError, ValueError, KeyError):
                raise UsageError(f"{d} has a final_result.json but no readable config.json; remove the folder") from None
            diff = sorted(k for k in set(old) | set(reptile_cfg) if old.get(k) != reptile_cfg.get(k))
            if diff:
                shown = ", ".join(f"{k} {old.get(k)!r} -> {reptile_cfg.get(k)!r}" for k in diff[:3])
                raise UsageError(f"{d.name} was made with other settings ({shown}); use the same settings "
                                 f"to resume, or another --out")
        else:
            todo.append((n, s))
    return todo


def _check_cluster(cpus: float, gpus: float) -> None:
    import ray

    res = ray.cluster_resources()
    have_cpu, have_gpu = res.get("CPU", 0.0), res.get("GPU", 0.0)
    if cpus > have_cpu:
        raise UsageError(f"--cpus-per-trial {cpus:g} is more than the cluster's {have_cpu:g} CPUs")
    if gpus > have_gpu:
        raise UsageError(f"--gpus-per-trial {gpus:g} asks for GPUs the cluster does not have ({have_gpu:g} GPUs)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.WARNING)
    t0 = time.time()
    try:
        s = _resolve(args)
        n_values = sorted(set(s["n_tasks"]))
        if len(n_values) < 2:
            raise UsageError(f"--n-tasks needs at least two different values to fit a power law, got {n_values}")
        seeds = sorted(set(s["seeds"]))
        out = (args.out or Path("runs") / f"reptile_scaling-{time.strftime('%Y%m%d-%H%M%S')}").expanduser().resolve()
        _check_out(out, args.resume)
        cfg = _reptile_config(args, s)
        from studies.reptile.config import ReptileUnavailable
        from studies.reptile.models import preflight

        try:
            preflight(cfg)
        except ReptileUnavailable as exc:
            raise UsageError(str(exc)) from None
        reptile_cfg = cfg.model_dump(mode="json")
        runs = [(n, seed) for n in n_values for seed in seeds]
        todo = _check_resumed_runs(out, runs, reptile_cfg) if out.exists() else runs

        if todo:
            import ray

            from train.ray_session import init_ray

            try:
                joined = init_ray(log_to_driver=args.verbose)
            except ConnectionError as exc:
                print(f"error: could not reach the Ray cluster ({exc}); unset RAY_ADDRESS to start a local one",
                      file=sys.stderr)
                return 1
            try:
                logger.info("%s Ray; %d of %d runs to do", "joined a running" if joined else "started a local",
                            len(todo), len(runs))
                _check_cluster(args.cpus_per_trial, args.gpus_per_trial)
                try:
                    out.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UsageError(f"cannot create --out {out}: {exc.strerror or exc}") from None
                for n, seed in todo:  # a run cut short earlier starts again from nothing
                    shutil.rmtree(out / run_name(n, seed), ignore_errors=True)
                errors = run_sweep(todo, reptile_cfg, out, args.cpus_per_trial, args.gpus_per_trial, args.verbose)
            finally:
                ray.shutdown()
        else:
            logger.info("every run is done already; redoing the analysis")
            errors = []
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    results = load_results(out, runs)
    done_n = {r["n_tasks"] for r in results}
    if errors:
        print(f"error: {len(errors)} run(s) failed:\n  " + "\n  ".join(errors), file=sys.stderr)
    if len(done_n) < 2:
        print("error: fewer than two N_tasks values finished; nothing to fit (rerun with --resume)", file=sys.stderr)
        return 1
    command = "python -m studies.reptile " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    summary = write_study_outputs(out, results, {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command, "quick": args.quick,
        "wall_s": round(time.time() - t0, 1), "runs_skipped_as_done": len(runs) - len(todo), "runs_failed": errors,
        "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial, "reptile": reptile_cfg,
    }, n_bootstrap=args.bootstrap)
    _print_summary(summary, out)
    return 1 if errors else 0


def _print_summary(summary: dict, out: Path) -> None:
    pl = summary["power_law"]
    iv = pl["intervals"]["beta"]
    print("meta-test loss on held-out tasks (mean ± sd over seeds):")
    for e in summary["per_n_tasks"]:
        print(f"  N_tasks {e['n_tasks']:>6}: {e['meta_test_loss']:.4f} ± {e.get('meta_test_loss_sd', 0):.4f}"
              f"   (scratch, tuned: {e['scratch_tuned_loss']:.4f})")
    b = summary["baselines"]
    print(f"baselines: zero-shot {b['zero_shot']['loss']:.4f}, scratch same budget {b['scratch']['loss']:.4f}, "
          f"scratch tuned {b['scratch_tuned']['loss']:.4f}")
    ci = f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else " (no interval)"
    print(f"power law: L_meta = {pl['a']:.4g} * N_tasks^-{pl['beta']:.4f}; beta {pl['confidence']:.0%} CI{ci}, "
          f"R^2 {pl['r2']:.3f}")
    print(f"meta-learning beats the no-meta baseline at every N_tasks: {summary['meta_beats_scratch_at_every_n_tasks']}")
    print(f"results in {out}")


if __name__ == "__main__":
    sys.exit(main())
