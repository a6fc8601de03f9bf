"""The two planners: `ClaudePlanner` (Claude through the shared LLM client) and
`OfflinePlanner` (rules, no model). Both turn one MVE into a `ScalePlan`.

`ClaudePlanner` builds the prompt (the MVE's documents, the hard limits) and
asks once through `LLMClient.ask`: tool use whose input schema is ScalePlan's,
the client's single retry with feedback when a plan fails validation.

`OfflinePlanner` is used when no ANTHROPIC_API_KEY is set (a laptop, CI), and
when Claude cannot be reached. It scales the MVE's own model: when the MVE's
code holds a trainable language model it is ported (`model_port`: imported
only in a sandboxed child, sized by its own constructor arguments, copied into
models/, a same-size GPT named as the baseline); else the built-in family that
results.json names (keeping its grouped-query ratio, rope_base and MLP kind). An MVE
with neither (a kernel benchmark, an analysis) is declined: it needs the LLM
planner. From the MVE's `results.json` it takes the benchmark, model family
and sequence length; then:

- size: width and depth scaled together to the parameter target (default 25M,
  inside the usual 10M-50M), keeping d_model = 64 * n_layers, the aspect ratio
  of the Kaplan et al. (2020) models, with 64-wide heads; the count is exact
  (the candidate model is built on the meta device and counted);
- tokens: about 20 per parameter (Hoffmann et al. 2022), turned into steps by
  the tokens each step consumes, then cut to what fits in 90% of the hours;
- hardware: one GPU when the run fits in 4 hours on one, else two; hours are
  the projected time plus 25% and a quarter hour, at most the 6-hour limit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from actors.scaler.sandboxed import PROBE_TIMEOUT_S
from actors.scaler.plan import Baseline, ScalePlan
from actors.shared.llm import LLMClient
from actors.shared.pricing import Usage
from train.estimate import estimate
from train.limits import GPU_MEMORY_GB, MAX_GPUS, MAX_HOURS
from train.spec import ModelSpec, OptimSpec

DEFAULT_TARGET_PARAMS = 25_000_000
TOKENS_PER_PARAM = 20

# --------------------------------------------------------------------------- Claude

TOOL_NAME = "submit_scale_plan"

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

TOOL_DESCRIPTION = (
    "Submit the plan for scaling up this MVE. The plan is validated against the hard limits "
    f"(at most {MAX_GPUS} GPUs, {MAX_HOURS:g} hours, {GPU_MEMORY_GB:g} GB per GPU, a real benchmark)."
)


class ClaudePlanner:
    """Claude designs the plan; `llm` is the shared client (or its scripted fake)."""

    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm
        self.name = f"anthropic:{llm.model}"

    def __repr__(self) -> str:
        return f"ClaudePlanner({self.llm!r})"

    @staticmethod
    def content(mve_id: str, documents: dict[str, str], instructions: str = "") -> list[dict[str, Any]]:
        """The user turn. Cache layout (tools -> system -> messages is the API's
        prefix order): one breakpoint on the system prompt (shared by every plan),
        one on the last document (shared by the retry and by any agent planning
        the same MVE). Documents are sorted by name so the prefix is the same
        whoever builds it; the task comes after the breakpoint."""
        blocks: list[dict[str, Any]] = [
            {"type": "text", "text": f"Documents for MVE {mve_id}: its results, its code, and its proposal."}]
        for name in sorted(documents):
            blocks.append({"type": "text", "text": f'<document name="{name}">\n{documents[name]}\n</document>'})
        blocks[-1]["cache_control"] = {"type": "ephemeral"}
        task = f"Design the plan for scaling up MVE {mve_id} and submit it with `{TOOL_NAME}`."
        if instructions:
            task += f"\n\nInstructions:\n{instructions}"
        blocks.append({"type": "text", "text": task})
        return blocks

    def design_plan(self, mve_id: str, documents: dict[str, str], instructions: str = "") -> tuple[ScalePlan, Usage]:
        """A valid plan for MVE `mve_id` and what it cost; ReplyRejected (an
        LLMError) when two replies in a row were not valid plans."""
        def for_this_mve(plan: ScalePlan) -> str | None:
            if plan.mve_id != mve_id:
                return f"mve_id: the plan is for MVE {plan.mve_id}, but MVE {mve_id} was asked for"
            return None

        return self.llm.ask(
            system=[{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
            content=self.content(mve_id, documents, instructions), tool_name=TOOL_NAME, output=ScalePlan,
            description=TOOL_DESCRIPTION, check=for_this_mve)


# --------------------------------------------------------------------------- offline


class OfflinePlanner:
    name = "offline"

    def __init__(self, target_params: int = DEFAULT_TARGET_PARAMS, batch_size: int = 32):
        self.target_params = target_params
        self.batch_size = batch_size

    def plan_mve(self, mve_id: str, folders: list[Path], facts: dict,
                 timeout_s: float = PROBE_TIMEOUT_S) -> tuple[ScalePlan, str, dict | None]:
        """The plan for one MVE, where its model comes from, and the estimate
        when the sandboxed child checked it (a ported model): the MVE's own
        language model when its code (`folders`) holds one (ported, see
        model_port), else the built-in family its results.json names. An MVE
        with neither (a kernel benchmark, an analysis) raises NoModel: it needs
        the LLM planner."""
        from actors.scaler.model_port import NoModel, describe_without_model, may_hold_language_model, port_offline

        self.read_facts(mve_id, facts)  # what results.json says wrong is said before any code runs
        family = facts.get("model_family")
        why_not_ported = ""
        if may_hold_language_model(folders):
            try:
                port = port_offline(mve_id=mve_id, folders=folders, facts=facts, target_params=self.target_params,
                                    batch_size=self.batch_size, timeout_s=timeout_s)
                return ScalePlan.model_validate(port.plan), f"its own model, {port.source}", port.estimate
            except NoModel as exc:
                why_not_ported = str(exc)
        if family in ("gpt", "rnn"):
            plan = self.design(mve_id, facts)
            if why_not_ported:
                plan = plan.model_copy(update={"rationale": plan.rationale + f" (Its code was not ported: "
                                                                              f"{why_not_ported[:300]}.)"})
            return plan, f"the built-in {family} its results.json names", None
        why = why_not_ported or describe_without_model(folders, facts)
        raise NoModel(f"MVE {mve_id} has no model the offline planner can train ({why}); it needs the LLM "
                      f"planner (set ANTHROPIC_API_KEY)")

    def design(self, mve_id: str, facts: dict, title: str = "", *, model: ModelSpec | None = None,
               idea: str = "") -> ScalePlan:
        """`facts` is the MVE's results.json: benchmark, model_family, seq_len,
        metric and value (what the MVE reached), all optional. `model` is the
        scaled model when the caller sized it (a ported one); else the built-in
        family of `facts`, sized here, keeping the MVE's grouped-query ratio and
        the constructor options it recorded (e.g. rope_base)."""
        benchmark, family, seq_len, data_params = self.read_facts(mve_id, facts)
        if model is None:
            carried = self._carried(family, facts)
            model = self._size_model(family, benchmark, seq_len, data_params, carried)
            kept = []
            if model.n_kv_heads:
                kept.append(f"grouped-query attention ({model.n_heads} query heads to {model.n_kv_heads} KV heads, "
                            f"the MVE's {facts['n_heads']}:{facts['n_kv_heads']})")
            kept += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in model.kwargs.items()]
            if kept:
                idea = f"keeps the MVE's {' and '.join(kept)}"

        plan = self._plan(mve_id, title, facts, model, benchmark, data_params, seq_len, gpus=1, max_steps=1,
                          hours=1.0, idea=idea)
        est = estimate(plan.to_train_spec())
        tokens = TOKENS_PER_PARAM * est.params
        gpus = 1
        steps = max(1, math.ceil(tokens / (self.batch_size * seq_len)))
        one_gpu_hours = self._hours(plan, steps, gpus)
        if one_gpu_hours > 4.0:
            gpus = MAX_GPUS
        steps = max(1, math.ceil(tokens / (self.batch_size * seq_len * gpus)))
        hours = self._hours(plan, steps, gpus)
        if hours > 0.9 * MAX_HOURS:  # cut the token budget to what the deadline allows
            steps = max(1, int(steps * 0.9 * MAX_HOURS / hours))
            hours = self._hours(plan, steps, gpus)
        budget_hours = min(MAX_HOURS, round(hours * 1.25 + 0.25, 2))
        final = self._plan(mve_id, title, facts, model, benchmark, data_params, seq_len,
                           gpus=gpus, max_steps=steps, hours=budget_hours, idea=idea, params=est.params)
        return final.model_copy(update={"target_params": est.params})  # the size actually designed

    # -- rules -------------------------------------------------------------------

    @staticmethod
    def read_facts(mve_id: str, facts: dict) -> tuple[str, str, int, dict]:
        """(benchmark, family, seq_len, data_params) from results.json, or a
        ValueError naming the bad entry: the file is written by people."""
        from train.data import BENCHMARKS, benchmark_params

        where = f"MVE {mve_id}'s results.json"
        benchmark = facts.get("benchmark", "bytes")
        if benchmark not in BENCHMARKS:
            raise ValueError(f"{where}: benchmark {benchmark!r} is not one the training engine has "
                             f"({', '.join(BENCHMARKS)})")
        family = facts.get("model_family", "gpt")
        if family not in ("gpt", "rnn"):
            family = "gpt"
        seq_len = facts.get("seq_len", 256)
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, float)) or seq_len != int(seq_len) \
                or seq_len < 2:
            raise ValueError(f"{where}: seq_len must be a whole number >= 2, got {seq_len!r}")
        # MVE notes record data settings under "data_params" or "data"; keep the
        # ones the benchmark takes (e.g. MQAR's num_kv_pairs and vocab_size).
        raw = facts.get("data_params") or facts.get("data") or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: data_params must be an object, got {type(raw).__name__}")
        known = benchmark_params(benchmark)
        return benchmark, family, int(seq_len), {k: v for k, v in raw.items() if k in known}

    @staticmethod
    def _carried(family: str, facts: dict) -> dict:
        """What of the MVE's built-in model the scaled one keeps: the query-to-KV
        head ratio (grouped-query attention) and constructor options of the
        family that results.json records (GPT: rope_base, mlp)."""
        if family != "gpt":
            return {}
        carried: dict = {}
        heads, kv = facts.get("n_heads"), facts.get("n_kv_heads")
        if isinstance(heads, int) and isinstance(kv, int) and 0 < kv < heads and heads % kv == 0:
            carried["kv_ratio"] = heads // kv
        base = facts.get("rope_base")
        if isinstance(base, (int, float)) and not isinstance(base, bool) and base > 0:
            carried["rope_base"] = float(base)
        mlp = str(facts.get("mlp", "")).strip().lower().replace("-", "").replace("_", "")
        mlp = {"relu2": "relu2", "relusquared": "relu2", "gelu": "gelu", "swiglu": "swiglu"}.get(mlp)
        if mlp:  # the MVE compared MLPs: the scaled model keeps the one it tested
            carried["mlp"] = mlp
        return carried

    def _size_model(self, family: str, benchmark: str, seq_len: int, data_params: dict,
                    carried: dict | None = None) -> ModelSpec:
        from train.estimate import build_model_for
        from train.models import count_parameters
        from train.spec import TrainSpec

        carried = carried or {}
        best, best_gap = None, None
        for layers in range(2, 25):
            d = 64 * layers
            heads = max(1, d // 64)
            kv = None
            if carried.get("kv_ratio"):
                kv = max(1, heads // carried["kv_ratio"])
                while heads % kv:
                    kv -= 1
            kwargs = {k: carried[k] for k in ("rope_base", "mlp") if k in carried}
            spec_model = ModelSpec(family=family, d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                                   kwargs=kwargs)
            spec = TrainSpec.parse({"model": spec_model.model_dump(),
                                    "data": {"benchmark": benchmark, "seq_len": seq_len, "params": data_params}})
            params = count_parameters(build_model_for(spec, "meta"))
            gap = abs(math.log(params / self.target_params))
            if best_gap is None or gap < best_gap:
                best, best_gap = spec_model, gap
            if params > self.target_params:
                break
        return best

    def _hours(self, plan: ScalePlan, steps: int, gpus: int) -> float:
        trial = plan.model_copy(update={"max_steps": steps, "gpus": gpus, "hours": MAX_HOURS})
        return estimate(trial.to_train_spec()).compute_hours

    def _plan(self, mve_id, title, facts, model, benchmark, data_params, seq_len, *, gpus, max_steps, hours,
              idea="", params=None) -> ScalePlan:
        metric = "val_accuracy" if benchmark == "mqar" else "val_bpb"
        reached = facts.get("value")
        if metric == "val_accuracy":
            criteria = [f"{metric} >= {max(float(reached or 0.0), 0.9):.2f} on held-out MQAR sequences",
                        "beats the baseline's val_accuracy at the same parameter count"]
            target = 0.99
        else:
            criteria = ["val_bpb below the baseline's at the same parameter count and token budget",
                        "val_bpb keeps improving over the last quarter of training"]
            target = None
        if model.family == "custom":
            gpt = self._size_model("gpt", benchmark, seq_len, data_params)
            baseline = Baseline(name=f"gpt-d{gpt.d_model}x{gpt.n_layers}-same-size", family="gpt",
                                why=f"a GPT of about the same size ({gpt.d_model} wide, {gpt.n_layers} layers) on "
                                    f"the same data and tokens: is the MVE's architecture what helps?")
            what = f"{model.class_name} ({model.path})"
        else:
            other = "rnn" if model.family == "gpt" else "gpt"
            baseline = Baseline(name=f"{other}-same-size", family=other,
                                why=f"is the gain specific to the {model.family} MVE design?")
            what = f"{model.family} d{model.d_model}x{model.n_layers}"
        size = f"{params / 1e6:.1f}M" if params else f"about {self.target_params / 1e6:.0f}M"
        return ScalePlan(
            mve_id=mve_id,
            title=title or f"MVE {mve_id} scaled: {what} at {size} params on {benchmark}",
            rationale=(f"Offline rule-based plan: the MVE reached {metric}={reached} at "
                       f"{facts.get('params', 'unknown')} parameters; scale width and depth together to "
                       f"about {self.target_params / 1e6:.0f}M parameters at ~{TOKENS_PER_PARAM} tokens per parameter"
                       + (f"; it {idea}" if idea else "") + "."),
            model=model,
            target_params=params or self.target_params,
            benchmark=benchmark,
            data_params=data_params,
            seq_len=seq_len,
            optim=OptimSpec(lr=6e-4 if model.d_model <= 768 else 3e-4, warmup_steps=min(500, max(1, max_steps // 20)),
                            batch_size=self.batch_size),
            max_steps=max_steps,
            eval_interval=max(1, max_steps // 20),
            gpus=gpus,
            hours=hours,
            baselines=[baseline],
            success_criteria=criteria,
            early_stop_target=target,
            early_stop_patience=5,
        )
