"""The training engine end to end on Ray Train (V2), CPU workers on local Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.run import RESULT_KEYS, run
from train.spec import TrainSpec

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples/specs/tiny_cpu.yaml"


def tiny(*overrides: str) -> TrainSpec:
    return TrainSpec.from_yaml(TINY).with_overrides(["logging.tensorboard=false", *overrides])


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_tiny_spec_learns_and_writes_results_and_ledger(ray_cluster, tmp_path):
    spec = TrainSpec.from_yaml(TINY).with_overrides(["budget.max_steps=60", "budget.eval_interval=30"])
    results = run(spec, out_dir=tmp_path / "out", ledger=tmp_path / "EXPERIMENTS.md")
    assert results["val_loss"] < results["val_loss_at_start"] - 1.0, "no better than the untrained model"
    assert results["val_bpb"] < results["val_bpb_at_start"]
    assert results["stop_reason"] == "max_steps" and results["steps"] == 60
    assert results["tokens"] == 60 * 16 * 64
    on_disk = json.loads((tmp_path / "out/results.json").read_text())
    assert all(on_disk.get(k) is not None for k in RESULT_KEYS), on_disk
    assert on_disk["peak_memory_mb"] > 0 and on_disk["tokens_per_s"] > 0 and on_disk["cost_usd"] == 0
    ledger = (tmp_path / "EXPERIMENTS.md").read_text()
    for section in ("Configuration", "GPU allocation", "Results", "Observations", "Artifacts", "Command"):
        assert f"### {section}" in ledger
    assert "| stop_reason | max_steps |" in ledger
    assert list((tmp_path / "out/tensorboard").glob("events.out.tfevents.*"))
    # The saved checkpoint holds the final weights: evaluating it gives the run's final numbers.
    from train.evaluate import evaluate_checkpoint

    again = evaluate_checkpoint(spec, results["checkpoint"])
    assert again["val_loss"] == pytest.approx(results["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_two_cpu_workers_train_with_ddp_and_gradient_accumulation(ray_cluster, tmp_path):
    results = run(tiny("resources.cpu_workers=2", "optim.grad_accum=2", "budget.max_steps=30", "budget.eval_interval=15"),
                  out_dir=tmp_path, ledger=None)
    assert results["world_size"] == 2 and [a["rank"] for a in results["gpu_allocation"]] == [0, 1]
    assert results["tokens"] == 30 * 16 * 64 * 2 * 2  # steps x batch x seq x accumulation x workers
    assert results["val_loss"] < results["val_loss_at_start"]


NAN_MODEL = '''
import torch
from torch import nn

class BlowsUp(nn.Module):
    """Learns for a few steps, then its logits turn to NaN."""
    def __init__(self, vocab_size, seq_len):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, 32)
        self.head = nn.Linear(32, vocab_size)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
    def forward(self, idx):
        if self.training:
            self.calls += 1
        out = self.head(self.emb(idx))
        return out * float("nan") if self.calls > 5 else out
'''


@pytest.mark.slow
def test_nan_loss_stops_the_run_without_a_poisoned_checkpoint(ray_cluster, tmp_path):
    model_file = tmp_path / "blows_up.py"
    model_file.write_text(NAN_MODEL)
    spec = tiny("model.family=custom", f"model.path={model_file}", "budget.eval_interval=3")
    results = run(spec, out_dir=tmp_path / "out", ledger=tmp_path / "ledger.md")
    assert results["stop_reason"] == "nan" and results["steps"] == 6
    assert "NaN" in (tmp_path / "ledger.md").read_text()
    # The last checkpoint is the healthy one from step 3, not the NaN state.
    assert json.loads((Path(results["checkpoint"]) / "state.json").read_text())["step"] == 3


def test_cli_runs_a_spec_with_overrides(ray_env, tmp_path):
    env = {**ray_env, "WANDB_MODE": "disabled"}
    out = subprocess.run(
        [sys.executable, "-m", "train.run", str(TINY), "--set", "budget.max_steps=20", "--set", "budget.eval_interval=10",
         "--out", str(tmp_path / "out"), "--ledger", str(tmp_path / "ledger.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "out/results.json").read_text())["steps"] == 20
    assert "--set budget.max_steps=20" in (tmp_path / "ledger.md").read_text()


SIBLING = """
from torch import nn

class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
    def forward(self, x):
        return x + self.fc(x).relu()
