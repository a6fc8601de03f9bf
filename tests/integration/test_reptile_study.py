"""`python -m studies.reptile`, run as a user would, on the session's Ray."""

import csv
import json
import logging
import os
import subprocess
import sys

import pytest

from studies.reptile.ntasks import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The real Tune path at toy size: three N_tasks values, one seed, 80 meta-steps.
# Half a CPU per trial lets all three trials share the session's 2 CPUs at once.
TINY = ["--n-tasks", "3", "10", "30", "--seeds", "0", "--meta-steps", "80", "--eval-interval", "40",
        "--test-tasks", "60", "--eval-tasks", "30", "--bootstrap", "200", "--cpus-per-trial", "0.5"]


def run(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "studies.reptile", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_the_sweep_runs_on_tune_writes_every_file_and_resumes(ray_env, tmp_path, monkeypatch, caplog):
    out = tmp_path / "study"
    proc = run([*TINY, "--out", str(out)], ray_env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr

    for name in ("scaling_law_results.csv", "power_law_fit.json", "scaling_law_plot.png", "baseline_comparison.png",
                 "summary_report.json"):
        assert (out / name).is_file(), name
    for n in (3, 10, 30):
        for name in ("config.json", "train_stats.csv", "eval_stats.csv", "final_result.json"):
            assert (out / f"ntasks_{n}_seed_0" / name).is_file(), (n, name)
        steps = [int(r["step"]) for r in csv.DictReader((out / f"ntasks_{n}_seed_0" / "eval_stats.csv").open())]
        assert steps == [0, 40, 80]
    # Each run was a Tune trial with its own folder in the experiment.
    experiments = list((out / "ray_results").iterdir())
    assert len(experiments) == 1
    assert len([p for p in experiments[0].iterdir() if p.is_dir() and p.name.startswith("reptile_trial")]) == 3

    rows = list(csv.DictReader((out / "scaling_law_results.csv").open()))
    assert sorted(int(r["n_tasks"]) for r in rows) == [3, 10, 30]
    # Meta-learning beats fine-tuning from scratch (even with its steps and lr tuned) on the held-out tasks.
    for r in rows:
        assert float(r["meta_test_loss"]) < float(r["scratch_tuned_loss"]) - 0.03, r
        assert float(r["meta_test_loss"]) < float(r["zero_shot_loss"])

    fit = json.loads((out / "power_law_fit.json").read_text())
    assert fit["law"] == "L_meta = a * N_tasks^-beta"
    assert fit["beta"] > 0 and 0 <= fit["r2"] <= 1
    lo, hi = fit["intervals"]["beta"]
    assert lo <= fit["beta"] <= hi
    summary = json.loads((out / "summary_report.json").read_text())
    assert summary["meta_beats_scratch_at_every_n_tasks"] is True
    assert summary["power_law"]["beta"] == fit["beta"]
    assert (out / "scaling_law_plot.png").stat().st_size > 10_000
    assert "power law: L_meta" in proc.stdout

    # --resume skips the finished runs: nothing is retrained (so no Ray is needed and
    # it runs in this process), the analysis is redone.
    final = out / "ntasks_10_seed_0" / "final_result.json"
    before = final.stat().st_mtime_ns
    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")  # what main() would set, undone after the test
    caplog.set_level(logging.INFO, logger="studies.reptile.ntasks")
    assert main([*TINY, "--out", str(out), "--resume"]) == 0
    assert "every run is done already" in caplog.text
    assert final.stat().st_mtime_ns == before
    assert json.loads((out / "summary_report.json").read_text())["runs_skipped_as_done"] == 3
