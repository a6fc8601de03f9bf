"""`ScriptedLLM`: the one fake of Claude, for tests and offline rehearsals.

It is an `LLMClient` whose send pops the next scripted reply instead of calling
the API; everything above the send is the real code: accounting, the tool-use
parsing, validation and the one retry with feedback, the mapping of SDK errors.
Each reply becomes a real `anthropic.types.Message`:

- a dict: the input of a call to the tool the request forces;
- a str: a text-only reply (no tool call);
- an `anthropic.types.Message`: returned as it is;
- a callable: called with the request's params, and its result used as above;
- an exception (instance or class): raised as the send would raise it
  (an `anthropic.APIStatusError` becomes an LLMError like a real one).

`requests` records the params of every send (deep copies), in order.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any, Iterable

from actors.shared.llm import DEFAULT_MODEL, LLMClient, LLMError


class ScriptedLLM(LLMClient):
    def __init__(self, script: Iterable[Any] = (), *, model: str = DEFAULT_MODEL,
                 usage: dict[str, int] | None = None, **options: Any) -> None:
        super().__init__(model, **options)
        self._script: deque[Any] = deque(script)
        # What each reply is billed: the API's usage object, e.g. {"input_tokens": 100, "output_tokens": 50}.
        self.reply_usage = {"input_tokens": 0, "output_tokens": 0, **(usage or {})}
        self.requests: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"ScriptedLLM(model={self.model!r}, remaining={self.remaining})"

    @property
    def remaining(self) -> int:
        return len(self._script)

    def push(self, *items: Any) -> None:
        self._script.extend(items)

    def _send(self, params: dict[str, Any]) -> tuple[Any, int]:
        self.requests.append(copy.deepcopy(params))
        if not self._script:
            raise LLMError(f"ScriptedLLM: no scripted reply left (request {len(self.requests)})", model=self.model)
        item = self._script.popleft()
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item()
        if isinstance(item, BaseException):
            raise item
        if callable(item) and not isinstance(item, (dict, str)):
            item = item(params)
        return self._message(item, params), 1

    def _message(self, item: Any, params: dict[str, Any]) -> Any:
        from anthropic.types import Message

        if isinstance(item, Message):
            return item
        n = len(self.requests)
        if isinstance(item, str):
            content, stop = [{"type": "text", "text": item}], "end_turn"
        elif isinstance(item, dict):
            forced = params.get("tool_choice") or {}
            name = forced.get("name") or (params.get("tools") or [{}])[0].get("name", "tool")
            content = [{"type": "tool_use", "id": f"toolu_scripted_{n:04d}", "name": name, "input": item}]
            stop = "tool_use"
        else:
            raise TypeError(f"ScriptedLLM: a scripted reply is a dict, str, Message, callable or exception, "
                            f"not {type(item).__name__}")
        return Message.model_validate({
            "id": f"msg_scripted_{n:04d}", "type": "message", "role": "assistant",
            "model": params.get("model", self.model), "content": content, "stop_reason": stop,
            "stop_sequence": None, "usage": dict(self.reply_usage),
        })
