"""The Claude judge: tool use through the shared LLM client (ScriptedLLM, and the
real SDK on a mock transport), quotes checked against the files, answers cached
by file hash, the heuristics when Claude cannot answer, and the rules that hold
whoever judges (a structured verdict wins, logs never decide)."""

from __future__ import annotations

import json
import re

import httpx2
import pytest

from actors.scaler.discovery import scan
from actors.scaler.judge import HeuristicJudge
from actors.scaler.judge_claude import TOOL_NAME, ClaudeJudge, make_judge
from actors.shared.llm import LLMClient, LLMError
from actors.shared.llm_scripted import ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

MODEL = "claude-sonnet-4-5"
FAKE_KEY = "test-key-not-a-secret-FAKE0123456789abcdef"


def write(root, files: dict[str, str]):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def research(tmp_path):
    root = tmp_path / "research"
    write(root, {
        "experiments/071_results.md": "# 071 gated MLP\n\n## Decision\n\n**PROCEED** (with caveats)\n\n"
                                      "| Criterion | Status |\n|---|---|\n| bpb better by 0.01 | ✅ |\n"
                                      "| Baseline reproduces 2.83 (baseline expectation) | ❌ |\n",
        "experiments/072_results.md": "# 072\n\nVerdict: it helps at 1M and hurts at 4M, so call it mixed.\n",
        "experiments/experiment-log-072.md": "- **Result**: ✅ Success (local smoke test)\n",
        "experiments/experiment-log-073.md": "- Deploying to Modal\n- Awaiting results...\n",
        "experiments/074_results.md": "Decision: PROCEED\n",
        "code/074_scaled/README.md": "# planned by hand\n",
    })
    return root


def mve_of(params: dict) -> str:
    return re.search(r"MVE (\d{3})\.", params["messages"][0]["content"][0]["text"]).group(1)


def answer(verdict, quote=None, file=None, criteria=(), blockers=(), explanation="read it"):
    out = {"verdict": verdict, "criteria": list(criteria), "blockers": list(blockers), "explanation": explanation}
    if quote is not None:
        out["verdict_quote"] = {"file": file, "quote": quote}
    return out


ANSWERS = {
    "071": answer("proceed_with_caveats", "**PROCEED** (with caveats)", "experiments/071_results.md", criteria=[
        {"criterion": "bpb better by 0.01", "status": "met", "counts": True,
         "quote": {"file": "experiments/071_results.md", "quote": "bpb better by 0.01"}},
        {"criterion": "baseline reproduces 2.83", "status": "not_met", "counts": False,
         "quote": {"file": "experiments/071_results.md", "quote": "Baseline reproduces 2.83 (baseline expectation)"}},
    ]),
    "072": answer("ambiguous", "call it mixed", "experiments/072_results.md"),
}


def dispatcher(params):  # the same reply whichever thread asks first
    return ANSWERS[mve_of(params)]


def by_id(result):
    return {m.id: m for m in result.mves}


