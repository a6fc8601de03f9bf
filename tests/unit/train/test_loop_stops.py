"""The training loop's stop rules, run in this process (train.loop.LocalSession).

The same `run_loop` runs inside Ray Train workers; that path, and that its stop
reason reaches results.json, is tested end to end in
tests/integration/test_train_run.py (max_steps, NaN)."""

from pathlib import Path

from train.loop import LocalSession, run_loop
from train.spec import TrainSpec

TINY = Path(__file__).resolve().parents[3] / "examples/specs/tiny_cpu.yaml"


def final_report(*overrides: str) -> dict:
    spec = TrainSpec.from_yaml(TINY).with_overrides(["logging.tensorboard=false", "logging.wandb_project=",
                                                     *overrides])
    session = LocalSession("cpu")
    run_loop(spec, session)
    return session.reports[-1]


def test_stops_early_when_the_target_is_reached():
    r = final_report("budget.target=6.5", "budget.eval_interval=20")
    assert r["stop_reason"] == "target"
    assert r["step"] < 150 and r["val_bpb"] <= 6.5


def test_stops_when_validation_stops_improving():
    # lr 0: the model never changes, so no evaluation beats the first.
    r = final_report("optim.lr=0", "budget.eval_interval=10", "budget.patience=2")
    assert r["stop_reason"] == "no_improvement" and r["step"] == 30


def test_wall_clock_deadline_stops_the_run():
    r = final_report("budget.max_steps=1000000", f"budget.max_hours={3 / 3600}")
    assert r["stop_reason"] == "deadline"
    assert 3 <= r["wall_s"] < 30 and r["step"] < 1000000
    assert r["val_loss"] is not None  # evaluated once more at the cut