"""

MY_MODEL = """
from torch import nn
from blocks import Block   # a file beside this one

class Tiny(nn.Module):
    def __init__(self, vocab_size, seq_len, width=32):
        super().__init__()
        self.emb, self.block, self.head = nn.Embedding(vocab_size, width), Block(width), nn.Linear(width, vocab_size)
    def forward(self, idx):
        return self.head(self.block(self.emb(idx)))
"""


def test_custom_model_paths_resolve_against_the_spec_folder_and_work_in_workers(ray_cluster, tmp_path, monkeypatch):
    exp = tmp_path / "my_experiment"
    exp.mkdir()
    (exp / "my_model.py").write_text(MY_MODEL)
    (exp / "blocks.py").write_text(SIBLING)
    text = TINY.read_text().replace("  family: gpt\n", "  family: custom\n  path: my_model.py\n  kwargs: {width: 24}\n")
    for key in ("d_model: 64", "n_layers: 2", "n_heads: 4", "n_kv_heads: 2"):
        text = text.replace(f"  {key}\n", "")
    (exp / "spec.yaml").write_text(text)
    # Read from another directory than the spec's: the path is the spec file's. The
    # workers, which run in a directory of their own, build the model from the
    # files that came with the job.
    monkeypatch.chdir(tmp_path)
    spec = TrainSpec.from_yaml("my_experiment/spec.yaml").with_overrides([
        "budget.max_steps=4", "budget.eval_interval=2", "budget.eval_batches=1", "logging.tensorboard=false"])
    results = run(spec, out_dir=tmp_path / "out", ledger=None)
    assert results["steps"] == 4 and results["params"] == 256 * 24 + 24 * 24 + 24 + 24 * 256 + 256
    assert results["val_loss"] < results["val_loss_at_start"]
    # A path that is not beside the spec is refused before Ray starts, in one line.
    (exp / "spec.yaml").write_text(text.replace("path: my_model.py", "path: models/missing.py"))
    out = subprocess.run([sys.executable, "-m", "train.run", str(exp / "spec.yaml"), "--out", str(tmp_path / "o2")],
                         cwd=ROOT, env={**os.environ, "RAY_ADDRESS": "local"}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert f"model.path: {exp}/models/missing.py is not a file (relative paths are taken from {exp})" in out.stderr
    assert "Started a local Ray instance" not in out.stderr and not (tmp_path / "o2").exists()


BIG_MODEL = ["--set", "model.d_model=8192", "--set", "model.n_layers=64", "--set", "model.n_heads=64",
             "--set", "model.n_kv_heads=null", "--set", "data.seq_len=2048"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scaled", "--set", "resources.gpus=4"], "resources.gpus: asks for 4 GPUs; the hard limit is 2 GPUs"),
        (["--scaled", "--set", "budget.max_hours=7"], "budget.max_hours: asks for 7 hours; the hard limit is 6 hours"),
        (["--scaled", "--set", "resources.gpus=1", *BIG_MODEL], "GB per GPU; the hard limit is 80 GB"),
        (["--set", "optim.lrr=1"], "has no field 'optim.lrr'"),
        (["--scaled", *BIG_MODEL], "training on CPU needs"),
        (["--storage", "s3://AKIA:hunter2@bucket/x"], "credentials do not belong in the URI"),
    ],
    ids=["gpus", "hours", "memory", "unknown-field", "cpu-memory", "storage-credentials"],
)
def test_cli_refuses_bad_specs_before_starting_anything(tmp_path, args, message, capsys, monkeypatch):
    # In-process (a subprocess per case costs seconds of imports): Ray must not be
    # started, so starting it fails the test; the shell's view is the case below.
    import ray

    from train.run import main

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a spec that should have been refused")

    monkeypatch.setattr(ray, "init", no_ray)
    code = main([str(TINY), *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and not (tmp_path / "out").exists()
    assert "hunter2" not in err  # a credential written into --storage is never echoed


def test_the_shell_sees_one_error_line_and_exit_2_for_a_spec_over_the_limits(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "train.run", str(TINY), "--scaled", "--set", "resources.gpus=4",
         "--out", str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, "RAY_ADDRESS": "local"}, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "resources.gpus: asks for 4 GPUs; the hard limit is 2 GPUs" in out.stderr
    assert "Started a local Ray instance" not in out.stderr and not (tmp_path / "out").exists()
