"""A scripted Anthropic Messages API on an httpx2 mock transport, for tests that
drive the real SDK through multi-turn tool use (no network)."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from actors.shared.llm import LLMClient

FAKE_KEY = "fake-anthropic-key-for-tests"
MODEL = "claude-sonnet-4-5"
FAST = {"retry-after-ms": "1"}  # the SDK honours it: retries without a real wait
USAGE = {"input_tokens": 900, "output_tokens": 300, "cache_creation_input_tokens": 2000,
         "cache_read_input_tokens": 6000}


def tool_calls(*calls: tuple[str, dict], text: str = "", usage: dict | None = None) -> dict:
    """One assistant turn calling tools: (name, input) pairs, in order."""
    content = ([{"type": "text", "text": text}] if text else []) + [
        {"type": "tool_use", "id": f"toolu_{i}_{name}", "name": name, "input": args}
        for i, (name, args) in enumerate(calls)]
    return {"content": content, "stop_reason": "tool_use", "usage": usage or USAGE}


def overloaded() -> tuple[int, dict, dict]:
    return 529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, FAST


class MessagesAPI:
    """Each request pops the next reply: a turn (dict from `tool_calls`), an
    error (status, body, headers), raw bytes (a broken body), or a callable
    (request number, request body) -> one of those."""

    def __init__(self, *replies: Any, repeat_last: bool = False) -> None:
        self.replies = list(replies)
        self.repeat_last = repeat_last
        self.bodies: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        reply = self.replies[0] if self.repeat_last and len(self.replies) == 1 else self.replies.pop(0)
        if callable(reply):
            reply = reply(len(self.bodies), self.bodies[-1])
        if isinstance(reply, bytes):
            return httpx2.Response(200, content=reply, headers={"content-type": "application/json", **FAST})
        if isinstance(reply, tuple):
            status, body, headers = reply
            return httpx2.Response(status, json=body, headers=headers)
        message = {"id": f"msg_{len(self.bodies):03d}", "type": "message", "role": "assistant", "model": MODEL,
                   "stop_sequence": None, **reply}
        return httpx2.Response(200, json=message)

    @property
    def calls(self) -> int:
        return len(self.bodies)

    def tool_results(self, i: int) -> list[dict]:
        """The tool results request `i` (0-based) carried back to Claude."""
        return [b for b in self.bodies[i]["messages"][-1]["content"] if b.get("type") == "tool_result"]


def client(api: MessagesAPI, **options: Any) -> LLMClient:
    return LLMClient(MODEL, http_client=httpx2.Client(transport=httpx2.MockTransport(api)), **options)


def billed(usage: dict = USAGE) -> int:
    return sum(usage.values())

