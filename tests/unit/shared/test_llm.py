"""actors.shared.llm: the real anthropic SDK against a mock httpx2 transport (no network, no Ray)."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import traceback

import anthropic
import httpx2
import pytest

from actors.shared.llm import (
    TOOL_NAME,
    AnthropicLLM,
    LLMError,
    Planner,
    PlanRejected,
    PlanRequest,
    ScriptedPlanner,
    Usage,
    make_planner,
)
from actors.scaler.plan import ScalePlan

FAKE_KEY = "test-key-not-a-secret-FAKE0123456789abcdef"
MODEL = "claude-sonnet-4-5"

# The SDK warns that claude-sonnet-4-5 is deprecated; that is the SDK's concern, not ours.
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


def message_json(plan_input=None, *, content=None, usage=None, stop_reason="tool_use"):
    if content is None:
        content = [
            {"type": "text", "text": "Here is the plan."},
            {"type": "tool_use", "id": "toolu_01ABC", "name": TOOL_NAME, "input": plan_input},
        ]
    return {
        "id": "msg_01XYZ",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 1200,
            "output_tokens": 800,
            "cache_creation_input_tokens": 10_000,
            "cache_read_input_tokens": 50_000,
        },
    }


def error_json(kind, message):
    return {"type": "error", "error": {"type": kind, "message": message}}


class FakeAPI:
    """A scripted Messages API: each call pops (status, body, headers) or an exception."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        status, body, headers = reply
        return httpx2.Response(status, json=body, headers=headers or {})

    @property
    def calls(self) -> int:
        return len(self.requests)

    def body(self, i=-1) -> dict:
        return json.loads(self.requests[i].content)


def ok(plan=None, **kw):
    return (200, message_json(VALID_PLAN if plan is None else plan, **kw), None)


class RecordingSleep:
    def __init__(self):
        self.delays: list[float] = []

    def __call__(self, s: float) -> None:
        self.delays.append(s)


def make_llm(api: FakeAPI, *, max_retries=4, model=MODEL, **kw):
    client = anthropic.Anthropic(
        api_key=FAKE_KEY,
        http_client=httpx2.Client(transport=httpx2.MockTransport(api)),
        max_retries=7,  # AnthropicLLM must turn SDK retries off and count its own
    )
    sleep = kw.pop("sleep", None) or RecordingSleep()
    kw.setdefault("backoff_s", 0.001)
    return AnthropicLLM(model, client=client, max_retries=max_retries, sleep=sleep, **kw), sleep


def req(**kw):
    return PlanRequest(mve_id="007", documents=dict(DOCS), **kw)


# --------------------------------------------------------------------------- happy path


def test_tool_use_reply_becomes_a_plan_with_exact_cost():
    api = FakeAPI(ok())
    llm, _ = make_llm(api)
    plan, usage = llm.design_plan(req())

    assert isinstance(plan, ScalePlan)
    assert plan.gpus == 2 and plan.hours == 4 and plan.benchmark == "mqar"
    assert plan.model.d_model == 384 and plan.baselines[0].family == "rnn"
    assert plan.to_train_spec().resources.gpus == 2

    assert (usage.input_tokens, usage.output_tokens) == (1200, 800)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (10_000, 50_000)
    assert usage.requests == 1
    # sonnet 4.5: $3 in, $15 out per Mtok; cache write 3.75, cache read 0.30
    expected = (1200 * 3 + 800 * 15 + 10_000 * 3.75 + 50_000 * 0.30) / 1e6
    assert expected == pytest.approx(0.0681)
    assert usage.cost_usd == pytest.approx(0.0681, abs=1e-12)
    assert api.calls == 1


