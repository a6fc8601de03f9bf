"""actors.shared.llm: the real anthropic SDK against a mock httpx2 transport (no network, no Ray).

What is ours is checked here: the forced tool call and its validation, the one
retry with feedback, accounting, error mapping and the key. Retries on HTTP
errors are the SDK's: the tests show they happen (and are not ours) by the
SDK's own retry-count header; `retry-after-ms: 1` keeps them fast.
"""

from __future__ import annotations

import json
import logging
import pickle
import traceback

import httpx2
import pytest
from pydantic import BaseModel, Field

from actors.shared.llm import DEFAULT_MODEL, LLMClient, LLMError, ReplyRejected, make_llm
from actors.shared.pricing import Usage

FAKE_KEY = "test-key-not-a-secret-FAKE0123456789abcdef"
MODEL = "claude-sonnet-4-5"
TOOL = "submit_answer"
FAST = {"retry-after-ms": "1"}  # the SDK honours it: retries without a real wait

# The SDK warns that claude-sonnet-4-5 is deprecated; that is the SDK's concern, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


class Answer(BaseModel):
    name: str
    count: int = Field(ge=0, le=10)


GOOD = {"name": "gated-delta", "count": 3}
USAGE = {"input_tokens": 1200, "output_tokens": 800, "cache_creation_input_tokens": 10_000,
         "cache_read_input_tokens": 50_000}
# sonnet 4.5: $3 in, $15 out per Mtok; cache write 3.75, cache read 0.30
USAGE_COST = (1200 * 3 + 800 * 15 + 10_000 * 3.75 + 50_000 * 0.30) / 1e6

SYSTEM = [{"type": "text", "text": "You answer with the tool.", "cache_control": {"type": "ephemeral"}}]
CONTENT = [{"type": "text", "text": "<document>" + "long text " * 500 + "</document>",
            "cache_control": {"type": "ephemeral"}},
           {"type": "text", "text": "Name the model and count its layers."}]


def message_json(tool_input=None, *, content=None, usage=None, stop_reason="tool_use", model=MODEL):
    if content is None:
        content = [{"type": "text", "text": "Here it is."},
                   {"type": "tool_use", "id": "toolu_01ABC", "name": TOOL, "input": tool_input}]
    return {"id": "msg_01XYZ", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None, "usage": usage or USAGE}


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

    def retry_counts(self) -> list[str]:
        return [r.headers.get("x-stainless-retry-count") for r in self.requests]


def ok(tool_input=None, **kw):
    return (200, message_json(GOOD if tool_input is None else tool_input, **kw), None)


def busy(status=529, kind="overloaded_error", message="Overloaded"):
    return (status, error_json(kind, message), FAST)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)


def client(api: FakeAPI, model=MODEL, **kw) -> LLMClient:
    return LLMClient(model, http_client=httpx2.Client(transport=httpx2.MockTransport(api)), **kw)


def ask(llm, **kw):
    return llm.ask(**{"system": SYSTEM, "content": CONTENT, "tool_name": TOOL, "output": Answer, **kw})


# --------------------------------------------------------------------------- the tool call


def test_tool_input_becomes_a_validated_model_with_exact_cost(key):
    api = FakeAPI(ok())
    answer, usage = ask(client(api))
    assert answer == Answer(name="gated-delta", count=3)
    assert (usage.input_tokens, usage.output_tokens) == (1200, 800)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (10_000, 50_000)
    assert usage.requests == 1 and usage.tokens == 2000
    assert USAGE_COST == pytest.approx(0.0681)
    assert usage.cost_usd == pytest.approx(0.0681, abs=1e-12)
    assert api.calls == 1


def test_request_forces_the_tool_and_keeps_the_callers_cache_breakpoints(key):
    api = FakeAPI(ok())
    ask(client(api, model="claude-haiku-4-5", max_tokens=2048), description="Submit it.")
    sent = api.body()
    assert api.requests[0].url.path == "/v1/messages"
    assert sent["model"] == "claude-haiku-4-5" and sent["max_tokens"] == 2048
    assert sent["tools"] == [{"name": TOOL, "description": "Submit it.", "input_schema": Answer.model_json_schema()}]
    assert sent["tool_choice"] == {"type": "tool", "name": TOOL}
    assert sent["system"] == SYSTEM
    assert sent["messages"] == [{"role": "user", "content": CONTENT}]
    # the API key travels in a header only, never in the body
    assert FAKE_KEY not in api.requests[0].content.decode()
    assert any(FAKE_KEY in v for v in api.requests[0].headers.values())


def test_create_is_one_raw_call_with_this_clients_defaults(key):
    api = FakeAPI(ok(content=[{"type": "text", "text": "hi"}], stop_reason="end_turn"))
    llm = client(api, max_tokens=321)
    response, usage = llm.create({"messages": [{"role": "user", "content": "hello"}]})
    assert response.content[0].text == "hi" and usage.cost_usd == pytest.approx(USAGE_COST)
    assert api.body()["model"] == MODEL and api.body()["max_tokens"] == 321


