"""Hardware-scaling analysis: which GPUs-per-node x nodes shape to train on.

    analyzer = HardwareScalingAnalyzer(target_performance=0.9)
    analyzer.load_tune_results("runs/hw_scaling")    # the hs_g{g}n{n}/ Tune experiments
    report = analyzer.analyze()
    analyzer.write(report, "runs/hw_scaling")        # report.md, hardware_scaling.csv, PNG plots

For each configuration it takes the trial with the best final score; measures,
on that trial's learning curve, the samples, wall time, GPU-hours and cost
needed to reach the target score (`target_performance` times the best score any
trial reached, so every configuration is held to the same bar); fits power laws
of samples, time and cost against the total number of GPUs G with
analysis.scaling_laws (least squares in log-log space, R^2 there, bootstrap
intervals), reported as y = a * G^p (p, the log-log slope); and scores each configuration
with a Figure of Merit per priority:

    FOM_p(c) = prod_k (min_c' y_k(c') / y_k(c)) ** w_pk,    k in {samples, time, cost}

a weighted geometric mean of how close the configuration comes to the best one
on each axis (1.0: best on all three). The priorities weigh first what they are
named for: research (sample efficiency) 0.6/0.2/0.2, development (time to
result) 0.6, budget (cost) 0.6, balanced one third each. The recommended
configuration of a priority is the one with the highest FOM (ties: fewer GPUs).

Pure numerics and file parsing: it imports nothing of ours outside analysis. Tune's
on-disk layout it reads: EXPERIMENT/TRIAL/result.json (one JSON object per
report) and, if present, EXPERIMENT/hw_meta.json.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from analysis.files import atomic_write_text
from analysis.plots import new_figure, save_figure
from analysis.scaling_laws import PowerLawFit, fit_power_law

METRICS = ("samples", "time", "cost")
METRIC_LABELS = {"samples": "samples to target", "time": "time to target (s)", "cost": "cost to target ($)"}
PRIORITIES: dict[str, dict[str, float]] = {
    "research": {"samples": 0.6, "time": 0.2, "cost": 0.2},
    "development": {"samples": 0.2, "time": 0.6, "cost": 0.2},
    "budget": {"samples": 0.2, "time": 0.2, "cost": 0.6},
    "balanced": {"samples": 1 / 3, "time": 1 / 3, "cost": 1 / 3},
}
PRIORITY_NOTES = {
    "research": "sample efficiency first",
    "development": "time to result first",
    "budget": "cost first",
    "balanced": "all three equally",
}
FIT_CONFIDENCE = 0.95  # fit_power_law's default
_CONFIG_NAME = re.compile(r"^hs_g(\d+)n(\d+)$")


class NoResults(ValueError):
    """There are no finished trials to analyse where we looked."""


# -- numerics ------------------------------------------------------------------


def fit_gpu_scaling(gpus: Iterable[float], values: Iterable[float]) -> PowerLawFit | None:
    """How `values` scale with the number of GPUs: analysis.scaling_laws'
    power law y = a * G^-b through the positive, finite points, least squares
    on log y with R^2 there and residual-bootstrap intervals (from three GPU
    counts on). Reported as the log-log slope, y ~ G^slope with slope = -b:
    positive where y grows with the GPUs. None without two distinct GPU counts
    (a line needs two)."""
    xs, ys = np.asarray(list(gpus), dtype=float), np.asarray(list(values), dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    xs, ys = xs[keep], ys[keep]
    if len(np.unique(xs)) < 2:
        return None
    return fit_power_law(xs, ys, n_bootstrap=1000, seed=0)


def crossing(curve: list[dict], target: float, key: str = "score") -> dict | None:
    """Where a learning curve first reaches `target`: every numeric field of the
    curve (samples, time_s, cost, ...) linearly interpolated between the two
    evaluations around the crossing. None if it never does."""
    prev = None
    for point in curve:
        s = point.get(key)
        if s is None or not math.isfinite(s):
            prev = None
            continue
        if s >= target:
            if prev is None or prev[key] >= target:
                return dict(point)
            frac = (target - prev[key]) / (s - prev[key])
            out = {}
            for k, v in point.items():
                pv = prev.get(k)
                if _is_number(v) and _is_number(pv):
                    out[k] = pv + frac * (v - pv)
                else:
                    out[k] = v
            out[key] = target
            return out
        prev = point
    return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def figure_of_merit(values: dict[str, dict[str, float]], weights: dict[str, float]) -> dict[str, float]:
    """FOM per configuration: the weighted geometric mean of best/value over the
    metrics. `values[config][metric]`; configurations missing a metric get 0."""
    best = {}
    for m in weights:
        vals = [v[m] for v in values.values() if v.get(m) is not None and v[m] > 0]
        best[m] = min(vals) if vals else None
    out = {}
    total_w = sum(weights.values())
    for name, v in values.items():
        if any(v.get(m) is None or v[m] <= 0 or best[m] is None for m in weights):
            out[name] = 0.0
            continue
        log_fom = sum(w * math.log(best[m] / v[m]) for m, w in weights.items()) / total_w
        out[name] = math.exp(log_fom)
    return out


# -- records -------------------------------------------------------------------


@dataclass
class TrialRecord:
    """One trial: its hardware, hyperparameters, and learning curve.

    curve: the trial's reports in order, each with score, samples, time_s and
    cost (gpu_hours optional). final: the last report.
    """

    config: str
    gpus_per_node: int
    nodes: int
    trial_id: str
    params: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    source: str = "tune"

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def final(self) -> dict[str, Any]:
        return self.curve[-1] if self.curve else {}

    @property
    def score(self) -> float:
        s = self.final.get("score")
        return float(s) if _is_number(s) else float("-inf")

    @property
    def best_score(self) -> float:
        vals = [p["score"] for p in self.curve if _is_number(p.get("score"))]
        return max(vals) if vals else float("-inf")


@dataclass
class ConfigResult:
    config: str
    gpus_per_node: int
    nodes: int
    trials: int
    best: TrialRecord
    at_target: dict[str, float] | None  # samples, time, gpu_hours, cost at the target; None: not reached
    fom: dict[str, float] = field(default_factory=dict)

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass
class HardwareReport:
    target_performance: float
    best_score: float
    target_score: float
    configs: list[ConfigResult]
    fits: dict[str, PowerLawFit | None]  # y = a * G^slope; see fit_gpu_scaling
    recommendations: dict[str, str | None]

    def config(self, name: str) -> ConfigResult:
        return next(c for c in self.configs if c.config == name)


# -- the analyzer ----------------------------------------------------------------


class HardwareScalingAnalyzer:
    def __init__(self, target_performance: float = 0.9, priorities: dict[str, dict[str, float]] | None = None):
        if not 0 < target_performance <= 1:
            raise ValueError(f"target_performance must be in (0, 1], got {target_performance}")
        self.target_performance = float(target_performance)
        self.priorities = priorities or PRIORITIES
        self.trials: list[TrialRecord] = []
        self.meta: dict[str, dict] = {}

    def add_trial(self, record: TrialRecord) -> None:
        if any(t.trial_id == record.trial_id and t.config == record.config for t in self.trials):
            return
        self.trials.append(record)

    # -- reading ---------------------------------------------------------------

    def load_tune_results(self, path: str | Path, finished_only: bool = True) -> "HardwareScalingAnalyzer":
        """Read every hs_g{g}n{n} experiment under `path` (or `path` itself if it
        is one). Trials still running or interrupted are left out unless
        `finished_only` is False. Raises NoResults if nothing is found."""
        root = Path(path)
        if not root.is_dir():
            raise NoResults(f"{root}: no such directory")
        experiments = [root] if _CONFIG_NAME.match(root.name) else sorted(
            p for p in root.iterdir() if p.is_dir() and _CONFIG_NAME.match(p.name)
        )
        before = len(self.trials)
        for exp in experiments:
            g, n = (int(v) for v in _CONFIG_NAME.match(exp.name).groups())
            meta_path = exp / "hw_meta.json"
            if meta_path.is_file():
                self.meta[exp.name] = json.loads(meta_path.read_text())
            for trial_dir in sorted(p for p in exp.iterdir() if p.is_dir()):
                rows = _read_json_lines(trial_dir / "result.json")
                if not rows or (finished_only and not (rows[-1].get("finished") or rows[-1].get("done"))):
                    continue
                params_path = trial_dir / "params.json"
                params = json.loads(params_path.read_text()) if params_path.is_file() else rows[-1].get("config", {})
                self.add_trial(TrialRecord(
                    config=exp.name, gpus_per_node=g, nodes=n,
                    trial_id=str(rows[-1].get("trial_id", trial_dir.name)),
                    params=_searched(params), curve=[_curve_point(r) for r in rows],
                ))
        if len(self.trials) == before:
            raise NoResults(f"{root}: no finished trials of a hardware-scaling sweep (hs_g*n*/*/result.json)")
        return self

    def load_wandb(self, project: str, entity: str | None = None) -> int:
        """Add the runs of a W&B project that the Tune results do not already
        hold (online only: needs WANDB_API_KEY). Returns how many were added."""
        if not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            return 0
        import wandb

        added = 0
        path = f"{entity}/{project}" if entity else project
        for run in wandb.Api().runs(path):
            hw = (run.config or {}).get("hardware") or {}
            g, n = hw.get("gpus_per_node"), hw.get("nodes")
            if not g or not n:
                continue
            history = run.history(keys=["score", "samples", "time_s", "cost", "gpu_hours"], pandas=False)
            curve = [_curve_point(r) for r in history]
            if not curve:
                continue
            record = TrialRecord(config=f"hs_g{g}n{n}", gpus_per_node=int(g), nodes=int(n), trial_id=str(run.id),
                                 params=_searched(run.config or {}), curve=curve, source="wandb")
            count = len(self.trials)
            self.add_trial(record)
            added += len(self.trials) - count
        return added

    # -- analysis --------------------------------------------------------------

    def analyze(self) -> HardwareReport:
        if not self.trials:
            raise NoResults("no trials to analyse")
        by_config: dict[str, list[TrialRecord]] = {}
        for t in self.trials:
            by_config.setdefault(t.config, []).append(t)
        best_score = max(t.best_score for t in self.trials)
        target = self.target_performance * best_score if best_score > 0 else best_score
        configs = []
        for name, trials in by_config.items():
            best = max(trials, key=lambda t: (t.score, t.best_score))
            configs.append(ConfigResult(name, best.gpus_per_node, best.nodes, len(trials), best,
                                        _at_target(best, target)))
        configs.sort(key=lambda c: (c.total_gpus, c.nodes, c.gpus_per_node))

        reached = [c for c in configs if c.at_target]
        fits = {
            m: fit_gpu_scaling([c.total_gpus for c in reached], [c.at_target[m] for c in reached]) for m in METRICS
        }
        values = {c.config: dict(c.at_target) if c.at_target else {} for c in configs}
        recommendations: dict[str, str | None] = {}
        for priority, weights in self.priorities.items():
            foms = figure_of_merit(values, weights)
            for c in configs:
                c.fom[priority] = foms[c.config]
            ranked = sorted((c for c in configs if c.fom[priority] > 0),
                            key=lambda c: (-c.fom[priority], c.total_gpus, c.nodes))
            recommendations[priority] = ranked[0].config if ranked else None
        return HardwareReport(self.target_performance, best_score, target, configs, fits, recommendations)

    # -- writing ---------------------------------------------------------------

    def write(self, report: HardwareReport, out_dir: str | Path) -> dict[str, Path]:
        """report.md, hardware_scaling.csv, trials.csv, scaling.png and fom.png
        under out_dir; each written to a temporary name and renamed into place."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": out / "report.md",
            "csv": out / "hardware_scaling.csv",
            "trials_csv": out / "trials.csv",
            "scaling_plot": out / "scaling.png",
            "fom_plot": out / "fom.png",
        }
        atomic_write_text(paths["csv"], self._configs_csv(report))
        atomic_write_text(paths["trials_csv"], self._trials_csv())
        _plot_scaling(report, paths["scaling_plot"])
        _plot_fom(report, paths["fom_plot"])
        atomic_write_text(paths["markdown"], self.markdown(report))
        return paths

    def markdown(self, report: HardwareReport) -> str:
        r = report
        lines = [
            "# Hardware-scaling report",
            "",
            f"Trials analysed: {len(self.trials)} in {len(r.configs)} configurations. "
            f"Target score: {r.target_score:.4g} = {r.target_performance:g} x the best score reached "
            f"({r.best_score:.4g}). Samples, time and cost are measured where the best trial of each "
            "configuration (highest final score) first reaches the target, interpolated between evaluations.",
            "",
        ]
        mappings = {name: m["mapping"] for name, m in sorted(self.meta.items()) if m.get("mapping")}
        if mappings:
            lines += ["Hardware each configuration ran on:", ""]
            lines += [f"- {name}: {text}" for name, text in mappings.items()] + [""]
        lines += ["## Recommendations", ""]
        for p, name in r.recommendations.items():
            if name is None:
                lines.append(f"- **{p}** ({PRIORITY_NOTES.get(p, '')}): none (no configuration reached the target)")
                continue
            c = r.config(name)
            lines.append(
                f"- **{p}** ({PRIORITY_NOTES.get(p, '')}): **{name}** ({c.gpus_per_node} GPU(s) x {c.nodes} node(s)), "
                f"FOM {c.fom[p]:.3f}: {_fmt(c.at_target['samples'])} samples, {c.at_target['time']:.1f} s, "
                f"${c.at_target['cost']:.4f} to target"
            )
        lines += ["", "## Best trial per configuration", "",
                  "| config | GPUs/node | nodes | GPUs | trials | final score | samples to target | time to target (s) "
                  "| GPU-hours to target | cost to target ($) | hyperparameters |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in r.configs:
            t = c.at_target
            cells = (["-"] * 4 if t is None else
                     [_fmt(t["samples"]), f"{t['time']:.2f}", f"{t['gpu_hours']:.4g}", f"{t['cost']:.4g}"])
            lines.append(f"| {c.config} | {c.gpus_per_node} | {c.nodes} | {c.total_gpus} | {c.trials} | "
                         f"{c.best.score:.4f} | " + " | ".join(cells) + f" | {_fmt_params(c.best.params)} |")
        lines += ["", "## Scaling with the number of GPUs G (y = a * G^p, fitted in log-log space)", "",
                  "p > 0: the quantity grows with the GPUs; p < 0: it falls. Intervals: "
                  f"{FIT_CONFIDENCE:.0%} residual bootstrap (from three GPU counts on).", "",
                  "| quantity | a | p (exponent) | R^2 | configurations |", "|---|---|---|---|---|"]
        for m, fit in r.fits.items():
            if fit is None:
                lines.append(f"| {METRIC_LABELS[m]} | - | - | - | fewer than two GPU counts reached the target |")
            else:
                note = " (two points: the line passes through both)" if fit.n_points == 2 else ""
                iv = fit.slope_interval
                slope = f"{fit.slope:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "")
                lines.append(f"| {METRIC_LABELS[m]} | {fit.a:.4g} | {slope} | {fit.r2:.3f} | {fit.n_points}{note} |")
        lines += ["", "## Figure of Merit", "",
                  "FOM = prod_k (best_k / value_k)^w_k over samples, time and cost to target; 1 is best on all three.",
                  "", "| config | " + " | ".join(f"{p} ({PRIORITY_NOTES.get(p, '')})" for p in self.priorities) + " |",
                  "|---|" + "---|" * len(self.priorities)]
        for c in r.configs:
            lines.append(f"| {c.config} | " + " | ".join(f"{c.fom[p]:.3f}" for p in self.priorities) + " |")
        lines += ["", "Plots: `scaling.png` (log-log, with the fitted lines), `fom.png`.", ""]
        return "\n".join(lines)

    def _configs_csv(self, report: HardwareReport) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["config", "gpus_per_node", "nodes", "total_gpus", "trials", "best_trial", "final_score",
                    "samples_to_target", "time_to_target_s", "gpu_hours_to_target", "cost_to_target",
                    *(f"fom_{p}" for p in self.priorities), *(f"recommended_{p}" for p in self.priorities),
                    "params"])
        for c in report.configs:
            t = c.at_target or {}
            w.writerow([c.config, c.gpus_per_node, c.nodes, c.total_gpus, c.trials, c.best.trial_id, c.best.score,
                        t.get("samples", ""), t.get("time", ""), t.get("gpu_hours", ""), t.get("cost", ""),
                        *(c.fom[p] for p in self.priorities),
                        *(int(report.recommendations.get(p) == c.config) for p in self.priorities),
                        json.dumps(c.best.params, sort_keys=True)])
        return buf.getvalue()

    def _trials_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        names = sorted({k for t in self.trials for k in t.params})
        w.writerow(["config", "trial_id", "total_gpus", "final_score", "best_score", "samples", "time_s", "cost",
                    *names])
        for t in self.trials:
            f = t.final
            w.writerow([t.config, t.trial_id, t.total_gpus, t.score, t.best_score, f.get("samples"),
                        f.get("time_s"), f.get("cost"), *(t.params.get(k, "") for k in names)])
        return buf.getvalue()


