"""Scaled experiments that test the MVE's idea (issue 16) and what happens when
Claude fails (issue 14, item 8): ScalerAgents on the shared local Ray, the real
Anthropic SDK on a mock transport, and research folders whose models are not
GPTs (tests/fixtures/mves)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.main import format_summary, main
from actors.scaler.agent import ScalerAgent
from actors.scaler.discovery import find_mves
from actors.scaler.options import ScalerOptions
from actors.scaler.planning import Planning
from actors.tracker.client import LeaseLost, TrackerClient
from tests.support import pristine_examples
from tests.support_claude import FAKE_KEY, MODEL, USAGE, MessagesAPI, billed, client, overloaded, tool_calls

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mves"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)  # the agents here get their client handed in
    monkeypatch.setenv("WANDB_MODE", "disabled")


def research(tmp_path: Path, *keep: str) -> Path:
    root = tmp_path / "research"
    shutil.copytree(FIXTURES, root)
    for folder in [*(root / "experiments").iterdir(), *(root / "code").iterdir()]:
        if folder.is_dir() and folder.name[:3] not in keep:
            shutil.rmtree(folder)
    return root


def options(root: Path, **kw) -> ScalerOptions:
    # offline: the verdicts are read by the heuristics (a Claude judge would call the real API with the fake
    # key); the planner is the Claude client each test hands the agent, over its scripted API.
    return ScalerOptions(experiments=root / "experiments", code=root / "code", smoke_timeout_s=240,
                         offline=True, **kw)


# --------------------------------------------------------------------------- the agentic session

BUGGY = '''import torch
from torch import nn


class DecayLM(nn.Module):
    """A gated cumulative-decay mixer per layer (the MVE's diagonal SSM, simplified)."""

    def __init__(self, vocab_size, d_model=64, n_layers=2, d_state=8):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.mix = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))
        self.decay = nn.Parameter(torch.full((n_layers, d_state), -1.0))
        self.head = nn.Linear(2 * d_model, vocab_size)

    def forward(self, idx):
        x = self.embed(idx)
        for i, mix in enumerate(self.mix):
            x = x + torch.cumsum(mix(x), dim=1) * torch.sigmoid(self.decay[i]).mean() / idx.size(1)
        return self.head(x)