def test_unknown_model_priced_at_default_with_warning(key, caplog):
    api = FakeAPI(ok(usage={"input_tokens": 1_000_000, "output_tokens": 0}))
    with caplog.at_level(logging.WARNING):
        _, usage = ask(client(api, model="claude-future-9"))
    assert usage.cost_usd == pytest.approx(15.0)
    assert "no price for model 'claude-future-9'" in caplog.text


def test_custom_price_table_and_dated_model_name(key):
    api = FakeAPI(ok(usage={"input_tokens": 2_000_000, "output_tokens": 1_000_000}), ok())
    assert ask(client(api, model="claude-custom", prices={"claude-custom": (1.0, 2.0)}))[1].cost_usd == \
        pytest.approx(4.0)
    assert ask(client(api, model="claude-sonnet-4-5-20250929"))[1].cost_usd == pytest.approx(USAGE_COST)


# --------------------------------------------------------------------------- the SDK's retries


@pytest.mark.parametrize("status,kind", [(429, "rate_limit_error"), (529, "overloaded_error"),
                                         (500, "api_error"), (503, "api_error")])
def test_the_sdk_retries_transient_errors(key, status, kind):
    api = FakeAPI(busy(status, kind, "try later"), ok())
    answer, usage = ask(client(api))
    assert answer.name == "gated-delta" and api.calls == 2
    assert api.retry_counts() == ["0", "1"]  # the SDK's retry, not a second call of ours
    assert usage.requests == 1 and usage.input_tokens == 1200  # the failed attempt costs nothing


def test_connection_errors_are_retried_by_the_sdk(key):
    api = FakeAPI(httpx2.ConnectError("connection refused"), ok())
    answer, _ = ask(client(api))
    assert answer.count == 3 and api.retry_counts() == ["0", "1"]


def test_gives_up_after_the_sdks_retries_with_one_clear_error(key):
    api = FakeAPI(*[busy()] * 5)
    with pytest.raises(LLMError) as exc:
        ask(client(api, max_retries=2))
    assert not isinstance(exc.value, ReplyRejected)
    assert api.calls == 3
    err = exc.value
    assert (err.status, err.kind, err.model) == (529, "overloaded_error", MODEL)
    assert "529 overloaded_error: Overloaded" in str(err) and "after 3 attempts" in str(err) and MODEL in str(err)


def test_client_errors_are_not_retried(key):
    api = FakeAPI((400, error_json("invalid_request_error", "tools.0.input_schema: bad"), FAST), ok())
    with pytest.raises(LLMError, match=r"400 invalid_request_error: tools.0.input_schema: bad \(not retried"):
        ask(client(api))
    assert api.calls == 1


# --------------------------------------------------------------------------- invalid replies: one retry with feedback