def test_request_has_tool_choice_documents_and_cache_control():
    api = FakeAPI(ok())
    llm, _ = make_llm(api, model="claude-haiku-4-5", max_tokens=2048)
    llm.design_plan(req(instructions="at most 2 GPUs please", feedback=None))

    sent = api.body()
    assert api.requests[0].url.path == "/v1/messages"
    assert sent["model"] == "claude-haiku-4-5"
    assert sent["max_tokens"] == 2048
    assert [t["name"] for t in sent["tools"]] == [TOOL_NAME]
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
    # the breakpoint sits on the last (long) document; the task comes after it
    cached = [i for i, b in enumerate(blocks) if "cache_control" in b]
    assert len(cached) == 1
    last_doc = max(i for i, t in enumerate(texts) if "<document" in t)
    assert cached == [last_doc]
    assert blocks[last_doc]["cache_control"] == {"type": "ephemeral"}
    assert len(blocks[last_doc]["text"]) > 1000
    assert "at most 2 GPUs please" in texts[-1] and last_doc < len(blocks) - 1
    # the API key travels in a header only (this SDK sends it as a bearer token), never in the body
    assert FAKE_KEY not in api.requests[0].content.decode()
    assert any(FAKE_KEY in v for v in api.requests[0].headers.values())


def test_retry_with_feedback_keeps_the_cached_prefix_identical():
    api = FakeAPI(ok(), ok())
    llm, _ = make_llm(api)
    llm.design_plan(req())
    # another agent, documents in another order, and feedback from a rejection
    llm.design_plan(
        PlanRequest(mve_id="007", documents=dict(reversed(list(DOCS.items()))), feedback="gpus: at most 2")
    )
    first, second = api.body(0), api.body(1)
    for key in ("tools", "system", "tool_choice", "model"):
        assert first[key] == second[key]
    b1, b2 = first["messages"][0]["content"], second["messages"][0]["content"]
    cut = next(i for i, b in enumerate(b1) if "cache_control" in b) + 1
    assert b1[:cut] == b2[:cut]
    assert "gpus: at most 2" in b2[-1]["text"] and "rejected" in b2[-1]["text"]


def test_unknown_model_priced_at_default_with_warning(caplog):
    api = FakeAPI(ok(usage={"input_tokens": 1_000_000, "output_tokens": 0}))
    llm, _ = make_llm(api, model="claude-future-9")
    with caplog.at_level(logging.WARNING, logger="actors.shared.llm"):
        _, usage = llm.design_plan(req())
    assert usage.cost_usd == pytest.approx(15.0)
    assert "no price for model 'claude-future-9'" in caplog.text


def test_custom_price_table_and_dated_model_name():
    api = FakeAPI(ok(usage={"input_tokens": 2_000_000, "output_tokens": 1_000_000}), ok())
    llm, _ = make_llm(api, model="claude-custom", prices={"claude-custom": (1.0, 2.0)})
    assert llm.design_plan(req())[1].cost_usd == pytest.approx(4.0)
    dated, _ = make_llm(api, model="claude-sonnet-4-5-20250929")
    assert dated.design_plan(req())[1].cost_usd == pytest.approx(0.0681)


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    "status,kind",
    [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error"), (503, "api_error")],
)
def test_transient_error_is_retried_then_succeeds(status, kind, caplog):
    api = FakeAPI((status, error_json(kind, "try later"), None), ok())
    llm, sleep = make_llm(api)
    with caplog.at_level(logging.WARNING, logger="actors.shared.llm"):
        plan, usage = llm.design_plan(req())
    assert plan.mve_id == "007"
    assert api.calls == 2
    assert len(sleep.delays) == 1 and 0 < sleep.delays[0] <= 0.001
    assert usage.requests == 1 and usage.input_tokens == 1200  # the failed attempt costs nothing
    assert str(status) in caplog.text and "attempt 1/5" in caplog.text


def test_connection_error_is_retried():
    api = FakeAPI(httpx2.ConnectError("connection refused"), ok())
    llm, sleep = make_llm(api)
    plan, _ = llm.design_plan(req())
    assert plan.gpus == 2 and api.calls == 2 and len(sleep.delays) == 1


def test_retry_after_is_honoured_and_capped():
    api = FakeAPI(
        (429, error_json("rate_limit_error", "slow down"), {"retry-after": "0.02"}),
        (429, error_json("rate_limit_error", "slow down"), {"retry-after": "3600"}),
        (529, error_json("overloaded_error", "busy"), {"retry-after-ms": "5"}),
        ok(),
    )
    llm, sleep = make_llm(api, max_retry_after_s=0.05)
    llm.design_plan(req())
    assert api.calls == 4
    assert sleep.delays == pytest.approx([0.02, 0.05, 0.005])


