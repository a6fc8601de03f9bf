"""The Claude planner over the real SDK on a mock transport, and the offline
planner's refusal of results.json files it cannot plan from (no Ray)."""

from __future__ import annotations

import copy
import json

import httpx2
import pytest

from actors.scaler.plan import ScalePlan
from actors.scaler.planners import TOOL_NAME, ClaudePlanner, OfflinePlanner
from actors.shared.llm import LLMClient, ReplyRejected
from actors.shared.llm_scripted import ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

VALID_PLAN = {
    "mve_id": "007",
    "title": "Scale the gated-delta MQAR model to 30M params on MQAR with 64 kv pairs",
    "rationale": "At 2M params the MVE recalled 32 kv pairs at 0.97 accuracy; the mechanism should scale.",
    "model": {"family": "gpt", "d_model": 384, "n_layers": 6, "n_heads": 6},
    "target_params": 30_000_000,
    "benchmark": "mqar",
    "data_params": {"num_kv_pairs": 64},
    "seq_len": 256,
    "optim": {"lr": 3e-4, "warmup_steps": 200, "batch_size": 64, "grad_accum": 2, "schedule": "cosine"},
    "max_steps": 20_000,
    "eval_interval": 500,
    "gpus": 2,
    "hours": 4,
    "baselines": [{"name": "lstm", "family": "rnn", "why": "a recurrent baseline of the same size"}],
    "success_criteria": ["val accuracy >= 0.9 at 64 kv pairs"],
}
DOCS = {
    "experiments/007_gated/results.md": "Verdict: positive. " + "accuracy table row\n" * 400,
    "experiments/007_gated/model.py": "class GatedDelta(nn.Module):\n    ...\n" * 50,
    "proposals/007_gated.md": "Full-scale plan: 30M params, MQAR 64 pairs. " * 100,
}


class FakeAPI:
    def __init__(self, *plans):
        self.plans = list(plans)
        self.bodies: list[dict] = []

    def __call__(self, request):
        self.bodies.append(json.loads(request.content))
        reply = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                 "content": [{"type": "tool_use", "id": f"toolu_{len(self.bodies)}", "name": TOOL_NAME,
                              "input": self.plans.pop(0)}],
                 "stop_reason": "tool_use", "stop_sequence": None,
                 "usage": {"input_tokens": 1000, "output_tokens": 500}}
        return httpx2.Response(200, json=reply)


@pytest.fixture
def planner_over(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "fake-key-0123")

    def make(api):
        return ClaudePlanner(LLMClient("claude-sonnet-4-5", http_client=httpx2.Client(
            transport=httpx2.MockTransport(api))))

    return make


def test_the_plan_comes_back_validated_with_its_cost(planner_over):
    api = FakeAPI(VALID_PLAN)
    plan, usage = planner_over(api).design_plan("007", DOCS)
    assert isinstance(plan, ScalePlan) and plan.gpus == 2 and plan.model.d_model == 384
    assert plan.to_train_spec().resources.gpus == 2
    assert usage.requests == 1 and usage.cost_usd == pytest.approx((1000 * 3 + 500 * 15) / 1e6)


def test_prompt_names_the_limits_and_caches_the_documents(planner_over):
    api = FakeAPI(VALID_PLAN, VALID_PLAN)
    planner = planner_over(api)
    planner.design_plan("007", DOCS, instructions="at most 2 GPUs please")
    sent = api.bodies[0]
    assert sent["tools"][0]["input_schema"] == ScalePlan.model_json_schema()
    assert sent["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    system_text = " ".join(b["text"] for b in sent["system"])
    for limit in ("2 GPUs", "6 hours", "80 GB", "bytes, mqar, wikitext103, fineweb", "10M-50M"):
        assert limit in system_text
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    blocks = sent["messages"][0]["content"]
    texts = [b["text"] for b in blocks]
    for name, text in DOCS.items():
        assert any(name in t and text in t for t in texts), name
    # one breakpoint, on the last (long) document; the task comes after it
    cached = [i for i, b in enumerate(blocks) if "cache_control" in b]
    last_doc = max(i for i, t in enumerate(texts) if "<document" in t)
    assert cached == [last_doc] and len(texts[last_doc]) > 1000
    assert "at most 2 GPUs please" in texts[-1] and last_doc < len(blocks) - 1
    # another agent, documents in another order: the same cached prefix
    planner.design_plan("007", dict(reversed(list(DOCS.items()))))
    other = api.bodies[1]["messages"][0]["content"]
    assert other[:last_doc + 1] == blocks[:last_doc + 1]


@pytest.mark.parametrize("field,value,needle", [
    ("gpus", 4, "the hard limit is 2 GPUs"),
    ("hours", 10, "the hard limit is 6 hours"),
    ("benchmark", "imagenet", "bytes, mqar, wikitext103, fineweb"),
])
def test_a_plan_over_the_limits_is_sent_back_then_refused_naming_field_and_limit(planner_over, field, value, needle):
    bad = {**VALID_PLAN, field: value}
    api = FakeAPI(bad, bad)
    with pytest.raises(ReplyRejected) as exc:
        planner_over(api).design_plan("007", DOCS)
    assert exc.value.fields == (field,) and exc.value.reason.startswith(f"{field}: ") and needle in str(exc.value)
    feedback = api.bodies[1]["messages"][-1]["content"][0]
    assert feedback["type"] == "tool_result" and feedback["is_error"] and needle in feedback["content"]
    assert exc.value.usage.requests == 2


def test_a_corrected_plan_is_accepted_and_both_replies_are_billed():
    bad = copy.deepcopy(VALID_PLAN)
    bad["model"]["d_model"] = -1
    llm = ScriptedLLM([bad, VALID_PLAN], usage={"input_tokens": 100, "output_tokens": 10})
    plan, usage = ClaudePlanner(llm).design_plan("007", DOCS)
    assert plan.model.d_model == 384 and usage.requests == 2 and usage.input_tokens == 200
    assert "model.d_model" in llm.requests[1]["messages"][-1]["content"][0]["content"]


def test_a_plan_for_another_mve_is_refused():
    llm = ScriptedLLM([{**VALID_PLAN, "mve_id": "008"}] * 2)
    with pytest.raises(ReplyRejected, match="mve_id: the plan is for MVE 008") as exc:
        ClaudePlanner(llm).design_plan("007", DOCS)
    assert exc.value.fields == ("mve_id",)


@pytest.mark.parametrize("facts,needle", [
    ({"benchmark": "imagenet"}, "benchmark 'imagenet'"),
    ({"seq_len": "long"}, "seq_len must be a whole number"),
    ({"data_params": [1, 2]}, "data_params must be an object"),
])
def test_the_offline_planner_names_what_it_cannot_plan_from(facts, needle):
    with pytest.raises(ValueError, match=needle) as exc:
        OfflinePlanner().design("007", facts)
    assert "MVE 007's results.json" in str(exc.value)
