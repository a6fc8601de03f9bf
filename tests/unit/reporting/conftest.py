"""An "overnight" on disk, written by the system's own writers: the bundled MVEs, a
scaled folder from the scaffold, ledger entries from train.ledger, results.tsv
and notes.md from the research memory, a tracker snapshot from the store, a
hardware-sweep report and a scaling-law fit from analysis/."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import FakeClock, pristine_examples

SCRIPT = "<script>window.__injected = 1</script>"


@dataclass
class Overnight:
    root: Path
    experiments: Path
    code: Path
    ledger: Path
    research: Path
    sweeps: Path
    state: Path


def write_scaled(code: Path, mve: Path, mve_id: str, *, planner: str = "offline", llm_tokens=(0, 0),
                 llm_cost: float = 0.0, val_bpb: float = 1.3021, gpu_hours: float = 0.5, cost: float = 1.0) -> Path:
    """code/NNN_scaled as a ScalerAgent leaves it: the scaffold's folder, then results.json
    with the fields `ScalerAgent._train_and_record` writes."""
    import json

    from actors.scaler.planners import OfflinePlanner
    from actors.scaler.scaffold import write_scaled_experiment
    from analysis.files import atomic_write_json
    from train.estimate import check_fits

    plan = OfflinePlanner().design(mve_id, json.loads((mve / "results.json").read_text()))
    est = check_fits(plan.to_train_spec())
    folder = write_scaled_experiment(plan, code, est, planner, mve)
    atomic_write_json(folder / "results.json", {
        "mve_id": mve_id, "agent": "scaler-1", "token": 7, "mode": "full", "planner": planner,
        "plan": {"title": plan.title, "params": est.params, "gpus": plan.gpus, "hours": plan.hours,
                 "projected_gpu_hours": est.gpu_hours, "projected_cost_usd": est.cost_usd},
        "llm": {"input_tokens": llm_tokens[0], "output_tokens": llm_tokens[1], "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "cost_usd": llm_cost, "requests": 1 if llm_tokens[0] else 0},
        "val_loss": 0.9025, "val_bpb": val_bpb, "steps": 1000, "gpu_hours": gpu_hours, "cost_usd": cost,
        "stop_reason": "max_steps",
    })
    return folder


def ledger_entry(title: str, gpu_hours: float, cost: float, observations=("no anomalies",)):
    from train.ledger import LedgerEntry

    return LedgerEntry(title=title, config={"name": title.split(":")[0], "model": {"d_model": 512}},
                       gpu_allocation=[], results={"val_loss": 0.9025, "gpu_hours": gpu_hours, "cost_usd": cost},
                       observations=list(observations), artifacts={"results": "run/results.json"},
                       command="python train.py", timestamp=1_700_000_000)


def write_research(repo: Path, extra_row_description: str = "") -> None:
    """results.tsv and notes.md as the loop writes them: two baseline runs, a keep,
    three discards in one direction (a dead end), a crash, a second keep."""
    from actors.research.memory import append_result, render_notes
    from actors.research.rules import ResultRow
    from analysis.files import atomic_write_text

    repo.mkdir(parents=True, exist_ok=True)
    rows = [
        ResultRow(0, "a" * 40, 1.50, 0.6, "keep", "baseline", "baseline", "baseline run 1 of 2"),
        ResultRow(0, "a" * 40, 1.52, 0.6, "keep", "baseline", "baseline", "baseline run 2 of 2"),
        ResultRow(1, "b" * 40, 1.40, 0.7, "keep", "tweak", "MODEL_DIM up", "MODEL_DIM 64 -> 96"),
        ResultRow(2, "c" * 40, 1.45, 0.7, "discard", "tweak", "LEARNING_RATE up", "LEARNING_RATE x2"),
        ResultRow(3, "d" * 40, 1.46, 0.7, "discard", "tweak", "LEARNING_RATE up", "LEARNING_RATE x3"),
        ResultRow(4, "e" * 40, 1.47, 0.7, "discard", "tweak", "LEARNING_RATE up",
                  extra_row_description or "LEARNING_RATE x4"),
        ResultRow(5, "f" * 40, None, None, "crash", "structural", "attention", "swap attention"),
        ResultRow(6, "9" * 40, 1.35, 0.8, "keep", "tweak", "NUM_LAYERS up", "NUM_LAYERS 2 -> 3"),
    ]
    for r in rows:
        append_result(repo / "results.tsv", r)
    atomic_write_text(repo / "notes.md", render_notes(branch="autoresearch/test", file="train_gpt.py", rows=rows,
                                                      ideas=[], log_text="", cap_bytes=16_000_000))
    (repo / ".autoresearch" / "logs" / "test").mkdir(parents=True, exist_ok=True)
    (repo / ".autoresearch" / "current").write_text("autoresearch/test\n")


def write_state(path: Path) -> None:
    """A tracker snapshot: 002 done, 001 failed with a reason, 003 held now, one eviction."""
    from actors.tracker.rules import LeaseTable
    from actors.tracker.store import SnapshotStore

    clock = FakeClock(1_700_000_000)
    table = LeaseTable(ttl_s=60, clock=clock)
    done = table.claim("scale:002", "scaler-1")
    table.release("scale:002", done.token, "done", {"val_loss": 0.9})
    failed = table.claim("scale:001", "scaler-2")
    table.release("scale:001", failed.token, "failed", {"reason": "smoke test failed: out of memory"})
    table.claim("autoresearch:/repo:autoresearch/test", "autoresearch@pid:host:1")
    table.evict_all_live()
    clock.advance(5)
    table.claim("scale:003", "scaler-3")
    SnapshotStore(path).write(*table.snapshot())


def write_sweep(folder: Path) -> None:
    """A hardware-sweep report (analysis.hardware) and a power-law fit with its plot."""
    import numpy as np

    from analysis.hardware import HardwareScalingAnalyzer, TrialRecord
    from analysis.scaling_laws import fit_power_law

    analyzer = HardwareScalingAnalyzer(target_performance=0.9)
    for g in (1, 2, 4):
        t_star = 3600.0 * g ** -0.8
        curve = [{"score": 0.8 * f, "samples": 1e6 * g ** 0.5 * f / 0.9, "time_s": t_star * f / 0.9,
                  "cost": g * t_star * f / 0.9 / 3600 * 2.0} for f in (0.25, 0.5, 0.9, 1.0)]
        analyzer.add_trial(TrialRecord(f"hs_g{g}n1", g, 1, f"t{g}", {"lr": 0.001}, curve))
    analyzer.write(analyzer.analyze(), folder / "hw")
    n = np.array([50, 100, 300, 1000] * 2, float)
    fit = fit_power_law(n, 3.0 * n ** -0.3 * (1 + 0.01 * np.tile([1, -1], 4)), n_bootstrap=50, seed=0)
    (folder / "study").mkdir(parents=True)
    fit.to_json(folder / "study" / "power_law_fit.json")
    fit.plot(folder / "study" / "scaling_law_plot.png")
    tune_state = folder / "study" / "ray_results" / "exp"  # Tune's own files: not results to show
    tune_state.mkdir(parents=True)
    (tune_state / "basic-variant-state.json").write_bytes(b"\x80\x04 pickled")


def _layout(root: Path) -> Overnight:
    ex = root / "examples"
    return Overnight(root, ex / "experiments", ex / "code", ex / "experiments" / "EXPERIMENTS.md",
                     root / "research", root / "sweeps", root / "state" / "work_tracker.parquet")


@pytest.fixture(scope="session")
def _overnight_once(tmp_path_factory) -> Path:
    from train.ledger import append_entry

    root = tmp_path_factory.mktemp("overnight")
    o = _layout(root)
    shutil.copytree(pristine_examples(), root / "examples")
    write_scaled(o.code, next(o.experiments.glob("002_*")), "002", planner="anthropic:claude-sonnet-4-5",
                 llm_tokens=(12_000, 3_000), llm_cost=0.081)
    append_entry(o.ledger, ledger_entry("002_scaled: gpt 25.30M on bytes", 0.5, 1.0))
    append_entry(o.ledger, ledger_entry("tiny_cpu: gpt 0.10M on bytes", 0.25, 0.5))
    write_research(o.research)
    write_state(o.state)
    write_sweep(o.sweeps)
    return root


@pytest.fixture
def overnight(_overnight_once, tmp_path) -> Overnight:
    """A fresh copy for each test (written once per session: the writers take seconds)."""
    shutil.copytree(_overnight_once, tmp_path / "overnight", symlinks=True)
    return _layout(tmp_path / "overnight")
