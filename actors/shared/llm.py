"""The one LLM client: Claude through the official `anthropic` SDK.

    llm = make_llm()                       # None without ANTHROPIC_API_KEY: use the offline path
    plan, usage = llm.ask(system=[...], content=[...], tool_name="submit_plan", output=ScalePlan,
                          check=lambda plan: None if plan.mve_id == "007" else "mve_id: ...")
    response, usage = llm.create(params)   # one messages.create, for callers that build their own

- Retries are the SDK's own (`max_retries`): it backs off exponentially, honours
  `retry-after`, and retries 408/409/429/5xx and connection errors. What fails
  after them becomes one `LLMError` (status, error type, model, the message
  with the key redacted). The SDK does not look at a 200's body: one that is
  not valid JSON (a proxy's page cut short, a torn connection) is retried here
  as many times, then named as the API's fault (`kind` "invalid_response").
- `create` is one call; multi-turn tool use (the agentic scaler) is a loop of
  `create` calls over a growing message list, owned by its caller.
- `ask` is one forced tool-use call whose input is validated into a pydantic
  model (and by the caller's `check`). The SDK cannot know what a valid answer
  is, so this module adds one thing: a reply with no tool call, or with an
  input that fails validation, gets ONE more turn with the error as the tool
  result; a second failure raises `ReplyRejected`. Prompt-caching breakpoints
  are the caller's (`cache_control` on its system and content blocks); the
  retry appends turns after them, so the cached prefix is reused.
- Every billed response is priced (`actors.shared.pricing`) and reported to
  `actors.shared.metrics.record_llm_usage`; the usage a call returns or raises
  includes rejected replies.
- `ScriptedLLM` (`actors.shared.llm_scripted`) replaces only the send, for tests.

The API key is read from the environment in the process that sends, when the
SDK client is first built. It is never stored on anything that pickles (a
pickled client carries no SDK client and no key), never logged, and redacted
from every error.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ValidationError

from actors.shared import metrics
from actors.shared.pricing import Usage, usage_of
from train.spec import format_validation_error

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_MAX_RETRIES = 4
DEFAULT_TIMEOUT_S = 120.0
ASK_ATTEMPTS = 2  # a rejected reply gets one more turn, with the rejection as feedback
INVALID_BODY = "invalid_response"  # LLMError.kind of a 200 whose body is not JSON

M = TypeVar("M", bound=BaseModel)
# What the caller checks beyond the model's schema: why the value is refused, or None.
Check = Callable[[Any], "str | None"]


class LLMError(RuntimeError):
    """Claude could not be asked, or did not answer. The message never holds the key.

    `status` and `kind` are the API's HTTP status and error type when it answered
    with an error; `usage` is what was billed before the failure.
    """

    def __init__(self, message: str, *, model: str | None = None, status: int | None = None,
                 kind: str | None = None, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.model, self.status, self.kind = model, status, kind
        self.usage = usage if usage is not None else Usage()


class ReplyRejected(LLMError):
    """Claude answered, twice, but neither reply was valid.

    `reason` is why the last one was refused (naming the failing fields),
    `fields` lists the fields pydantic refused, `usage` counts both replies.
    """

    def __init__(self, reason: str, *, fields: tuple[str, ...] = (), attempts: int = ASK_ATTEMPTS,
                 model: str | None = None, usage: Usage | None = None) -> None:
        times = "twice" if attempts == 2 else f"{attempts} times"
        super().__init__(f"the model's reply was rejected {times}: {reason}", model=model, usage=usage)
        self.reason, self.fields, self.attempts = reason, tuple(fields), attempts


class _Invalid(Exception):
    """One reply that does not hold a valid answer (internal to `ask`)."""

    def __init__(self, reason: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason, self.fields = reason, fields


def error_fields(err: ValidationError) -> tuple[str, ...]:
    """The dotted locations pydantic refused, e.g. ('gpus', 'model.d_model')."""
    return tuple(".".join(str(p) for p in e["loc"]) for e in err.errors(include_url=False, include_input=False))


class LLMClient:
    """Claude: `ask` for a validated tool-use answer, `create` for a raw call."""

    def __init__(self, model: str = DEFAULT_MODEL, *, max_tokens: int = 4096,
                 max_retries: int = DEFAULT_MAX_RETRIES, timeout_s: float = DEFAULT_TIMEOUT_S,
                 prices: dict[str, tuple[float, float]] | None = None, http_client: Any = None) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model = model
        self.max_tokens = int(max_tokens)
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.prices = dict(prices or {})
        self._http_client = http_client  # tests: an httpx client over a mock transport
        self._client: Any = None  # the SDK client, built on first use; holds the key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    # A copy sent to another process (a Ray actor) carries no SDK client, so no
    # key: it builds its own from that process's environment.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_http_client"] = None  # not picklable; a copy talks to the real API
        return state

    # ----------------------------------------------------------------- transport

    def _sdk(self) -> Any:
        if self._client is None:
            import anthropic

            key = os.environ.get("ANTHROPIC_API_KEY")
            if not key:
                raise LLMError("ANTHROPIC_API_KEY is not set; set it, or run offline", model=self.model)
            self._client = anthropic.Anthropic(api_key=key, max_retries=self.max_retries, timeout=self.timeout_s,
                                               http_client=self._http_client)
        return self._client

    def _send(self, params: dict[str, Any]) -> tuple[Any, int]:
        """One `messages.create` with the SDK's retries: (Message, attempts).
        The one method `ScriptedLLM` replaces. A 200 whose body is not JSON is
        sent again (the SDK retries only errors it can see in the status), with
        the SDK's backoff, `retry-after(-ms)` honoured; after `max_retries` more
        tries it is an LLMError that says the API sent it."""
        sdk = self._sdk()
        attempts = 0
        for retry in range(self.max_retries + 1):
            raw = sdk.messages.with_raw_response.create(**params)
            attempts += raw.retries_taken + 1
            try:
                return raw.parse(), attempts
            except json.JSONDecodeError as exc:
                bad, status = exc, raw.status_code
                log.warning("the Anthropic API answered %s with a body that is not valid JSON (%s); attempt %d of %d",
                            raw.status_code, exc.msg, retry + 1, self.max_retries + 1)
                if retry < self.max_retries:
                    time.sleep(_retry_delay(raw.headers, retry))
        raise LLMError(f"the Anthropic API answered {status} with a body that is not valid JSON ({bad.msg} at char "
                       f"{bad.pos}) {attempts} times; this is the API's fault, not a bug here: try again later "
                       f"(model {self.model!r})", model=self.model, status=status, kind=INVALID_BODY)

    def _redact(self, text: str) -> str:
        keys = {os.environ.get("ANTHROPIC_API_KEY"), getattr(self._client, "api_key", None)}
        for key in keys:
            if isinstance(key, str) and key:
                text = text.replace(key, "[redacted]")
        return text

    def _error(self, err: Exception) -> LLMError:
        """An SDK exception, after the SDK's own retries, as one clear LLMError."""
        import anthropic

        where = f"model {self.model!r}"
        if isinstance(err, anthropic.APIStatusError):
            # The last request carries the SDK's retry count in a header.
            try:
                tries = err.response.request.headers.get("x-stainless-retry-count")
            except RuntimeError:  # a response built without its request
                tries = None
            attempts = int(tries) + 1 if tries and tries.isdigit() else 1
            detail = self._redact(err.api_message or "")
            after = f"after {attempts} attempts" if attempts > 1 else "not retried"
            return LLMError(f"Anthropic API error {err.status_code} {err.type or type(err).__name__}"
                            f"{': ' + detail if detail else ''} ({after}; {where})",
                            model=self.model, status=err.status_code, kind=err.type)
        if isinstance(err, anthropic.APIConnectionError):
            return LLMError(f"could not reach the Anthropic API ({type(err).__name__}) after "
                            f"{self.max_retries + 1} attempts; {where}. Check the network and ANTHROPIC_BASE_URL",
                            model=self.model, kind="connection_error")
        return LLMError(f"Anthropic SDK error ({type(err).__name__}): {self._redact(str(err))}; {where}",
                        model=self.model)

    # ----------------------------------------------------------------- calls

    def create(self, params: dict[str, Any]) -> tuple[Any, Usage]:
        """One `messages.create` (model and max_tokens default to this client's):
        (response, usage), or LLMError once the SDK's retries are spent."""
        import anthropic

        params = {"model": self.model, "max_tokens": self.max_tokens, **params}
        model = params["model"]
        try:
            response, attempts = self._send(params)
        except anthropic.AnthropicError as err:
            raise self._error(err) from None
        usage = usage_of(response, model, self.prices)
        metrics.record_llm_usage(model, usage)  # every billed response passes here
        log.info("claude %s: attempts=%d input=%d output=%d cache_write=%d cache_read=%d cost=$%.4f", model,
                 attempts, usage.input_tokens, usage.output_tokens, usage.cache_creation_input_tokens,
                 usage.cache_read_input_tokens, usage.cost_usd)
        return response, usage

    def ask(self, *, system: str | list[dict], content: list[dict], tool_name: str, output: type[M],
            description: str = "", check: Check | None = None, max_tokens: int | None = None) -> tuple[M, Usage]:
        """Claude's answer as a validated `output`, through the forced tool `tool_name`.

        `content` is the user turn (its blocks may carry `cache_control`). A reply
        without the tool call, or whose input fails `output`'s validation or
        `check` (which returns why it refuses a value, or None), gets one more
        turn with that reason; a second failure raises ReplyRejected.
        """
        tool = {"name": tool_name, "description": description or f"Submit the answer as a {output.__name__}.",
                "input_schema": output.model_json_schema()}
        params: dict[str, Any] = {
            "model": self.model, "max_tokens": max_tokens or self.max_tokens, "system": system, "tools": [tool],
            "tool_choice": {"type": "tool", "name": tool_name}, "messages": [{"role": "user", "content": content}],
        }
        usage = Usage()
        for attempt in range(1, ASK_ATTEMPTS + 1):
            try:
                response, used = self.create(params)
            except LLMError as exc:
                exc.usage.add(usage)
                raise
            usage.add(used)
            try:
                return self._answer(response, tool_name, output, check, params["max_tokens"]), usage
            except _Invalid as bad:
                log.warning("%s reply %d/%d rejected: %s", tool_name, attempt, ASK_ATTEMPTS, bad.reason)
                if attempt == ASK_ATTEMPTS:
                    raise ReplyRejected(bad.reason, fields=bad.fields, model=self.model, usage=usage) from None
                params = {**params, "messages": params["messages"] + _feedback(response, tool_name, bad.reason)}
        raise AssertionError("unreachable")

    @staticmethod
    def _answer(response: Any, tool_name: str, output: type[M], check: Check | None, max_tokens: int) -> M:
        stop = getattr(response, "stop_reason", None)
        cut = (f" (the reply stopped at max_tokens={max_tokens}; the answer may be truncated)"
               if stop == "max_tokens" else "")
        content = list(getattr(response, "content", None) or [])
        calls = [b for b in content if b.type == "tool_use" and b.name == tool_name]
        if not calls:
            kinds = ", ".join(str(b.type) for b in content) or "empty"
            raise _Invalid(f"the reply has no `{tool_name}` tool call (stop_reason={stop!r}, content: {kinds}){cut}")
        data = calls[0].input
        if not isinstance(data, dict):
            raise _Invalid(f"the tool input is {type(data).__name__}, not an object{cut}")
        try:
            value = output.model_validate(copy.deepcopy(data))
        except ValidationError as err:
            raise _Invalid(format_validation_error(err) + cut, error_fields(err)) from None
        problem = check(value) if check is not None else None
        if problem:
            named = re.match(r"([\w.]+): ", problem)  # "mve_id: ..." names its field
            raise _Invalid(problem, (named.group(1),) if named else ())
        return value


