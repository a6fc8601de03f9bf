"""LLM planners: one small protocol, `Planner`, and its implementations.

- `AnthropicLLM` asks Claude for a `ScalePlan` through the official SDK: tool use
  for structured output (one tool whose input schema is the plan's JSON schema),
  prompt caching of the long documents, retries with backoff on rate limits,
  overload, 5xx and connection errors, and token and dollar accounting.
- `ScriptedPlanner` is a fake for tests: it returns queued plans and records the
  requests it got.
- `make_planner` gives an `AnthropicLLM` when `ANTHROPIC_API_KEY` is set, else
  None (the caller then uses its offline planner, which lives elsewhere).

The API key is read from the environment only when the SDK client is built, is
never stored on the planner, never logged, and never put in an exception or a
repr. A pickled `AnthropicLLM` carries no client and no key: it rebuilds its
client from the environment of the process that uses it.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from pydantic import ValidationError

from actors.shared import metrics
from actors.scaler.plan import ScalePlan
from train.limits import GPU_MEMORY_GB, MAX_GPUS, MAX_HOURS

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-5"
TOOL_NAME = "submit_scale_plan"

# $ per million tokens: (input, output). Cache writes cost 1.25x input (5-minute
# ephemeral cache), cache reads 0.1x input. Keys are model names without a
# date suffix; "claude-sonnet-4-5-20250929" prices as "claude-sonnet-4-5".
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-0": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-0": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-haiku": (0.25, 1.25),
}
# An unknown model is priced at the most expensive rate in the table, so spend
# is never under-counted; a warning says so.
DEFAULT_PRICE_PER_MTOK: tuple[float, float] = (15.0, 75.0)
CACHE_WRITE_MULTIPLIER = 1.25
CACHE_READ_MULTIPLIER = 0.1

# Status codes worth another attempt: rate limit, overload, server errors.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})

SYSTEM_PROMPT = f"""\
You are the planner of an ML-research cluster. A minimum viable experiment (MVE) \
has worked at small scale; your job is to design how to scale it up, as one \
training run, and submit that design with the `{TOOL_NAME}` tool. Submit exactly \
one plan, through the tool only.

Hard limits (a plan outside them is rejected):
- at most {MAX_GPUS} GPUs (`gpus` <= {MAX_GPUS});
- at most {MAX_HOURS:g} hours of wall-clock time (`hours` <= {MAX_HOURS:g});
- the model, optimiser state and activations must fit in {GPU_MEMORY_GB:g} GB per GPU \
(bf16 training; size `optim.batch_size` and `seq_len` accordingly, use \
`optim.grad_accum` for a larger effective batch);
- `benchmark` must be a real benchmark the training engine has: bytes, mqar, \
wikitext103, fineweb.

Guidance:
- Typical scaled models have 10M-50M parameters; set `target_params` to the count \
you intend and choose `model` (d_model, n_layers, n_heads) to match it.
- Use the MVE's own architecture when it is a built-in family (gpt, rnn); when it \
needs its own code, use family "custom" with `path` and `class_name`, and put the \
code in `files` (relative paths only, e.g. "models/model.py").
- Include at least one baseline that shows whether the MVE's idea is what helps \
(e.g. a plain GPT of the same size, or an LSTM), and say why.
- Success criteria must be measurable on the chosen benchmark.
- Pick `max_steps` and `eval_interval` so the run fits the hours you ask for.
- `mve_id` is the MVE's three-digit number.
"""


# --------------------------------------------------------------------------- data


@dataclass
class Usage:
    """Tokens and dollars spent on one plan (all successful API responses)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    requests: int = 0  # API responses that were billed (failed attempts are not)

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_creation_input_tokens += other.cache_creation_input_tokens
        self.cache_read_input_tokens += other.cache_read_input_tokens
        self.cost_usd += other.cost_usd
        self.requests += other.requests


@dataclass
class PlanRequest:
    """What a planner needs to design a plan for one MVE."""

    mve_id: str
    # name -> text: the MVE's results docs, its code, the proposal's full-scale plans
    documents: dict[str, str]
    instructions: str = ""  # extra guidance, e.g. limits
    feedback: str | None = None  # why the previous plan was rejected, for a retry


class LLMError(RuntimeError):
    """The LLM could not be asked or did not answer. The message never holds the key."""