# -- helpers -------------------------------------------------------------------


def _at_target(trial: TrialRecord, target: float) -> dict[str, float] | None:
    point = crossing(trial.curve, target)
    if point is None:
        return None
    out = {"samples": point.get("samples"), "time": point.get("time_s"),
           "gpu_hours": point.get("gpu_hours"), "cost": point.get("cost")}
    if out["gpu_hours"] is None and out["time"] is not None:
        out["gpu_hours"] = out["time"] * trial.total_gpus / 3600
    if not all(_is_number(v) for v in out.values()):
        return None
    return {k: float(v) for k, v in out.items()}


_CURVE_KEYS = ("score", "samples", "time_s", "gpu_hours", "cost", "training_iteration", "finished")


def _curve_point(row: dict) -> dict:
    return {k: row[k] for k in _CURVE_KEYS if k in row and row[k] is not None}


def _searched(config: dict) -> dict:
    """The searched values of a trial's config (the constants the sweep passes
    along are nested dicts or the recipe name)."""
    return {k: v for k, v in config.items() if not isinstance(v, (dict, list)) and k != "recipe"}


def _read_json_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by an interruption: keep what came before
    return rows


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _fmt_params(params: dict) -> str:
    parts = []
    for k, v in sorted(params.items()):
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def _plot_scaling(report: HardwareReport, path: Path) -> None:
    fig, axes = new_figure(ncols=len(METRICS), size=(5.0, 4.0))
    reached = [c for c in report.configs if c.at_target]
    for ax, m in zip(axes, METRICS):
        xs = [c.total_gpus for c in reached]
        ys = [c.at_target[m] for c in reached]
        ax.scatter(xs, ys, color="C0", zorder=3)
        for c, x, y in zip(reached, xs, ys):
            ax.annotate(c.config.removeprefix("hs_"), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        fit = report.fits.get(m)
        if fit is not None:
            grid = np.geomspace(min(xs), max(xs), 50)
            ax.plot(grid, fit.predict(grid), color="C1",
                    label=f"{fit.a:.3g} G^{fit.slope:+.2f} (R^2 {fit.r2:.2f})")
            ax.legend(fontsize=8)
        if xs and all(y > 0 for y in ys):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
        ax.set_xlabel("total GPUs")
        ax.set_ylabel(METRIC_LABELS[m])
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"to target score {report.target_score:.3g}")
    save_figure(fig, path, dpi=100)


def _plot_fom(report: HardwareReport, path: Path) -> None:
    priorities = list(report.recommendations)
    names = [c.config.removeprefix("hs_") for c in report.configs]
    fig, ax = new_figure(size=(max(5, 1.2 * len(names) * len(priorities) / 2), 4))
    width = 0.8 / max(len(priorities), 1)
    for i, p in enumerate(priorities):
        xs = np.arange(len(names)) + i * width
        ax.bar(xs, [c.fom.get(p, 0.0) for c in report.configs], width, label=p)
    ax.set_xticks(np.arange(len(names)) + width * (len(priorities) - 1) / 2, names)
    ax.set_ylabel("Figure of Merit")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=100)
