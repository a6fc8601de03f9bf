"""The agentic scaler: Claude scales one MVE in a multi-turn tool-use session.

It reads the MVE's notes, code and proposal, writes the scaled experiment's
model, configs and data loading into a staging folder, runs the smoke test,
reads the failure, fixes it, runs it again, and submits the plan (the tools
are `agent_tools`). Each turn is one `LLMClient.create` (the SDK's retries,
usage priced and counted), and before each:

- `lease.check()`: the Lease heartbeats from its thread; once it is lost the
  session stops at once (LeaseLost), before sending anything more;
- a stop request (Ctrl-C) stops it (Stopped);
- the budget: at most `max_turns` turns, and a turn is not started when the
  tokens or dollars already spent, plus what the last turn cost, would pass
  `max_tokens` or `max_usd` (BudgetExhausted, a StepFailed).

Prompt caching as for one call: the system prompt (and the tools before it)
and the MVE's documents carry breakpoints, and one more moves to the newest
turn, so each turn re-reads the conversation from the cache.

The transcript (every turn's text, tool calls and their results, and usage)
is kept with secrets redacted; the caller saves it in the scaled folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from actors.scaler.agent_tools import ToolResult, Workbench, tool_specs
from actors.scaler.plan import BenchmarkPlan, ScalePlan
from actors.scaler.steps import StepFailed
from actors.shared.llm import LLMClient, LLMError
from actors.shared.pricing import Usage
from actors.shared.sandbox import redact_secrets
from actors.shared.stopping import check_stop
from train.limits import GPU_MEMORY_GB, MAX_GPUS, MAX_HOURS

log = logging.getLogger(__name__)

MAX_RESPONSE_TOKENS = 8192  # a turn may write a whole model file
RESULT_CHARS = 6000  # of a tool result, in the conversation and the transcript
NUDGE = ("Continue with the tools. When the smoke test passes, submit the plan with submit_scale_plan "
         "(or submit_benchmark_plan).")

SYSTEM_PROMPT = f"""\
You are the scaling engineer of an ML-research cluster. A minimum viable experiment (MVE) \
worked at small scale. Your job: turn it into one scaled-up experiment that tests the \
same hypothesis, write its code, make its smoke test pass, and submit its plan.

How to work:
1. Read the MVE's notes, code and proposal (list_files, read_file). Find what the MVE \
tested: its model, its data, its metric.
2. Scale the MVE's own model. When it is not one of the engine's built-in families \
(gpt, rnn), write it as a PyTorch nn.Module file in the staging folder (e.g. \
models/model.py) and use model.family "custom" with model.path and model.class_name, and \
its constructor arguments in model.kwargs. The engine calls model(idx) with token ids \
LongTensor[B, T] and needs float logits [B, T, vocab] back (no loss inside); it passes \
vocab_size and seq_len to the constructor when it names them. Set model.d_model and \
model.n_layers to the model's width and depth (the memory estimate uses them).
3. Choose the size (10M-50M parameters is typical; target_params is what you intend; the \
smoke test checks the count within 10%), the data (a benchmark the engine has: bytes, \
mqar, wikitext103, fineweb), the training budget, and a same-size baseline (a built-in \
family) that shows whether the MVE's idea is what helps.
4. run_smoke_test with the plan. When it fails, read the output, fix the files or the \
plan, and run it again. Use estimate to check size and memory.
5. submit_scale_plan once the smoke test passed on exactly that plan and those files.

An MVE that measures code rather than training a model (a kernel benchmark) is scaled as \
a benchmark job: write the benchmark script, give a smoke_command that passes on CPU in \
under a minute, and submit_benchmark_plan.