class PlanRejected(LLMError):
    """The model answered, but its reply did not give a valid ScalePlan.

    `reason` says why (naming the failing fields), `fields` lists them, and
    `usage` is what the rejected reply cost (it was billed all the same).
    """

    def __init__(self, reason: str, *, fields: Iterable[str] = (), usage: Usage | None = None) -> None:
        super().__init__(f"the model's plan was rejected: {reason}")
        self.reason = reason
        self.fields = tuple(fields)
        self.usage = usage if usage is not None else Usage()


@runtime_checkable
class Planner(Protocol):
    name: str

    def design_plan(self, request: PlanRequest) -> tuple[ScalePlan, Usage]: ...


# --------------------------------------------------------------------------- helpers


def _base_model_name(model: str) -> str:
    """'claude-sonnet-4-5-20250929' -> 'claude-sonnet-4-5'; '...-latest' likewise."""
    return re.sub(r"-(\d{8}|latest)$", "", model)


def price_for(model: str, prices: dict[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """($/Mtok input, $/Mtok output) for `model`, or None when it is not in the table."""
    table = {**PRICES_PER_MTOK, **(prices or {})}
    for key in (model, _base_model_name(model)):
        if key in table:
            inp, out = table[key]
            return float(inp), float(out)
    return None


def cost_usd(
    price: tuple[float, float],
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> float:
    p_in, p_out = price
    return (
        input_tokens * p_in
        + output_tokens * p_out
        + cache_creation_input_tokens * p_in * CACHE_WRITE_MULTIPLIER
        + cache_read_input_tokens * p_in * CACHE_READ_MULTIPLIER
    ) / 1_000_000


def format_validation_error(err: ValidationError) -> tuple[str, list[str]]:
    """One line per failing field, 'gpus: asks for 4 GPUs; the hard limit is 2 ...'."""
    parts: list[str] = []
    fields: list[str] = []
    for e in err.errors(include_url=False, include_input=False):
        loc = ".".join(str(x) for x in e.get("loc", ())) or "(plan)"
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        fields.append(loc)
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts), fields


def _retry_after_s(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds only), or None."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except (TypeError, ValueError):
            continue  # an HTTP date: fall back to our own backoff
        if value >= 0:
            return value
    return None


# --------------------------------------------------------------------------- Anthropic


class AnthropicLLM:
    """Claude as a `Planner`, through the official `anthropic` SDK."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        max_retries: int = 4,
        timeout_s: float = 120,
        max_tokens: int = 4096,
        client: Any = None,
        prices: dict[str, tuple[float, float]] | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_retry_after_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.name = f"anthropic:{model}"
        self.max_retries = max_retries
        self.timeout_s = float(timeout_s)
        self.max_tokens = int(max_tokens)
        self.prices = dict(prices or {})
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self._sleep = sleep
        self._price_warned = False
        # Our own retry loop owns backoff and accounting: the SDK makes one attempt.
        if client is not None:
            self._client = client.with_options(max_retries=0)
        else:
            self._client = self._build_client(api_key)

    def __repr__(self) -> str:
        return f"AnthropicLLM(model={self.model!r})"

    # A pickled planner (e.g. sent to a Ray actor) carries no client and no key.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_sleep"] = None if state.get("_sleep") is time.sleep else state.get("_sleep")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._sleep is None:
            self._sleep = time.sleep

    def _build_client(self, api_key: str | None) -> Any:
        import anthropic

        key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise LLMError("ANTHROPIC_API_KEY is not set; set it, or use the offline planner")
        return anthropic.Anthropic(api_key=key, max_retries=0, timeout=self.timeout_s)

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = self._build_client(None)
        return self._client

    # ----------------------------------------------------------------- request

    def tool(self) -> dict[str, Any]:
        return {
            "name": TOOL_NAME,
            "description": (
                "Submit the plan for scaling up this MVE. The plan is validated against the "
                f"hard limits (at most {MAX_GPUS} GPUs, {MAX_HOURS:g} hours, {GPU_MEMORY_GB:g} GB "
                "per GPU, a real benchmark)."
            ),
            "input_schema": ScalePlan.model_json_schema(),
        }

    def build_params(self, request: PlanRequest) -> dict[str, Any]:
        """The keyword arguments for `messages.create`.

        Cache layout (tools -> system -> messages is the API's prefix order):
        a breakpoint on the system prompt (shared by every plan) and one on the
        last document (shared by retries with feedback and by any agent planning
        the same MVE). Documents are sorted by name so the prefix is identical
        whoever builds it. Instructions and feedback come after the breakpoint.
        """
        cache = {"type": "ephemeral"}
        system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": dict(cache)}]

        content: list[dict[str, Any]] = [
            {"type": "text", "text": f"Documents for MVE {request.mve_id}: its results, its code, and its proposal."}
        ]
        for name in sorted(request.documents):
            text = request.documents[name]
            content.append({"type": "text", "text": f'<document name="{name}">\n{text}\n</document>'})
        content[-1]["cache_control"] = dict(cache)

        task = f"Design the plan for scaling up MVE {request.mve_id} and submit it with `{TOOL_NAME}`."
        if request.instructions:
            task += f"\n\nInstructions:\n{request.instructions}"
        content.append({"type": "text", "text": task})
        if request.feedback:
            content.append(
                {
                    "type": "text",
                    "text": f"Your previous plan was rejected:\n{request.feedback}\n\nSubmit a corrected plan.",
                }
            )

        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system,
            "tools": [self.tool()],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [{"role": "user", "content": content}],
        }

    # ----------------------------------------------------------------- calls

    def _backoff(self, retry: int, headers: Any) -> float:
        ra = _retry_after_s(headers)
        if ra is not None:
            return min(ra, self.max_retry_after_s)
        delay = min(self.max_backoff_s, self.backoff_s * (2**retry))
        return random.uniform(delay / 2, delay)  # jitter

    def _redact(self, text: str) -> str:
        client = self._client
        key = getattr(client, "api_key", None) if client is not None else None
        if isinstance(key, str) and key:
            text = text.replace(key, "[redacted]")
        return text

    def _create(self, params: dict[str, Any]) -> tuple[Any, int]:
        """One successful response and the attempts it took; LLMError otherwise."""
        import anthropic

        client = self._get_client()
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return client.messages.create(**params, timeout=self.timeout_s), attempt
            except anthropic.APIStatusError as err:
                status = err.status_code
                what = f"{status} {err.type or type(err).__name__}"
                detail = self._redact(err.api_message or "")
                if status not in RETRY_STATUS:
                    raise LLMError(
                        f"Anthropic API refused the request ({what}){': ' + detail if detail else ''}; "
                        f"model {self.model!r}, not retried"
                    ) from None
                headers = err.response.headers
            except anthropic.APIConnectionError as err:
                what = f"connection error ({type(err).__name__})"
                detail = ""
                headers = None
            except anthropic.AnthropicError as err:
                raise LLMError(
                    f"Anthropic SDK error ({type(err).__name__}): {self._redact(str(err))}; model {self.model!r}"
                ) from None
            if attempt == attempts:
                raise LLMError(
                    f"Anthropic API failed after {attempts} attempts ({self.max_retries} retries): "
                    f"last error {what}{': ' + detail if detail else ''}; model {self.model!r}. "
                    "The service may be overloaded or rate-limiting; try again later."
                )
            delay = self._backoff(attempt - 1, headers)
            log.warning(
                "Anthropic API %s on attempt %d/%d (model %s); retrying in %.2fs",
                what,
                attempt,
                attempts,
                self.model,
                delay,
            )
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _usage(self, response: Any) -> Usage:
        u = getattr(response, "usage", None)
        counts = {
            "input_tokens": int(getattr(u, "input_tokens", 0) or 0),
            "output_tokens": int(getattr(u, "output_tokens", 0) or 0),
            "cache_creation_input_tokens": int(getattr(u, "cache_creation_input_tokens", 0) or 0),
            "cache_read_input_tokens": int(getattr(u, "cache_read_input_tokens", 0) or 0),
        }
        price = price_for(self.model, self.prices)
        if price is None:
            price = DEFAULT_PRICE_PER_MTOK
            if not self._price_warned:
                log.warning(
                    "no price for model %r; counting it at $%g/$%g per million input/output tokens",
                    self.model,
                    *price,
                )
                self._price_warned = True
        usage = Usage(**counts, cost_usd=cost_usd(price, **counts), requests=1)
        metrics.record_llm_usage(self.model, usage)  # every billed response passes here
        return usage

    def create_message(self, params: dict[str, Any]) -> tuple[Any, Usage, int]:
        """One `messages.create` call with this client's retries and accounting:
        (response, usage, attempts). Other tools (the AutoResearch proposer) build
        their own params and share this path."""
        response, attempts = self._create(params)
        return response, self._usage(response), attempts

    def design_plan(self, request: PlanRequest) -> tuple[ScalePlan, Usage]:
        params = self.build_params(request)
        response, attempts = self._create(params)
        usage = self._usage(response)
        log.info(
            "plan for MVE %s: model=%s attempts=%d input=%d output=%d cache_write=%d cache_read=%d cost=$%.4f",
            request.mve_id,
            self.model,
            attempts,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
            usage.cost_usd,
        )
        plan = self._parse(response, request, usage)
        return plan, usage

    def _parse(self, response: Any, request: PlanRequest, usage: Usage) -> ScalePlan:
        stop = getattr(response, "stop_reason", None)
        cut_off = (
            f" (the reply stopped at max_tokens={self.max_tokens}; the plan may be truncated)"
            if stop == "max_tokens"
            else ""
        )
        blocks = [
            b
            for b in (getattr(response, "content", None) or [])
            if getattr(b, "type", None) == "tool_use" and getattr(b, "name", None) == TOOL_NAME
        ]
        if not blocks:
            kinds = ", ".join(str(getattr(b, "type", "?")) for b in (getattr(response, "content", None) or []))
            raise PlanRejected(
                f"the reply has no `{TOOL_NAME}` tool call (stop_reason={stop!r}, content: {kinds or 'empty'})"
                + cut_off,
                usage=usage,
            )
        data = blocks[0].input
        if not isinstance(data, dict):
            raise PlanRejected(f"the tool input is {type(data).__name__}, not an object" + cut_off, usage=usage)
        try:
            plan = ScalePlan.model_validate(copy.deepcopy(data))
        except ValidationError as err:
            reason, fields = format_validation_error(err)
            log.warning("plan for MVE %s rejected: %s", request.mve_id, reason)
            raise PlanRejected(reason + cut_off, fields=fields, usage=usage) from None
        if plan.mve_id != request.mve_id:
            raise PlanRejected(
                f"mve_id: the plan is for MVE {plan.mve_id}, but MVE {request.mve_id} was asked for",
                fields=["mve_id"],
                usage=usage,
            )
        return plan


# --------------------------------------------------------------------------- fake


class ScriptedPlanner:
    """A scripted `Planner` for tests.

    Each call to `design_plan` records the request and pops the next item of
    the script: a `ScalePlan` (or a dict, validated into one) is returned with
    `usage`, an exception (instance or class) is raised. An empty script
    raises LLMError.
    """

    def __init__(self, script: Iterable[Any] = (), *, name: str = "scripted", usage: Usage | None = None) -> None:
        self.name = name
        self._script: deque[Any] = deque(script)
        self._usage = usage if usage is not None else Usage()
        self.requests: list[PlanRequest] = []

    def push(self, *items: Any) -> None:
        self._script.extend(items)

    @property
    def remaining(self) -> int:
        return len(self._script)

    def design_plan(self, request: PlanRequest) -> tuple[ScalePlan, Usage]:
        self.requests.append(request)
        if not self._script:
            raise LLMError(f"{self.name}: no scripted reply left (call {len(self.requests)})")
        item = self._script.popleft()
        if isinstance(item, BaseException) or (isinstance(item, type) and issubclass(item, BaseException)):
            raise item
        if isinstance(item, dict):
            item = ScalePlan.model_validate(item)
        if not isinstance(item, ScalePlan):
            raise TypeError(f"{self.name}: scripted item is a {type(item).__name__}, not a ScalePlan")
        return item, Usage(**{k: getattr(self._usage, k) for k in self._usage.__dataclass_fields__})

    def __repr__(self) -> str:
        return f"ScriptedPlanner(name={self.name!r}, remaining={self.remaining})"


# --------------------------------------------------------------------------- factory


def make_planner(model: str | None = None, *, offline: bool | None = None) -> Planner | None:
    """An `AnthropicLLM` when `ANTHROPIC_API_KEY` is set and `offline` is not True, else None.

    The model is `model`, else `$ANTHROPIC_MODEL`, else DEFAULT_MODEL.
    """
    if offline:
        log.info("offline: no LLM planner")
        return None
    if not os.environ.get("ANTHROPIC_API_KEY"):
        log.info("ANTHROPIC_API_KEY is not set: no LLM planner")
        return None
    name = model or os.environ.get("ANTHROPIC_MODEL") or DEFAULT_MODEL
    planner = AnthropicLLM(name)
    log.info("LLM planner: %r", planner)
    return planner


__all__ = [
    "AnthropicLLM",
    "DEFAULT_MODEL",
    "LLMError",
    "PlanRejected",
    "PlanRequest",
    "Planner",
    "PRICES_PER_MTOK",
    "ScriptedPlanner",
    "TOOL_NAME",
    "Usage",
    "cost_usd",
    "make_planner",
    "price_for",
]