def test_backoff_grows_exponentially_with_jitter():
    api = FakeAPI(*[(500, error_json("api_error", "boom"), None)] * 4, ok())
    llm, sleep = make_llm(api, backoff_s=1.0)  # recorded sleeps only: nothing actually waits
    llm.design_plan(req())
    assert len(sleep.delays) == 4
    for n, d in enumerate(sleep.delays):
        assert 0.5 * 2**n <= d <= 2**n


def test_real_sleep_with_tiny_backoff():
    import time

    api = FakeAPI((529, error_json("overloaded_error", "busy"), None), ok())
    client = anthropic.Anthropic(api_key=FAKE_KEY, http_client=httpx2.Client(transport=httpx2.MockTransport(api)))
    llm = AnthropicLLM(MODEL, client=client, backoff_s=0.01)
    t0 = time.monotonic()
    llm.design_plan(req())
    assert api.calls == 2 and time.monotonic() - t0 < 2


def test_gives_up_after_max_retries_with_clear_error():
    api = FakeAPI(*[(529, error_json("overloaded_error", "Overloaded"), None)] * 10)
    llm, sleep = make_llm(api, max_retries=3)
    with pytest.raises(LLMError) as exc:
        llm.design_plan(req())
    assert not isinstance(exc.value, PlanRejected)
    assert api.calls == 4 and len(sleep.delays) == 3
    msg = str(exc.value)
    assert "after 4 attempts" in msg and "529" in msg and "overloaded" in msg.lower() and MODEL in msg


def test_client_errors_are_not_retried():
    api = FakeAPI((400, error_json("invalid_request_error", "tools.0.input_schema: bad"), None), ok())
    llm, sleep = make_llm(api)
    with pytest.raises(LLMError, match=r"400 invalid_request_error.*input_schema: bad"):
        llm.design_plan(req())
    assert api.calls == 1 and sleep.delays == []


# --------------------------------------------------------------------------- malformed replies


def test_reply_without_tool_use_is_rejected():
    api = FakeAPI((200, message_json(content=[{"type": "text", "text": "I think..."}], stop_reason="end_turn"), None))
    llm, _ = make_llm(api)
    with pytest.raises(PlanRejected) as exc:
        llm.design_plan(req())
    assert TOOL_NAME in exc.value.reason and "end_turn" in exc.value.reason
    assert exc.value.usage.requests == 1 and exc.value.usage.cost_usd > 0  # still billed


def test_missing_required_field_is_named():
    bad = copy.deepcopy(VALID_PLAN)
    del bad["success_criteria"]
    llm, _ = make_llm(FakeAPI(ok(bad)))
    with pytest.raises(PlanRejected) as exc:
        llm.design_plan(req())
    assert "success_criteria" in exc.value.fields
    assert "success_criteria: Field required" in exc.value.reason


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("gpus", 4, "the hard limit is 2 GPUs"),
        ("hours", 10, "the hard limit is 6 hours"),
        ("benchmark", "imagenet", "choose one of bytes, mqar, wikitext103, fineweb"),
    ],
)
def test_plan_over_the_limits_is_rejected_naming_field_and_limit(field, value, needle):
    bad = {**VALID_PLAN, field: value}
    llm, _ = make_llm(FakeAPI(ok(bad)))
    with pytest.raises(PlanRejected) as exc:
        llm.design_plan(req())
    assert exc.value.fields == (field,)
    assert exc.value.reason.startswith(f"{field}: ")
    assert needle in exc.value.reason
    assert needle in str(exc.value)


def test_nested_field_location_and_max_tokens_hint():
    bad = copy.deepcopy(VALID_PLAN)
    bad["model"]["d_model"] = -1
    llm, _ = make_llm(FakeAPI(ok(bad, stop_reason="max_tokens")))
    with pytest.raises(PlanRejected) as exc:
        llm.design_plan(req())
    assert "model.d_model" in exc.value.fields
    assert "max_tokens=4096" in exc.value.reason


def test_plan_for_another_mve_is_rejected():
    llm, _ = make_llm(FakeAPI(ok({**VALID_PLAN, "mve_id": "008"})))
    with pytest.raises(PlanRejected, match="mve_id"):
        llm.design_plan(req())