'''
PLAN = {
    "mve_id": "009", "title": "DecayLM (the MVE's SSM) at 42k params on bytes",
    "rationale": "The MVE's diagonal SSM beat a GPT at 0.4M; test it again against a same-size GPT.",
    "model": {"family": "custom", "path": "models/model.py", "class_name": "DecayLM", "d_model": 64, "n_layers": 2,
              "kwargs": {"d_model": 64, "n_layers": 2, "d_state": 8}},
    "target_params": 41_360, "benchmark": "bytes", "seq_len": 64, "optim": {"batch_size": 8, "lr": 1e-3},
    "max_steps": 200, "eval_interval": 50, "gpus": 1, "hours": 1,
    "baselines": [{"name": "gpt-same-size", "family": "gpt", "why": "is the SSM what helps?"}],
    "success_criteria": ["val_bpb below the same-size GPT's"],
}


@pytest.mark.slow
def test_a_scripted_agentic_session_fixes_its_failing_smoke_test_and_leaves_its_transcript(make_tracker, tmp_path):
    root = research(tmp_path, "009")
    fix = {"path": "models/model.py", "old_text": "nn.Linear(2 * d_model, vocab_size)",
           "new_text": "nn.Linear(d_model, vocab_size)"}
    api = MessagesAPI(
        tool_calls(("list_files", {})),
        tool_calls(("read_file", {"path": "code/009/ssm_lm.py"}), text="The MVE's model is a diagonal SSM."),
        tool_calls(("write_file", {"path": "models/model.py", "content": BUGGY}),
                   ("run_smoke_test", {"scale_plan": PLAN})),
        tool_calls(("edit_file", fix)),
        tool_calls(("run_smoke_test", {"scale_plan": PLAN})),
        tool_calls(("submit_scale_plan", PLAN)),
    )
    agent = ScalerAgent("agent", options(root, launch=False), tracker=make_tracker(), llm=client(api))
    [outcome] = agent.run_once()

    assert outcome["status"] == "scaffolded", outcome  # written, and the agent's own smoke test passed
    assert outcome["planner"] == f"{MODEL} (agentic session)"
    assert outcome["llm_tokens"] == 6 * billed(USAGE)  # every billed token of every turn, cache included
    folder = root / "code/009_scaled"
    assert (folder / "models/model.py").read_text() == BUGGY.replace(fix["old_text"], fix["new_text"])
    assert "custom" in (folder / "config.yaml").read_text()
    # Claude saw the failure: the shape error came back as the smoke test's result
    [failed] = [r for r in api.tool_results(3) if r["is_error"]]
    assert "mat1 and mat2 shapes cannot be multiplied" in failed["content"]
    assert json.loads(api.tool_results(5)[0]["content"])["passed"] is True
    # the transcript, in the scaled folder: every call and result, no secret
    transcript = json.loads((folder / "agent/transcript.json").read_text())
    smokes = [e for e in transcript if e.get("name") == "run_smoke_test"]
    assert [e["is_error"] for e in smokes] == [True, False]
    assert "shapes cannot be multiplied" in smokes[0]["result"] and '"passed": true' in smokes[1]["result"]
    calls = [b["name"] for e in transcript if e["role"] == "assistant" for b in e["blocks"] if b["type"] == "tool_use"]
    assert calls == ["list_files", "read_file", "write_file", "run_smoke_test", "edit_file", "run_smoke_test",
                     "submit_scale_plan"]
    assert FAKE_KEY not in (folder / "agent/transcript.json").read_text()
    assert not [p.name for p in (root / "code").iterdir() if p.name.startswith(".")]  # no staging or trial left


def test_a_lease_lost_mid_session_stops_it_at_once(make_tracker, tmp_path):
    root = research(tmp_path, "009")
    client_ = TrackerClient(make_tracker())
    lease = client_.hold("scale:009", "agent-x", heartbeat_s=0.05).acquire()

    def taken_over(n, body):
        client_.release("scale:009", lease.token, "abandoned", {"reason": "taken over"})
        deadline = time.time() + 10
        while not lease.lost.is_set() and time.time() < deadline:  # the heartbeat thread notices
            time.sleep(0.02)
        return tool_calls(("write_file", {"path": "models/model.py", "content": BUGGY}))

    api = MessagesAPI(tool_calls(("list_files", {})), taken_over, tool_calls(("list_files", {})))
    [mve] = [m for m in find_mves(root / "experiments", root / "code") if m.id == "009"]
    try:
        with pytest.raises(LeaseLost):
            Planning(options(root), client(api)).plan(mve, lease)
    finally:
        lease.finish("abandoned")  # refused (it is gone); stops the heartbeat thread
    assert api.calls == 2  # nothing sent after the lease went
    [aside] = [p for p in (root / "code").iterdir() if p.name.startswith(".009_scaled.lost-")]
    assert not (aside / "models/model.py").exists()  # the write Claude asked for was not done
    assert [e["name"] for e in json.loads((aside / "agent/transcript.json").read_text()) if e["role"] == "tool"] \
        == ["list_files"]


BENCH = '''import json, sys, time


def run(n, iters):
    a = [[float(i * j % 7) for j in range(n)] for i in range(n)]
    t0 = time.perf_counter()
    for _ in range(iters):
        [[sum(x * y for x, y in zip(row, col)) for col in zip(*a)] for row in a]
    return {"n": n, "seconds_per_iter": (time.perf_counter() - t0) / iters}


if __name__ == "__main__":
    print(json.dumps(run(8, 2) if "--smoke" in sys.argv else run(24, 3)))
