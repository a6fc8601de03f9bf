"""Hardware-scaling sweeps end to end on the session's local Ray (2 CPUs):
`python -m tune.hw_scaling --local`, interrupted and resumed, then its report;
and the cluster code path (one DDP worker per GPU of the shape) on gloo."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A tiny GPT and a short budget, so that 8 trials and a restart fit in well under a minute.
TINY = ["d_model=32", "n_layers=1", "n_heads=2", "seq_len=32", "seqs_per_gpu=2", "steps=20", "eval_interval=10",
        "eval_seqs=32", "max_bytes=200000", "target_score=0.2"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finished_trials(root: Path) -> dict[str, str]:
    """result.json text of every finished trial under root, by trial directory."""
    out = {}
    for path in root.glob("hs_g*n*/trial_*/result.json"):
        text = path.read_text()
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            last = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            continue
        if last.get("finished") == 1.0:
            out[str(path.parent.relative_to(root))] = text
    return out


@pytest.mark.slow
def test_local_sweep_is_interrupted_resumed_and_reported(ray_env, tmp_path, monkeypatch, capfd):
    out = tmp_path / "hw"
    cmd = [sys.executable, "-m", "tune.hw_scaling", "--local", "--gpu-counts", "1", "2", "--node-counts", "1",
           "--max-trials", "4", "--batch-size", "4", "--max-parallel-jobs", "4", "--out", str(out),
           # TPE: the GP's suggestions cost seconds each on a busy 2-core machine; the GP path
           # through OptunaSearch is tested in tests/unit/test_hw_space.py.
           "--sampler", "tpe"]
    for item in TINY:
        cmd += ["--set", item]
    env = {**ray_env, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}

    # 1. Start, and interrupt (Ctrl+C) as soon as the first trial, the defaults alone
    #    in the first round, has finished.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log1 = []
    for line in proc.stdout:
        log1.append(line)
        if line.startswith("[hs_g1n1] trial") and "finished (1/4)" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    log1 = "".join(log1) + rest
    assert proc.returncode == 130, log1
    assert "rerun the same command with --resume" in log1
    assert "[hs_g2n1]" not in log1  # it stopped, rather than going on to the next shape
    before = _finished_trials(out)
    assert before, log1

    # 2. Resume (in this process, on the same Ray): the same command with --resume
    #    finishes the sweeps and writes the report.
    from tune.hw_scaling import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    assert main([*cmd[3:], "--resume"]) == 0
    log2 = capfd.readouterr().out
    assert "resuming" in log2

    after = _finished_trials(out)
    for trial, text in before.items():
        assert after[trial] == text, f"{trial} was run again"
    for g in (1, 2):
        exp = out / f"hs_g{g}n1"
        trials = sorted(exp.glob("trial_*"))
        assert len(trials) == 4 and all(str(t.relative_to(out)) in after for t in trials), log2
        meta = json.loads((exp / "hw_meta.json").read_text())
        assert meta["min_batch"] == 2 * 32 * g and meta["mapping"].startswith("--local")

        # The first trial of each sweep is exactly the recipe's defaults.
        first = min(trials, key=lambda t: _rows(t / "result.json")[0]["started_at"])
        config = json.loads((first / "params.json").read_text())
        assert {k: config[k] for k in meta["default_point"]} == meta["default_point"]

        for t in trials:
            rows = _rows(t / "result.json")
            last = rows[-1]
            # Every trial's batch is min_batch * 2^k and its minibatch splits into whole sequences per GPU.
            batch, mini = last["batch_size"], last["minibatch_size"]
            assert batch // meta["min_batch"] in (1, 2, 4, 8) and batch % meta["min_batch"] == 0
            assert batch % mini == 0 and mini % (32 * g) == 0
            assert last["total_gpus"] == g
            assert last["samples"] == 20 * batch or last["stop_reason"] in ("diverged", "nan")
            for key in ("score", "samples", "time_s", "gpu_hours", "cost", "samples_to_target", "time_to_target"):
                assert key in last
            assert rows[0]["samples"] == 0  # the curve starts at the untrained model
            # CSV and TensorBoard logs of every trial.
            assert (t / "progress.csv").is_file() and list(t.glob("events.out.tfevents.*"))

    report = (out / "report.md").read_text()
    for priority in ("research", "development", "budget", "balanced"):
        line = next(line for line in report.splitlines() if line.startswith(f"- **{priority}**"))
        assert "**hs_g1n1**" in line or "**hs_g2n1**" in line, line
    rows = list(csv.DictReader((out / "hardware_scaling.csv").open()))
    assert [r["config"] for r in rows] == ["hs_g1n1", "hs_g2n1"]
    assert (out / "scaling.png").is_file() and (out / "fom.png").is_file()

    # `analyze DIR` rewrites the report from what is on disk.
    (out / "report.md").unlink()
    assert main(["analyze", str(out)]) == 0
    assert (out / "report.md").is_file() and "research" in capfd.readouterr().out


def test_one_ddp_worker_per_gpu_of_the_shape_on_gloo(ray_cluster):
    """The cluster path (workers in the trial's placement group, DDP) with CPU
    workers: 2 'GPUs' x 1 node train one model together."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from tune.recipes import load_recipe
    from tune.recipes.gpt import spec_for
    from tune.recipes.workers import run_worker_group

    recipe = load_recipe("tune.recipes.gpt:train")
    settings = recipe.with_overrides(TINY)
    space = recipe.space(2, 1, settings)
    hp = space.resolve(space.default_point())
    spec = spec_for(hp, settings, workers=2)
    pg = placement_group([{"CPU": 2}])
    ray.get(pg.ready(), timeout=60)
    reports = []
    try:
        run_worker_group(spec, 2, 1, reports.append, use_gpu=False, cpus_per_worker=1, placement_group=pg)
    finally:
        remove_placement_group(pg)
    final = reports[-1]
    assert final["world_size"] == 2 and [a["rank"] for a in final["gpu_allocation"]] == [0, 1]
    assert final["stop_reason"] == "max_steps" and final["tokens"] == 20 * hp["batch_size"]
    assert final["val_bpb"] < final["val_bpb_at_start"]
    assert len(reports) == 2  # the evaluation at step 10, then the final one
