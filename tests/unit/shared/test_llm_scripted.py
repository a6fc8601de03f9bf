"""ScriptedLLM: the one fake of Claude. Only the send is scripted; the real
parsing, validation, retry with feedback and accounting run over its replies."""

from __future__ import annotations

import pickle

import anthropic
import pytest
from pydantic import BaseModel

from actors.shared.llm import LLMError, ReplyRejected
from actors.shared.llm_scripted import ScriptedLLM


class Answer(BaseModel):
    name: str
    count: int


def ask(llm, **kw):
    return llm.ask(system="s", content=[{"type": "text", "text": "q"}], tool_name="submit", output=Answer, **kw)


def test_replies_run_through_the_real_validation_and_its_one_retry():
    llm = ScriptedLLM([{"name": "a"}, {"name": "a", "count": 2}], usage={"input_tokens": 1000, "output_tokens": 10})
    answer, usage = ask(llm)
    assert answer == Answer(name="a", count=2)
    assert usage.requests == 2 and usage.input_tokens == 2000 and usage.cost_usd > 0
    first, second = llm.requests
    assert first["tool_choice"] == {"type": "tool", "name": "submit"}
    assert "count: Field required" in second["messages"][-1]["content"][0]["content"]
    assert llm.remaining == 0


def test_text_replies_exceptions_callables_and_an_empty_script():
    llm = ScriptedLLM(["no tool here", "still no tool", LLMError("overloaded", status=529),
                       lambda params: {"name": params["model"], "count": 1}])
    with pytest.raises(ReplyRejected, match="no `submit` tool call"):
        ask(llm)
    with pytest.raises(LLMError, match="overloaded"):
        ask(llm)
    assert ask(llm)[0].name == llm.model
    with pytest.raises(LLMError, match="no scripted reply left"):
        ask(llm)
    assert len(llm.requests) == 5


def test_sdk_errors_map_like_real_ones_and_a_copy_pickles():
    import httpx2

    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    response = httpx2.Response(529, request=request, json={"type": "error", "error": {"type": "overloaded_error",
                                                                                      "message": "busy"}})
    llm = ScriptedLLM([anthropic.APIStatusError("busy", response=response,
                                                body={"type": "error", "error": {"type": "overloaded_error",
                                                                                 "message": "busy"}})])
    with pytest.raises(LLMError) as exc:
        ask(llm)
    assert exc.value.status == 529 and "529" in str(exc.value)
    copy = pickle.loads(pickle.dumps(ScriptedLLM([{"name": "b", "count": 1}])))
    assert ask(copy)[0].name == "b"
