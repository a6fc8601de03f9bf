"""What a TrainSpec will cost before it runs: parameters, memory per GPU,
FLOPs per token, GPU-hours and dollars.

The parameter count is exact: the model is built on PyTorch's meta device (no
memory, no compute) and counted. Memory per GPU is the usual accounting for
AdamW with mixed precision under DDP (each GPU holds a full replica):

- weights fp32 (4 B/param), gradients fp32 (4 B), AdamW moments (8 B), and
  DDP's gradient buckets (4 B);
- activations kept for backward: 34 * s * b * d bytes per layer in 16-bit, the
  Korthikanti et al. (2022) count for a Transformer block whose attention does
  not store the s x s score matrix (SDPA/flash), doubled in fp32; plus the
  logits (s * b * V, kept in bf16 and fp32 for the loss and its gradient);
- 1 GB for the CUDA context and 10% allocator slack.

On CPU (gpus 0) every worker process holds the same, with activations in fp32
(the loop never autocasts on CPU) and 0.5 GB of process overhead instead of the
CUDA context; `memory_cpu_gb` is the sum over the CPU workers.

It is an estimate: the smoke test and the run's measured peak memory say
whether it held.

`check_fits(spec)` is the one check of a spec against the hard limits of a
scaled experiment (train.limits): the ScalePlan boundary and
`train.run(spec, limits=True)` call it. `estimate` itself knows no limits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from train.limits import LimitExceeded, check_gpus, check_hours, cpu_memory_problem, memory_problem
from train.spec import DataSpec, TrainSpec

GB = 1024**3

# Vocabulary sizes by benchmark, read from the spec without loading any data.
# tests/unit/test_estimate.py checks them against the real datasets.
_DEFAULT_VOCAB = {"bytes": 256, "wikitext103": 256, "mqar": 8192, "fineweb": 1024}


def vocab_size_of(data: DataSpec) -> int:
    return int(data.params.get("vocab_size", _DEFAULT_VOCAB[data.benchmark]))


@dataclass
class Estimate:
    params: int
    flops_per_token: float
    tokens_per_step: int
    total_tokens: int
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float
    memory_per_gpu_gb: float
    memory_cpu_gb: float  # all CPU workers together, when trained on CPU
    compute_hours: float  # wall-clock hours the token budget needs at the assumed MFU
    projected_hours: float  # the smaller of that and the deadline
    gpu_hours: float
    cost_usd: float

    def to_dict(self) -> dict:
        return asdict(self)


def build_model_for(spec: TrainSpec, device: str | torch.device = "meta") -> torch.nn.Module:
    from train.models import build_model

    m = spec.model
    with torch.device(device):
        return build_model(
            m.family,
            vocab_size=vocab_size_of(spec.data),
            seq_len=spec.data.seq_len,
            d_model=m.d_model,
            n_layers=m.n_layers,
            n_heads=m.n_heads,
            n_kv_heads=m.n_kv_heads,
            mlp_ratio=m.mlp_ratio,
            dropout=m.dropout,
            path=m.path,
            class_name=m.class_name,
            kwargs=m.kwargs,
        )


def estimate(spec: TrainSpec) -> Estimate:
    from train.models import count_parameters, flops_per_token

    try:
        model = build_model_for(spec, "meta")
    except (NotImplementedError, RuntimeError):
        # Some custom modules do work at construction that meta tensors cannot.
        model = build_model_for(spec, "cpu")
    params = count_parameters(model)
    fpt = float(flops_per_token(model, spec.data.seq_len))

    b, s, vocab = spec.optim.batch_size, spec.data.seq_len, vocab_size_of(spec.data)
    d = getattr(model, "d_model", spec.model.d_model)
    layers = getattr(model, "n_layers", spec.model.n_layers)
    act_bytes_per_value = 2 if spec.precision == "bf16" else 4
    logits = s * b * vocab * (2 + 4 + 4)
    activations = layers * 34 * s * b * d * (act_bytes_per_value / 2) + logits
    weights = 4 * params  # fp32 master weights
    grads = 8 * params  # fp32 gradients, plus DDP's bucketed copy of them
    optimizer = 8 * params  # AdamW's two fp32 moments
    base = weights + grads + optimizer + activations
    overhead = 1.0 * GB + 0.10 * base
    per_gpu_gb = (base + overhead) / GB
    cpu_activations = layers * 34 * s * b * d * 2 + logits  # fp32 on CPU, whatever the spec's precision
    cpu_base = weights + grads + optimizer + cpu_activations
    cpu_gb = spec.resources.cpu_workers * (cpu_base * 1.10 + 0.5 * GB) / GB

    tokens_per_step = spec.tokens_per_step
    total_tokens = tokens_per_step * spec.budget.max_steps
    gpus = spec.resources.gpus
    if gpus > 0:
        flops_per_s = gpus * spec.cost.gpu_peak_tflops * 1e12 * spec.cost.assumed_mfu
        compute_hours = fpt * total_tokens / flops_per_s / 3600
    else:
        compute_hours = 0.0  # CPU runs are not projected in GPU time
    projected_hours = min(compute_hours, spec.budget.max_hours)
    gpu_hours = projected_hours * gpus
    return Estimate(
        params=params,
        flops_per_token=fpt,
        tokens_per_step=tokens_per_step,
        total_tokens=total_tokens,
        weights_gb=weights / GB,
        grads_gb=grads / GB,
        optimizer_gb=optimizer / GB,
        activations_gb=activations / GB,
        overhead_gb=overhead / GB,
        memory_per_gpu_gb=per_gpu_gb,
        memory_cpu_gb=cpu_gb,
        compute_hours=compute_hours,
        projected_hours=projected_hours,
        gpu_hours=gpu_hours,
        cost_usd=gpu_hours * spec.cost.usd_per_gpu_hour,
    )


def check_fits(spec: TrainSpec) -> Estimate:
    """`spec` against the hard limits of a scaled experiment: its estimate, or
    LimitExceeded naming each field and limit it breaks, e.g. "resources.gpus:
    asks for 4 GPUs; the hard limit is 2 GPUs per experiment". The 80 GB per
    GPU applies to GPU jobs; CPU jobs (gpus 0) must fit, all workers together,
    in this machine's memory. A model that cannot be built raises the
    ValueError that says why."""
    problems = []
    for field, value, rule in (("resources.gpus", spec.resources.gpus, check_gpus),
                               ("budget.max_hours", spec.budget.max_hours, check_hours)):
        try:
            rule(value)
        except ValueError as exc:
            problems.append(f"{field}: {exc}")
    est = estimate(spec)
    on_gpu = spec.resources.gpus > 0
    need = est.memory_per_gpu_gb if on_gpu else est.memory_cpu_gb
    if not math.isfinite(need):
        problems.append("optim.batch_size/data.seq_len/model: the memory estimate is not finite")
    elif problem := (memory_problem(need) if on_gpu else cpu_memory_problem(need, spec.resources.cpu_workers)):
        problems.append(problem)
    if problems:
        raise LimitExceeded("; ".join(problems))
    return est
