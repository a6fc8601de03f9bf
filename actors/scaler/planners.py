"""The planner that needs no model: designs a ScalePlan by rule.

Used when no ANTHROPIC_API_KEY is set (a laptop, CI). From the MVE's
`results.json` it takes the benchmark, model family and sequence length; then:

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

from actors.scaler.plan import Baseline, ScalePlan
from train.estimate import estimate
from train.limits import MAX_GPUS, MAX_HOURS
from train.spec import ModelSpec, OptimSpec

DEFAULT_TARGET_PARAMS = 25_000_000
TOKENS_PER_PARAM = 20


class OfflinePlanner:
    name = "offline"

    def __init__(self, target_params: int = DEFAULT_TARGET_PARAMS, batch_size: int = 32):
        self.target_params = target_params
        self.batch_size = batch_size

    def design(self, mve_id: str, facts: dict, title: str = "") -> ScalePlan:
        """`facts` is the MVE's results.json: benchmark, model_family, seq_len,
        metric and value (what the MVE reached), all optional."""
        benchmark = facts.get("benchmark", "bytes")
        family = facts.get("model_family", "gpt")
        if family not in ("gpt", "rnn"):
            family = "gpt"
        seq_len = int(facts.get("seq_len", 256))
        # MVE notes record data settings under "data_params" or "data"; keep the
        # ones the benchmark takes (e.g. MQAR's num_kv_pairs and vocab_size).
        from train.data import benchmark_params

        known = benchmark_params(benchmark)
        raw = facts.get("data_params") or facts.get("data") or {}
        data_params = {k: v for k, v in raw.items() if k in known}
        model = self._size_model(family, benchmark, seq_len, data_params)

        plan = self._plan(mve_id, title, facts, model, benchmark, data_params, seq_len, gpus=1, max_steps=1, hours=1.0)
        est = estimate(plan.to_train_spec())
        plan = plan.model_copy(update={"target_params": est.params})  # the size actually designed
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
                           gpus=gpus, max_steps=steps, hours=budget_hours)
        return final.model_copy(update={"target_params": est.params})

    # -- rules -------------------------------------------------------------------

    def _size_model(self, family: str, benchmark: str, seq_len: int, data_params: dict) -> ModelSpec:
        from train.estimate import build_model_for
        from train.models import count_parameters
        from train.spec import TrainSpec

        best, best_gap = None, None
        for layers in range(2, 25):
            d = 64 * layers
            spec_model = ModelSpec(family=family, d_model=d, n_layers=layers, n_heads=max(1, d // 64))
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

    def _plan(self, mve_id, title, facts, model, benchmark, data_params, seq_len, *, gpus, max_steps, hours) -> ScalePlan:
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
        other = "rnn" if model.family == "gpt" else "gpt"
        return ScalePlan(
            mve_id=mve_id,
            title=title or f"MVE {mve_id} scaled: {model.family} d{model.d_model}x{model.n_layers} on {benchmark}",
            rationale=(f"Offline rule-based plan: the MVE reached {metric}={reached} at "
                       f"{facts.get('params', 'unknown')} parameters; scale width and depth together to "
                       f"about {self.target_params / 1e6:.0f}M parameters at ~{TOKENS_PER_PARAM} tokens per parameter."),
            model=model,
            target_params=self.target_params,
            benchmark=benchmark,
            data_params=data_params,
            seq_len=seq_len,
            optim=OptimSpec(lr=6e-4 if model.d_model <= 768 else 3e-4, warmup_steps=min(500, max(1, max_steps // 20)),
                            batch_size=self.batch_size),
            max_steps=max_steps,
            eval_interval=max(1, max_steps // 20),
            gpus=gpus,
            hours=hours,
            baselines=[Baseline(name=f"{other}-same-size", family=other,
                                why=f"is the gain specific to the {model.family} MVE design?")],
            success_criteria=criteria,
            early_stop_target=target,
            early_stop_patience=5,
        )