Hard limits (a plan outside them is refused): at most {MAX_GPUS} GPUs, at most \
{MAX_HOURS:g} hours, and the model, optimiser state and activations within \
{GPU_MEMORY_GB:g} GB per GPU (bf16). Write only in the staging folder. Be brief in text; \
act through the tools.
"""


class BudgetExhausted(StepFailed):
    """The session reached its turn, token or dollar limit without a plan."""


@dataclass
class Budget:
    max_turns: int
    max_tokens: int
    max_usd: float


@dataclass
class SessionResult:
    plan: ScalePlan | BenchmarkPlan
    usage: Usage
    transcript: list[dict] = field(default_factory=list)
    estimate: dict | None = None  # from the smoke test that passed on this plan


class AgenticSession:
    """One MVE, one session. `lease` is the agent's Lease (anything with
    `check()` that raises once the work is no longer ours)."""

    def __init__(self, llm: LLMClient, workbench: Workbench, *, budget: Budget, lease: Any,
                 documents: dict[str, str]) -> None:
        self.llm, self.bench, self.budget, self.lease = llm, workbench, budget, lease
        self.documents = documents
        self.usage = Usage()
        self.transcript: list[dict] = []
        self._last_turn = Usage()

    # -- the loop --------------------------------------------------------------

    def run(self) -> SessionResult:
        messages: list[dict] = [{"role": "user", "content": self._opening()}]
        try:
            for turn in range(1, self.budget.max_turns + 1):
                self.lease.check()
                check_stop("during the agentic session")
                self._check_budget(turn)
                response = self._send(messages, turn)
                blocks = _echo(response)
                messages.append({"role": "assistant", "content": blocks or [{"type": "text", "text": "(no reply)"}]})
                calls = [b for b in blocks if b["type"] == "tool_use"]
                if not calls:
                    messages.append({"role": "user", "content": [{"type": "text", "text": NUDGE}]})
                    self._record(turn, "user", text=NUDGE)
                    continue
                results, submitted = [], None
                for call in calls:
                    self.lease.check()  # a lost lease stops the session between tool calls too
                    result = self._run_tool(turn, call)
                    results.append({"type": "tool_result", "tool_use_id": call["id"], "is_error": result.is_error,
                                    "content": result.text[-RESULT_CHARS:]})
                    submitted = submitted or result.submitted
                messages.append({"role": "user", "content": results})
                if submitted is not None:
                    log.info("agentic session for MVE %s: plan submitted after %d turn(s), $%.4f", self.bench.mve_id,
                             turn, self.usage.cost_usd)
                    return SessionResult(submitted, self.usage, self.redacted(), self.bench.estimate)
            raise BudgetExhausted(f"the agentic session used its {self.budget.max_turns} turns without submitting "
                                  f"a plan", usage=self.usage, transcript=self.redacted())
        except LLMError as exc:  # what the session billed before the API gave out goes with the error
            exc.usage.add(self.usage)
            exc.transcript = self.redacted()  # type: ignore[attr-defined]
            raise

    def _check_budget(self, turn: int) -> None:
        spent, last, b = self.usage, self._last_turn, self.budget
        why = None
        if spent.cost_usd + last.cost_usd > b.max_usd:
            why = (f"it spent ${spent.cost_usd:.2f}, and another turn (about ${last.cost_usd:.2f}) would pass its "
                   f"${b.max_usd:.2f} budget")
        elif spent.billed_tokens + last.billed_tokens > b.max_tokens:
            why = (f"it used {spent.billed_tokens:,} tokens, and another turn (about {last.billed_tokens:,}) would "
                   f"pass its {b.max_tokens:,}-token budget")
        if why:
            self._record(turn, "budget", text=f"stopped: {why}")
            raise BudgetExhausted(f"the agentic session stopped at its budget without submitting a plan: {why}",
                                  usage=self.usage, transcript=self.redacted())

    def _send(self, messages: list[dict], turn: int) -> Any:
        params = {"system": [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
                  "tools": tool_specs(), "messages": _with_moving_breakpoint(messages),
                  "max_tokens": MAX_RESPONSE_TOKENS}
        response, used = self.llm.create(params)
        self.usage.add(used)
        self._last_turn = used
        self._record(turn, "assistant", blocks=_echo(response), stop_reason=getattr(response, "stop_reason", None),
                     usage={"input": used.input_tokens, "output": used.output_tokens,
                            "cache_write": used.cache_creation_input_tokens,
                            "cache_read": used.cache_read_input_tokens, "cost_usd": round(used.cost_usd, 6)})
        return response

    def _run_tool(self, turn: int, call: dict) -> ToolResult:
        t0 = time.monotonic()
        result = self.bench.call(call["name"], call["input"])
        self._record(turn, "tool", id=call["id"], name=call["name"], is_error=result.is_error,
                     seconds=round(time.monotonic() - t0, 2), result=result.text[-RESULT_CHARS:])
        log.info("agentic session for MVE %s, turn %d: %s -> %s", self.bench.mve_id, turn, call["name"],
                 "error" if result.is_error else "ok")
        return result

    # -- the conversation ------------------------------------------------------

    def _opening(self) -> list[dict]:
        """The MVE's documents (sorted, so the cached prefix is the same for any
        agent), a breakpoint after them, then the task."""
        blocks = [{"type": "text", "text": f"MVE {self.bench.mve_id}: its notes, results and proposal. Its code "
                                           f"and more files: list_files."}]
        for name in sorted(self.documents):
            blocks.append({"type": "text", "text": f'<document name="{name}">\n{self.documents[name]}\n</document>'})
        blocks[-1]["cache_control"] = {"type": "ephemeral"}
        blocks.append({"type": "text", "text": f"Scale up MVE {self.bench.mve_id}: write its code in the staging "
                                               f"folder, make its smoke test pass, and submit the plan."})
        self._record(0, "user", text=f"MVE {self.bench.mve_id}; documents: {', '.join(sorted(self.documents))}")
        return blocks

    def _record(self, turn: int, role: str, **event: Any) -> None:
        self.transcript.append({"turn": turn, "role": role, "at": round(time.time(), 3), **event})

    def redacted(self) -> list[dict]:
        """The transcript with every secret of this process's environment (and
        the API key) replaced by [redacted]."""
        return json.loads(redact_secrets(json.dumps(self.transcript)))


def _echo(response: Any) -> list[dict]:
    """The reply's blocks as the next request must carry them."""
    blocks = []
    for b in getattr(response, "content", None) or []:
        if b.type == "text" and b.text.strip():
            blocks.append({"type": "text", "text": b.text})
        elif b.type == "tool_use":
            blocks.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.input})
    return blocks


def _with_moving_breakpoint(messages: list[dict]) -> list[dict]:
    """The messages with one more cache breakpoint, on the last block of the
    newest turn (the opening's stays); earlier turns' moving ones are not sent."""
    out = []
    for i, m in enumerate(messages):
        content = [dict(b) for b in m["content"]]
        if i > 0:
            for b in content:
                b.pop("cache_control", None)
        out.append({"role": m["role"], "content": content})
    if len(out) > 1:
        out[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return out