# --------------------------------------------------------------------------- secrets


def test_api_key_never_in_logs_errors_or_repr(caplog, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_LOG", "debug")
    caplog.set_level(logging.DEBUG)
    for name in ("anthropic", "httpx2", "actors.shared.llm"):
        caplog.set_level(logging.DEBUG, logger=name)

    bad = {**VALID_PLAN, "gpus": 4}
    api = FakeAPI(
        (429, error_json("rate_limit_error", "slow"), {"retry-after": "0"}),
        ok(),
        (500, error_json("api_error", "boom"), None),
        ok(bad),
        (401, error_json("authentication_error", f"invalid x-api-key {FAKE_KEY}"), None),
        *[(529, error_json("overloaded_error", "busy"), None)] * 3,
    )
    llm, _ = make_llm(api, max_retries=2)
    errors: list[BaseException] = []
    llm.design_plan(req())
    for _ in range(3):
        try:
            llm.design_plan(req())
        except LLMError as e:
            errors.append(e)
    assert [type(e) for e in errors] == [PlanRejected, LLMError, LLMError]
    assert api.calls == 8
    assert any(r.name.startswith("anthropic") for r in caplog.records)  # the SDK did log
    assert any("Request options" in r.getMessage() for r in caplog.records)

    assert FAKE_KEY not in caplog.text
    assert all(FAKE_KEY not in r.getMessage() for r in caplog.records)
    for e in errors:
        assert FAKE_KEY not in str(e) and FAKE_KEY not in repr(e)
        assert FAKE_KEY not in "".join(traceback.format_exception(e))
    assert "[redacted]" in str(errors[1])
    assert repr(llm) == f"AnthropicLLM(model={MODEL!r})"
    assert FAKE_KEY not in str(llm) and FAKE_KEY not in repr(vars(llm).keys())
    assert FAKE_KEY.encode() not in pickle.dumps(llm)


def test_key_from_env_and_missing_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    llm = AnthropicLLM("claude-opus-4-5")
    assert repr(llm) == "AnthropicLLM(model='claude-opus-4-5')" and FAKE_KEY not in repr(llm)
    clone = pickle.loads(pickle.dumps(llm))
    assert clone.model == "claude-opus-4-5"

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY is not set"):
        AnthropicLLM()
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY is not set"):
        clone.design_plan(req())  # the copy carries no key; the env has none


# --------------------------------------------------------------------------- factory and fake


def test_make_planner(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_MODEL", raising=False)
    assert make_planner() is None

    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    p = make_planner()
    assert isinstance(p, AnthropicLLM) and isinstance(p, Planner)
    assert p.model == "claude-sonnet-4-5"
    assert make_planner("claude-haiku-4-5").model == "claude-haiku-4-5"
    assert make_planner(offline=True) is None


def test_scripted_planner_returns_queue_in_order_and_records_requests():
    plan_a = ScalePlan.model_validate(VALID_PLAN)
    plan_b = ScalePlan.model_validate({**VALID_PLAN, "gpus": 1, "title": "smaller"})
    boom = PlanRejected("gpus: asks for 4 GPUs; the hard limit is 2", fields=["gpus"])
    fake = ScriptedPlanner([plan_a, boom, plan_b], usage=Usage(input_tokens=10, cost_usd=0.5, requests=1))
    assert isinstance(fake, Planner)

    r1, r2, r3 = req(), req(feedback="first"), req(feedback="gpus: at most 2")
    assert fake.design_plan(r1)[0] is plan_a
    with pytest.raises(PlanRejected) as exc:
        fake.design_plan(r2)
    assert exc.value is boom
    got, usage = fake.design_plan(r3)
    assert got is plan_b and usage == Usage(input_tokens=10, cost_usd=0.5, requests=1)
    assert fake.requests == [r1, r2, r3]
    assert fake.remaining == 0
    with pytest.raises(LLMError, match="no scripted reply"):
        fake.design_plan(r1)


def test_usage_add():
    total = Usage()
    total.add(Usage(1, 2, 3, 4, 0.5, 1))
    total.add(Usage(10, 20, 30, 40, 0.25, 2))
    assert total == Usage(11, 22, 33, 44, 0.75, 3)
