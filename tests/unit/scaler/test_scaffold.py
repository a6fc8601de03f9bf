"""Writing code/NNN_scaled/: complete or not at all, and runnable."""

import json
import os
import re
import subprocess
import sys

import pytest

from actors.scaler.planners import OfflinePlanner
from actors.scaler.discovery import scan
from actors.scaler.scaffold import (
    MARKER,
    OwnershipError,
    ScaffoldError,
    is_ours,
    set_aside,
    write_scaled_experiment,
)
from train.estimate import check_fits
from train.spec import TrainSpec

FACTS = {"benchmark": "mqar", "model_family": "gpt", "seq_len": 128, "value": 0.9, "params": 100_000}


@pytest.fixture(scope="module")
def plan():
    return OfflinePlanner(target_params=2_000_000).design("005", FACTS, title="GQA recall at 2M")


def test_writes_a_complete_runnable_folder(plan, tmp_path):
    est = check_fits(plan.to_train_spec())
    out = write_scaled_experiment(plan, tmp_path / "code", est, mve_path=tmp_path / "experiments/005_gqa")
    assert out == (tmp_path / "code/005_scaled").resolve()
    for rel in ("README.md", "config.yaml", "plan.json", "train.py", "models/README.md", "data/README.md",
                "scripts/run_2gpu.sh", "scripts/eval.sh"):
        assert (out / rel).is_file(), rel
    assert TrainSpec.from_yaml(out / "config.yaml") == plan.to_train_spec()
    readme = (out / "README.md").read_text()
    assert f"${est.cost_usd:.2f}" in readme and "## Baselines" in readme and "## Success criteria" in readme
    assert os.access(out / "scripts/run_2gpu.sh", os.X_OK)
    assert not [p for p in (tmp_path / "code").iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_generated_train_py_smoke_test_passes_in_a_scrubbed_environment(plan, tmp_path):
    out = write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}  # no keys, no Ray address
    proc = subprocess.run([sys.executable, "train.py", "--smoke"], cwd=out, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["checks"]["params"]["off_by"] <= 0.10


@pytest.mark.parametrize("override, message", [
    ("resources.gpus=4", "resources.gpus: asks for 4 GPUs; the hard limit is 2 GPUs per experiment"),
    ("budget.max_hours=7", "budget.max_hours: asks for 7 hours; the hard limit is 6 hours per experiment"),
])
def test_generated_train_py_holds_a_scaled_run_to_the_hard_limits(plan, tmp_path, override, message):
    """The scaffolded script trains with train.run's limits on, so a --set that
    breaks one is refused before Ray starts or anything is written."""
    out = write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    proc = subprocess.run([sys.executable, "train.py", "--set", override], cwd=out, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (out / "run").exists()


def test_a_finished_experiment_is_never_overwritten(plan, tmp_path):
    done = tmp_path / "005_scaled"
    done.mkdir()
    (done / "results.json").write_text('{"val_loss": 1.0}')
    with pytest.raises(ScaffoldError, match="finished scaled experiment"):
        write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    assert [p.name for p in done.iterdir()] == ["results.json"]


def _snapshot(folder):
    """Every byte and mode under `folder`, and every name (empty folders included)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mode)
            for p in sorted(folder.rglob("*"))}


def test_every_folder_written_carries_our_marker(plan, tmp_path):
    out = write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()), planner="offline")
    assert is_ours(out)
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "ray-autoresearch" and marker["mve_id"] == "005" and marker["planner"] == "offline"


def test_a_plan_file_cannot_forge_or_replace_the_marker(plan, tmp_path):
    forged = plan.model_copy(update={"files": {MARKER: '{"written_by": "someone else"}'}})
    out = write_scaled_experiment(forged, tmp_path, check_fits(forged.to_train_spec()))
    assert is_ours(out)


def test_a_folder_we_did_not_write_is_never_touched(plan, tmp_path):
    theirs = tmp_path / "005_scaled"
    (theirs / "notes").mkdir(parents=True)
    (theirs / "README.md").write_text("# planned by hand: 2 GPUs, 6 h\n")
    (theirs / "config.yaml").write_text("model: {d_model: 512}\n")
    (theirs / "notes" / "empty").mkdir()
    before = _snapshot(theirs)
    with pytest.raises(ScaffoldError, match="not written by ray-autoresearch .* it is yours"):
        write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    assert _snapshot(theirs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["005_scaled"]  # no temporary left, nothing set aside
    with pytest.raises(OwnershipError, match="not written by"):
        set_aside(theirs, "failed")
    assert _snapshot(theirs) == before


def test_a_leftover_of_ours_is_set_aside_not_deleted(plan, tmp_path):
    old = write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    (old / "run").mkdir()
    (old / "run" / "smoke.log").write_text("RuntimeError: CUDA out of memory\n")
    kept = _snapshot(old)
    out = write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    assert out == old and not (out / "run").exists() and is_ours(out)
    [aside] = tmp_path.glob(".005_scaled.replaced-*")
    assert _snapshot(aside) == kept  # moved whole, every byte kept
    assert [m.id for m in scan(tmp_path, tmp_path).mves] == ["005"]  # the scan ignores what is set aside


def test_set_aside_moves_ours_and_refuses_a_finished_one(plan, tmp_path):
    ours = write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    aside = set_aside(ours, "stopped by SIGINT")
    assert aside.parent == tmp_path and re.fullmatch(r"\.005_scaled\.stopped-by-sigint-\d{8}-\d{6}", aside.name)
    assert not ours.exists() and is_ours(aside)
    again = write_scaled_experiment(plan, tmp_path, check_fits(plan.to_train_spec()))
    (again / "results.json").write_text("{}")
    with pytest.raises(OwnershipError, match="finished"):
        set_aside(again, "failed")
    assert (again / "results.json").exists()


def test_a_failure_midway_leaves_nothing_behind(plan, tmp_path):
    # "models" as a file collides with the models/ folder the scaffold writes.
    bad = plan.model_copy(update={"files": {"models": "not a folder"}})
    with pytest.raises(OSError):
        write_scaled_experiment(bad, tmp_path, check_fits(bad.to_train_spec()))
    assert list(tmp_path.iterdir()) == []
