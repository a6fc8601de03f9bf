"""ScalerAgents on a real local Ray instance, over a copy of the bundled examples."""

import json
import logging
import shutil
import time
import uuid
from pathlib import Path

import pytest
import ray

from actors.tracker.rules import LeaseState
from actors.shared.llm_scripted import ScriptedLLM
from actors.main import main
from actors.scaler.agent import REHEARSAL_STEPS, ScalerAgent
from actors.scaler.options import ScalerOptions
from actors.tracker.client import TrackerClient
from actors.tracker.owners import display_name
from actors.tracker.actor import stop_tracker
from tests.support import pristine_examples

ROOT = Path(__file__).resolve().parents[2]
POSITIVE, NEGATIVE = ["001", "002", "003"], ["004", "005", "007", "008"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture
def examples(tmp_path):
    shutil.copytree(pristine_examples(), tmp_path / "examples")
    return tmp_path / "examples"


def _options(examples: Path, **kw) -> ScalerOptions:
    return ScalerOptions(experiments=examples / "experiments", code=examples / "code", **kw)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_five_scalers_scale_every_positive_mve_exactly_once(ray_cluster, examples, tmp_path):
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    already_scaled = _snapshot(examples / "code/006_scaled")
    ledger_before = (examples / "experiments/EXPERIMENTS.md").read_text()
    argv = ["--scalers", "5", "--experiments", str(examples / "experiments"), "--code", str(examples / "code"),
            "--state", str(tmp_path / "state.parquet"), "--namespace", namespace, "--no-autoresearch"]
    try:
        assert main(argv) == 0
        tracker = ray.get_actor("work_tracker", namespace=namespace)
        records = {c.work_id: c for c in ray.get(tracker.list_claims.remote())}
        for mve in POSITIVE:
            results = json.loads((examples / f"code/{mve}_scaled/results.json").read_text())
            rec = records[f"scale:{mve}"]
            # Scaled once: one grant, and the results carry that grant's token and owner.
            assert rec.state is LeaseState.DONE and rec.attempts == 1
            assert (results["token"], results["owner"]) == (rec.token, rec.owner)
            assert display_name(rec.owner) == results["agent"]
            assert results["steps"] == REHEARSAL_STEPS and results["mode"].startswith("laptop rehearsal")
            assert results["val_loss"] < results["val_loss_at_start"]
        for mve in NEGATIVE:
            assert not list((examples / "code").glob(f"{mve}_*")) and f"scale:{mve}" not in records
        assert _snapshot(examples / "code/006_scaled") == already_scaled
        ledger = (examples / "experiments/EXPERIMENTS.md").read_text()
        assert ledger.startswith(ledger_before) and ledger.count("\n## ") == ledger_before.count("\n## ") + 3
        assert not [p for p in (examples / "code").iterdir() if p.name.startswith(".")]

        # A second run finds nothing new and changes nothing.
        written = {m: _snapshot(examples / f"code/{m}_scaled") for m in POSITIVE}
        next_token = ray.get(tracker.info.remote())["next_token"]
        assert main(argv) == 0
        assert {m: _snapshot(examples / f"code/{m}_scaled") for m in POSITIVE} == written
        assert ray.get(tracker.info.remote())["next_token"] == next_token
    finally:
        stop_tracker(namespace=namespace)


@pytest.mark.slow
def test_a_killed_agent_is_evicted_and_its_late_result_refused(make_tracker, examples):
    for mve in ("001", "003"):  # one scalable MVE keeps the test short
        shutil.rmtree(next((examples / "experiments").glob(f"{mve}_*")))
    handle = make_tracker(ttl_s=4, sweep_interval_s=0.5)
    client = TrackerClient(handle)
    agent_a = ray.remote(ScalerAgent).options(num_cpus=0).remote(
        "agent-a", _options(examples, tracker_namespace=make_tracker.namespace))
    agent_a.run_once.remote()
    deadline = time.time() + 120
    while not (examples / "code/002_scaled").exists():  # agent-a is mid-work
        assert time.time() < deadline, "agent-a never started writing"
        time.sleep(0.2)
    old = ray.get(handle.get.remote("scale:002"))
    assert display_name(old.owner) == "agent-a" and old.live
    ray.kill(agent_a, no_restart=True)
    while ray.get(handle.get.remote("scale:002")).state is not LeaseState.EVICTED:
        assert time.time() < deadline + 30, "the dead agent's lease was never evicted"
        time.sleep(0.2)

    agent_b = ScalerAgent("agent-b", _options(examples), tracker=handle)
    [outcome] = agent_b.run_once()
    assert outcome["status"] == "scaled", outcome
    rec = ray.get(handle.get.remote("scale:002"))
    assert display_name(rec.owner) == "agent-b" and rec.token > old.token and rec.attempts == 2
    results = json.loads((examples / "code/002_scaled/results.json").read_text())
    assert (results["agent"], results["token"]) == ("agent-b", rec.token)
    # Whatever agent-a would still send is fenced off by its old token.
    assert client.heartbeat("scale:002", old.token) is False
    assert client.release("scale:002", old.token, "done", {"val_loss": 0.0}) is False
    assert ray.get(handle.get.remote("scale:002")).result["val_loss"] == results["val_loss"]


def _plan_dict(**changes):
    plan = {
        "mve_id": "002", "title": "t", "rationale": "r",
        "model": {"family": "gpt", "d_model": 128, "n_layers": 2, "n_heads": 2},
        "target_params": 500_000, "benchmark": "bytes", "seq_len": 128, "optim": {"batch_size": 8},
        "max_steps": 100, "eval_interval": 50, "gpus": 1, "hours": 1,
        "baselines": [{"name": "lstm", "family": "rnn", "why": "w"}], "success_criteria": ["c"],
    }
    plan.update(changes)
    return plan


@pytest.mark.parametrize(
    "script, words",
    [
        ([_plan_dict(gpus=4), _plan_dict(hours=10)], "rejected twice: hours"),
        ([_plan_dict(model={"family": "gpt", "d_model": 130, "n_layers": 2, "n_heads": 4})], "plan refused"),
        ([_plan_dict(model={"family": "custom", "path": "models/missing.py"})], "plan refused"),
    ],
    ids=["llm-over-limits", "inconsistent-sizes", "missing-model-file"],
)
def test_bad_plans_release_the_claim_and_leave_nothing_behind(make_tracker, examples, script, words):
    for mve in ("001", "003"):
        shutil.rmtree(next((examples / "experiments").glob(f"{mve}_*")))
    handle = make_tracker()
    llm = ScriptedLLM(script, usage={"input_tokens": 1000, "output_tokens": 100})
    agent = ScalerAgent("agent", _options(examples, planner="single"), tracker=handle, llm=llm)
    [outcome] = agent.run_once()
    assert outcome["status"] == "failed" and words in outcome["reason"], outcome
    assert outcome["llm_tokens"] == 1100 * len(script)  # a rejected plan is billed too
    rec = ray.get(handle.get.remote("scale:002"))
    assert rec.state is LeaseState.FAILED and words in rec.result["reason"]
    assert sorted(p.name for p in (examples / "code").iterdir()) == ["006_scaled"]
    if len(script) == 2:  # the retry carried the first rejection back to Claude
        feedback = llm.requests[1]["messages"][-1]["content"][0]
        assert feedback["is_error"] and "gpus: asks for 4 GPUs" in feedback["content"]


def test_a_bug_crashes_the_agent_with_its_traceback_and_holds_nothing(make_tracker, examples, caplog):
    for mve in ("001", "003"):
        shutil.rmtree(next((examples / "experiments").glob(f"{mve}_*")))
    handle = make_tracker()
    agent = ScalerAgent("agent", _options(examples, planner="single"), tracker=handle,
                        llm=ScriptedLLM([TypeError("unsupported operand type(s) for +: 'int' and 'str'")]))
    with caplog.at_level(logging.ERROR, logger="actors.scaler.agent"):
        with pytest.raises(TypeError, match="unsupported operand"):
            agent.run_once()
    [record] = [r for r in caplog.records if r.name == "actors.scaler.agent" and r.levelno == logging.ERROR]
    assert "agent crashed on scale:002" in record.getMessage() and record.exc_info[0] is TypeError
    assert "Traceback" in caplog.text and "in _scale" in caplog.text
    assert not ray.get(handle.list_claims.remote("claimed"))
    rec = ray.get(handle.get.remote("scale:002"))
    assert rec.state is LeaseState.FAILED and "TypeError" in rec.result["reason"]
    assert sorted(p.name for p in (examples / "code").iterdir()) == ["006_scaled"]


def test_work_done_elsewhere_is_reported_not_silently_skipped(make_tracker, examples):
    handle = make_tracker()
    client = TrackerClient(handle)
    other = client.claim("scale:002", "agent-in-another-checkout")
    client.release("scale:002", other.token, "done")
    agent = ScalerAgent("agent", _options(examples, dry_run=True), tracker=handle)
    outcomes = {o["mve_id"]: o for o in agent.run_once()}
    assert outcomes["002"]["status"] == "skipped" and "results.json is missing" in outcomes["002"]["reason"]
    assert outcomes["001"]["status"] == outcomes["003"]["status"] == "planned"


def test_dry_run_plans_without_writing_or_holding_anything(make_tracker, examples):
    handle = make_tracker()
    agent = ScalerAgent("agent", _options(examples, dry_run=True), tracker=handle)
    outcomes = agent.run_once()
    assert sorted(o["mve_id"] for o in outcomes) == POSITIVE and {o["status"] for o in outcomes} == {"planned"}
    assert sorted(p.name for p in (examples / "code").iterdir()) == ["006_scaled"]
    assert not ray.get(handle.list_claims.remote("claimed"))