def _retry_delay(headers: Any, retry: int) -> float:
    """Seconds before sending again: what the API asks for (`retry-after-ms`,
    `retry-after` in seconds), else the SDK's own backoff (0.5 s doubling, at most 8 s)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name))
        except (TypeError, ValueError):
            continue
        if 0 <= value * scale <= 60:
            return value * scale
    return min(0.5 * 2 ** retry, 8.0)


def _feedback(response: Any, tool_name: str, reason: str) -> list[dict]:
    """The turns that tell Claude why its reply was refused: its reply, then the
    refusal as the result of each tool call it made (or as text, without one)."""
    echoed: list[dict] = []
    results: list[dict] = []
    ask_again = f"Rejected: {reason}\nCall `{tool_name}` again with a corrected input."
    for block in getattr(response, "content", None) or []:
        if block.type == "text" and block.text.strip():
            echoed.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            echoed.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
            results.append({"type": "tool_result", "tool_use_id": block.id, "is_error": True, "content": ask_again})
    if not results:
        results.append({"type": "text", "text": f"Your reply did not call `{tool_name}`. {ask_again}"})
    turns = [{"role": "assistant", "content": echoed}] if echoed else []
    if not echoed:
        # Nothing to echo (an empty reply): the roles must still alternate.
        turns.append({"role": "assistant", "content": [{"type": "text", "text": "(no reply)"}]})
    return turns + [{"role": "user", "content": results}]


def make_llm(model: str | None = None, *, offline: bool = False, **options: Any) -> LLMClient | None:
    """An `LLMClient` when ANTHROPIC_API_KEY is set and not `offline`, else None
    (the caller then takes its offline path). The model is `model`, else
    $ANTHROPIC_MODEL, else DEFAULT_MODEL."""
    if offline:
        log.info("offline: no LLM")
        return None
    if not os.environ.get("ANTHROPIC_API_KEY"):
        log.info("ANTHROPIC_API_KEY is not set: no LLM")
        return None
    llm = LLMClient(model or os.environ.get("ANTHROPIC_MODEL") or DEFAULT_MODEL, **options)
    log.info("LLM: %r", llm)
    return llm


__all__ = [
    "DEFAULT_MODEL",
    "LLMClient",
    "LLMError",
    "ReplyRejected",
    "Usage",
    "error_fields",
    "make_llm",
]