def test_claude_judges_what_could_be_scaled_and_a_rescan_costs_nothing(research, tmp_path):
    cache = tmp_path / "cache"
    llm = ScriptedLLM([dispatcher, dispatcher], usage={"input_tokens": 900, "output_tokens": 120})
    first = by_id(scan(research / "experiments", research / "code", judge=ClaudeJudge(llm, cache_dir=cache)))
    assert len(llm.requests) == 2  # 073 (pending) and 074 (scaled by hand) need no judge
    assert {mve_of(r) for r in llm.requests} == {"071", "072"}
    request = llm.requests[0]
    assert request["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert '<file role="RESULTS" name="experiments/07' in request["messages"][0]["content"][0]["text"]
    assert first["071"].status == "scalable" and first["071"].judge == f"claude:{MODEL}"
    assert first["071"].criteria == "success criteria met (1/1; 1 not required, missed)"
    assert "experiments/071_results.md: **PROCEED** (with caveats)" in first["071"].evidence
    assert first["072"].status == "ambiguous" and "'call it mixed' in experiments/072_results.md" in first["072"].reason
    assert (first["073"].status, first["073"].judge) == ("pending", "heuristics")
    assert first["074"].status == "scaled_by_hand"
    assert len(list(cache.glob("*.json"))) == 2

    # A rescan of unchanged notes asks nothing: an empty script would fail any call.
    again = ScriptedLLM([])
    second = by_id(scan(research / "experiments", research / "code", judge=ClaudeJudge(again, cache_dir=cache)))
    assert again.requests == []
    assert second["071"].judge == second["072"].judge == f"claude:{MODEL} (cached)"
    assert [(m.status, m.reason) for m in second.values()] == [(m.status, m.reason) for m in first.values()]

    # A changed file is judged again; the others still come from the cache.
    (research / "experiments/072_results.md").write_text("# 072\n\nVerdict: ABANDON — hurts at 4M.\n")
    ANSWERS["072b"] = answer("abandon", "ABANDON", "experiments/072_results.md")
    changed = ScriptedLLM([lambda params: ANSWERS["072b"]])
    third = by_id(scan(research / "experiments", research / "code", judge=ClaudeJudge(changed, cache_dir=cache)))
    assert [mve_of(r) for r in changed.requests] == ["072"]
    assert third["072"].status == "negative" and third["071"].judge.endswith("(cached)")


def test_a_quote_not_in_the_file_is_sent_back_once(tmp_path):
    root = tmp_path / "r"
    write(root, {"experiments/074_results.md": "Decision: PROCEED\n"})
    made_up = answer("proceed", "PROCEED — clearly worth scaling", "experiments/074_results.md")
    good = answer("proceed", "PROCEED", "experiments/074_results.md")
    llm = ScriptedLLM([made_up, good])
    [mve] = scan(root / "experiments", root / "code", judge=ClaudeJudge(llm, cache_dir=tmp_path / "c")).mves
    assert mve.status == "scalable" and mve.judge == f"claude:{MODEL}"
    feedback = llm.requests[1]["messages"][-1]["content"][0]
    assert feedback["is_error"] and "is not in experiments/074_results.md verbatim" in feedback["content"]


def test_when_claude_cannot_answer_the_heuristics_decide_and_say_so(research, tmp_path):
    from_a_log = answer("proceed", "✅ Success", "experiments/experiment-log-072.md")
    llm = ScriptedLLM([LLMError("Anthropic API error 529 overloaded_error (after 5 attempts)"), from_a_log, from_a_log])
    cache = tmp_path / "cache"
    mves = by_id(scan(research / "experiments", research / "code",
                      judge=ClaudeJudge(llm, cache_dir=cache, parallel=1)))
    for mve_id in ("071", "072"):
        assert mves[mve_id].judge == "heuristics"
        assert any("Claude could not judge it" in n for n in mves[mve_id].notes)
    assert any("529" in n for n in mves["071"].notes)
    assert any("is a log; the verdict comes from a RESULTS file" in n for n in mves["072"].notes)
    assert mves["071"].status == "scalable"  # the heuristics read it: PROCEED, the miss is a baseline expectation
    assert not cache.exists() or not list(cache.glob("*.json"))  # a failure is never cached


def test_a_structured_verdict_wins_over_claudes_reading_of_the_prose(tmp_path):
    root = tmp_path / "r"
    write(root, {"experiments/075_results.md": "# 075\n\nLooked great: PROCEED.\n",
                 "code/075/results.yaml": "val_bpb: 1.40\nverdict: DEBUG\n"})
    llm = ScriptedLLM([answer("proceed", "PROCEED", "experiments/075_results.md")])
    [mve] = scan(root / "experiments", root / "code", judge=ClaudeJudge(llm, cache_dir=tmp_path / "c")).mves
    assert mve.status == "negative" and "'verdict: DEBUG' in code/075/results.yaml" in mve.reason
    assert any("the structured verdict" in n and "governs" in n for n in mve.notes)
    assert "code/075/results.yaml" in llm.requests[0]["messages"][0]["content"][0]["text"]


def test_an_unmet_criterion_of_the_idea_makes_a_positive_answer_ambiguous(tmp_path):
    root = tmp_path / "r"
    write(root, {"experiments/076_results.md": "Decision: PROCEED\n\n| Criterion | |\n|---|---|\n"
                                              "| load balance < 70% | ❌ 88% |\n"})
    llm = ScriptedLLM([answer("proceed", "PROCEED", "experiments/076_results.md", criteria=[
        {"criterion": "load balance", "status": "not_met", "counts": True,
         "quote": {"file": "experiments/076_results.md", "quote": "load balance < 70%"}}],
        blockers=[{"blocker": "none", "critical": False, "quote": {"file": "experiments/076_results.md",
                                                                   "quote": "PROCEED"}}])])
    [mve] = scan(root / "experiments", root / "code", judge=ClaudeJudge(llm, cache_dir=tmp_path / "c")).mves
    assert mve.status == "ambiguous" and "'load balance'" in mve.reason


def test_the_real_sdk_on_a_mock_transport_and_no_key_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    root = tmp_path / "r"
    write(root, {"experiments/077_results.md": "# 077\n\n## Verdict\n\n🚀 SHIP IT\n"})
    bodies = []

    def api(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        bodies.append(body)
        tool_input = answer("proceed", "SHIP IT", "experiments/077_results.md")
        return httpx2.Response(200, json={
            "id": "msg_01", "type": "message", "role": "assistant", "model": MODEL, "stop_reason": "tool_use",
            "stop_sequence": None, "usage": {"input_tokens": 1500, "output_tokens": 200},
            "content": [{"type": "tool_use", "id": "toolu_01", "name": body["tools"][0]["name"],
                         "input": tool_input}]})

    llm = LLMClient(MODEL, http_client=httpx2.Client(transport=httpx2.MockTransport(api)))
    cache = tmp_path / "cache"
    [mve] = scan(root / "experiments", root / "code", judge=ClaudeJudge(llm, cache_dir=cache)).mves
    assert mve.status == "scalable" and mve.judge == f"claude:{MODEL}"
    assert bodies[0]["tool_choice"]["name"] == TOOL_NAME and bodies[0]["system"][0]["cache_control"]
    [cached] = cache.glob("*.json")
    record = cached.read_text()
    assert FAKE_KEY not in record and json.loads(record)["usage"]["input_tokens"] == 1500


def test_make_judge_is_claude_only_with_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert isinstance(make_judge(), HeuristicJudge)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    judge = make_judge(cache_dir=tmp_path)
    assert isinstance(judge, ClaudeJudge) and judge.cache_dir == tmp_path
    assert isinstance(make_judge(offline=True), HeuristicJudge)