def test_a_reply_without_the_tool_call_gets_one_retry_with_feedback(key):
    api = FakeAPI(ok(content=[{"type": "text", "text": "I think 3."}], stop_reason="end_turn"), ok())
    answer, usage = ask(client(api))
    assert answer.count == 3
    assert usage.requests == 2 and usage.cost_usd == pytest.approx(2 * USAGE_COST)  # both replies billed
    first, second = api.body(0), api.body(1)
    for k in ("tools", "system", "tool_choice", "model"):
        assert first[k] == second[k]
    assert second["messages"][0] == first["messages"][0]  # the cached prefix is untouched
    assert second["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "I think 3."}]}
    [feedback] = second["messages"][2]["content"]
    assert second["messages"][2]["role"] == "user"
    assert f"no `{TOOL}` tool call" in feedback["text"] and "end_turn" in feedback["text"]


def test_an_invalid_tool_input_is_answered_with_the_validation_error(key):
    api = FakeAPI(ok({"name": "x", "count": 99}), ok())
    answer, usage = ask(client(api))
    assert answer.count == 3 and usage.requests == 2
    echoed, result = api.body(1)["messages"][1:]
    assert echoed["content"][-1] == {"type": "tool_use", "id": "toolu_01ABC", "name": TOOL,
                                     "input": {"name": "x", "count": 99}}
    [block] = result["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == "toolu_01ABC" and block["is_error"]
    assert "count: Input should be less than or equal to 10" in block["content"]


def test_two_invalid_replies_are_rejected_naming_the_fields_and_billed(key):
    api = FakeAPI(ok({"name": "x"}), ok({"name": "x", "count": -1}, stop_reason="max_tokens"))
    with pytest.raises(ReplyRejected) as exc:
        ask(client(api))
    err = exc.value
    assert isinstance(err, LLMError) and api.calls == 2
    assert err.fields == ("count",) and err.reason.startswith("count: Input should be greater than or equal to 0")
    assert "max_tokens=4096" in err.reason  # the cut-off is named
    assert str(err).startswith("the model's reply was rejected twice: count:")
    assert err.usage.requests == 2 and err.usage.cost_usd == pytest.approx(2 * USAGE_COST)


def test_the_callers_check_refuses_like_validation(key):
    api = FakeAPI(ok(), ok())
    check = lambda a: None if a.name == "mamba" else f"name: this is about mamba, not {a.name}"  # noqa: E731
    with pytest.raises(ReplyRejected) as exc:
        ask(client(api), check=check)
    assert exc.value.fields == ("name",) and "not gated-delta" in exc.value.reason
    assert "name: this is about mamba" in api.body(1)["messages"][2]["content"][0]["content"]


def test_an_api_error_on_the_retry_carries_what_was_billed(key):
    api = FakeAPI(ok({"name": "x"}), (400, error_json("invalid_request_error", "bad"), FAST))
    with pytest.raises(LLMError) as exc:
        ask(client(api))
    assert exc.value.status == 400 and exc.value.usage.requests == 1


# --------------------------------------------------------------------------- the key


def test_api_key_never_in_logs_errors_repr_or_pickles(key, caplog, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_LOG", "debug")
    caplog.set_level(logging.DEBUG)
    for name in ("anthropic", "httpx2", "actors.shared.llm"):
        caplog.set_level(logging.DEBUG, logger=name)
    api = FakeAPI(
        busy(429, "rate_limit_error", "slow"), ok(),
        ok({"name": "x"}), ok({"count": 1}),
        (401, error_json("authentication_error", f"invalid x-api-key {FAKE_KEY}"), None),
        *[busy()] * 3,
    )
    llm = client(api, max_retries=2)
    ask(llm)
    errors: list[BaseException] = []
    for _ in range(3):
        try:
            ask(llm)
        except LLMError as e:
            errors.append(e)
    assert [type(e) for e in errors] == [ReplyRejected, LLMError, LLMError]
    assert api.calls == 8
    assert any(r.name.startswith("anthropic") for r in caplog.records)  # the SDK did log
    assert FAKE_KEY not in caplog.text
    for e in errors:
        assert FAKE_KEY not in str(e) and FAKE_KEY not in repr(e)
        assert FAKE_KEY not in "".join(traceback.format_exception(e))
    assert "[redacted]" in str(errors[1]) and errors[1].status == 401
    assert repr(llm) == f"LLMClient(model={MODEL!r})"
    assert FAKE_KEY.encode() not in pickle.dumps(llm)  # after use, with its SDK client built


def test_the_key_is_read_where_it_is_used(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    llm = LLMClient("claude-opus-4-5")  # no key needed to build one, e.g. to ship to a Ray actor
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY is not set"):
        ask(llm)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    clone = pickle.loads(pickle.dumps(llm))
    assert clone.model == "claude-opus-4-5" and clone.max_retries == llm.max_retries
    assert clone._sdk().api_key == FAKE_KEY  # this process's key, read at use


# --------------------------------------------------------------------------- the factory


def test_make_llm(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_MODEL", raising=False)
    assert make_llm() is None
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    llm = make_llm()
    assert isinstance(llm, LLMClient) and llm.model == DEFAULT_MODEL
    assert make_llm("claude-haiku-4-5").model == "claude-haiku-4-5"
    monkeypatch.setenv("ANTHROPIC_MODEL", "claude-opus-4-5")
    assert make_llm().model == "claude-opus-4-5"
    assert make_llm(max_tokens=16000, timeout_s=600).max_tokens == 16000
    assert make_llm(offline=True) is None


def test_usage_add():
    total = Usage()
    total.add(Usage(1, 2, 3, 4, 0.5, 1))
    total.add(Usage(10, 20, 30, 40, 0.25, 2))
    assert total == Usage(11, 22, 33, 44, 0.75, 3)


# --------------------------------------------------------------------------- when Claude fails (issue 14, item 8)


class BrokenBodies(FakeAPI):
    """A 200 whose body is cut short (bytes), or a reply as FakeAPI takes it."""

    def __call__(self, request):
        if self.replies and isinstance(self.replies[0], bytes):
            self.requests.append(request)
            return httpx2.Response(200, content=self.replies.pop(0),
                                   headers={"content-type": "application/json", **FAST})
        return super().__call__(request)


CUT = b'{"id": "msg_01XYZ", "type": "message", "role": "assis'


def test_when_claude_answers_200_with_a_body_that_is_not_json_it_is_asked_again(key):
    api = BrokenBodies(CUT, CUT, ok())
    answer, usage = ask(client(api))
    assert answer == Answer(name="gated-delta", count=3) and api.calls == 3
    assert usage.requests == 1  # only the good reply had usage to bill


def test_when_claude_keeps_sending_broken_bodies_it_is_named_as_the_apis_fault(key):
    api = BrokenBodies(*[CUT] * 3)
    with pytest.raises(LLMError) as exc:
        ask(client(api, max_retries=2))
    err = exc.value
    assert api.calls == 3 and (err.status, err.kind) == (200, "invalid_response")
    assert "the Anthropic API answered 200 with a body that is not valid JSON" in str(err)
    assert "3 times; this is the API's fault, not a bug here" in str(err) and not isinstance(err, ValueError)
    assert err.__cause__ is None and err.__context__ is None  # one clear error, not a JSONDecodeError chain


def test_every_billed_token_counts_cache_reads_and_writes_included():
    u = Usage(input_tokens=1200, output_tokens=800, cache_creation_input_tokens=10_000, cache_read_input_tokens=50_000)
    assert u.billed_tokens == 62_000 and u.tokens == 2000