'''


def test_a_kernel_benchmark_is_scaled_as_a_benchmark_job_with_claude(make_tracker, tmp_path):
    root = research(tmp_path, "012")
    plan = {"mve_id": "012", "title": "Fused RMSNorm sweep", "rationale": "1.8x at d=4096; check all shapes.",
            "command": ["python", "bench.py"], "smoke_command": ["python", "bench.py", "--smoke"], "gpus": 1,
            "hours": 0.5, "success_criteria": [">= 1.5x eager at every d"]}
    api = MessagesAPI(tool_calls(("write_file", {"path": "bench.py", "content": BENCH}),
                                 ("run_smoke_test", {"benchmark_plan": plan})),
                      tool_calls(("submit_benchmark_plan", plan)))
    agent = ScalerAgent("agent", options(root, gpus_available=False), tracker=make_tracker(), llm=client(api))
    [outcome] = agent.run_once()
    assert outcome["status"] == "scaled", outcome
    results = json.loads((root / "code/012_scaled/results.json").read_text())
    assert results["kind"] == "benchmark" and results["returncode"] == 0
    assert results["mode"].startswith("laptop rehearsal") and results["metrics"]["n"] == 8  # no GPU: the smoke run
    assert (root / "code/012_scaled/scripts/run.sh").is_file()


# --------------------------------------------------------------------------- offline: the MVE's own model


@pytest.mark.slow
def test_offline_the_agent_scales_the_mves_own_ssm_and_its_folder_trains_it_at_the_planned_size(
        make_tracker, ray_env, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    root = research(tmp_path, "009", "012")
    agent = ScalerAgent("agent", options(root, launch=False, target_params=3_000_000), tracker=make_tracker())
    outcomes = {o["mve_id"]: o for o in agent.run_once()}
    assert outcomes["012"]["status"] == "declined" and "kernel benchmark" in outcomes["012"]["reason"]
    assert "needs the LLM planner" in outcomes["012"]["reason"] and not (root / "code/012_scaled").exists()
    assert outcomes["009"]["status"] == "scaffolded", outcomes["009"]  # written, and its smoke test passed
    folder = root / "code/009_scaled"
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["model"]["family"] == "custom" and plan["model"]["class_name"] == "SSMLM"
    assert plan["model"]["kwargs"]["d_state"] == 16  # from the MVE's results.json
    assert (folder / "models/ssm_lm.py").read_text() == (root / "code/009/ssm_lm.py").read_text()
    assert (folder / "models/layers.py").is_file() and plan["baselines"][0]["name"].startswith("gpt-d")
    assert "its own model, code/009/ssm_lm.py:SSMLM" in (folder / "models/README.md").read_text()
    assert abs(plan["target_params"] - 3_000_000) / 3e6 < 0.05  # planned at the target, counted exactly
    # the folder's own train.py trains that model at the planned size (on CPU here, two steps)
    env = {k: v for k, v in ray_env.items() if k != "ANTHROPIC_API_KEY"}
    sets = ["budget.max_steps=2", "budget.eval_interval=1", "budget.eval_batches=1", "optim.batch_size=2",
            "resources.gpus=0", "precision=fp32", "logging.tensorboard=false"]
    proc = subprocess.run([sys.executable, "train.py", *[a for s in sets for a in ("--set", s)], "--out", "full"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = json.loads((folder / "full/results.json").read_text())
    assert full["params"] == plan["target_params"] and full["steps"] == 2
    assert full["val_loss"] < full["val_loss_at_start"]


# --------------------------------------------------------------------------- when Claude fails (issue 14, item 8)


def test_when_claude_fails_the_agent_falls_back_offline_and_says_so(make_tracker, tmp_path, caplog):
    root = research(tmp_path, "012")
    shutil.copytree(next((pristine_examples() / "experiments").glob("002_*")),
                    root / "experiments/002_rope_base_bytes")  # a GPT recipe: planned offline without a probe
    # One turn is billed, then the API is overloaded for good (the SDK retries each request twice).
    api = MessagesAPI(tool_calls(("list_files", {})), *[overloaded()] * 6)
    agent = ScalerAgent("agent", options(root, dry_run=True), tracker=make_tracker(),
                        llm=client(api, max_retries=2))
    with caplog.at_level(logging.WARNING, logger="actors.scaler.planning"):
        outcomes = {o["mve_id"]: o for o in agent.run_once()}
    gpt, bench = outcomes["002"], outcomes["012"]
    assert gpt["status"] == "planned" and gpt["planner"] == "offline (Claude failed: overloaded_error)"
    assert gpt["reason"].startswith("planned offline: Claude failed after the SDK's retries (Anthropic API error "
                                    "529 overloaded_error: Overloaded (after 3 attempts")
    assert "rope_base=500000" in gpt["reason"] or "gpt d512x8" in gpt["reason"]  # the offline plan's title
    assert "MVE 002: planned offline: Claude failed" in caplog.text
    # the one without a model cannot fall back: it fails, saying both
    assert bench["status"] == "failed" and "Claude failed" in bench["reason"]
    assert "needs the LLM planner" in bench["reason"]
    assert api.calls == 7
    # every billed token is counted, cache reads and writes included, and the summary says so
    assert gpt["llm_tokens"] == billed(USAGE) and gpt["llm_cost_usd"] > 0
    assert f"LLM tokens {billed(USAGE):,} (billed, cache included)" in format_summary(list(outcomes.values()))


def test_when_every_mve_fails_the_job_exits_non_zero(ray_cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    root = research(tmp_path, "009")
    (root / "experiments/009_diag_ssm_bytes/results.json").write_text('{"benchmark": "imagenet"}')
    namespace = f"test-{tmp_path.name[-8:]}"
    argv = ["--scalers", "1", "--experiments", str(root / "experiments"), "--code", str(root / "code"),
            "--state", str(tmp_path / "state.parquet"), "--namespace", namespace, "--no-autoresearch", "--dry-run"]
    try:
        assert main(argv) == 1
    finally:
        from actors.tracker.actor import stop_tracker

        stop_tracker(namespace=namespace)
    out, err = capsys.readouterr()
    assert "scaled 0, failed 1" in out and "benchmark 'imagenet'" in out
    assert "every MVE failed (1)" in err
