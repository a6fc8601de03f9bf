"""A smoke test of a spec before it gets GPUs: does it build, run, and match
its plan?

    python -m train.smoke SPEC.yaml [--expected-params N] [--tolerance 0.1]

Builds the model on CPU, runs one forward and backward pass on a tiny batch of
the spec's own data, compares the parameter count with the plan's, and checks
the memory estimate against the hard limit. Prints one JSON object; exit 0 when
every check passed, 1 when one failed, 2 for a spec that does not load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from train.estimate import build_model_for, estimate
from train.limits import GPU_MEMORY_GB, machine_memory_gb
from train.spec import TrainSpec


def smoke_test(spec: TrainSpec, expected_params: int | None = None, tolerance: float = 0.10) -> dict:
    from train.data import build_dataset
    from train.models import count_parameters

    t0 = time.time()
    checks: dict[str, dict] = {}
    model = build_model_for(spec, "cpu")
    params = count_parameters(model)
    dataset = build_dataset(spec.data.benchmark, seq_len=spec.data.seq_len, seed=spec.seed, **spec.data.params)
    # Whole rows: cutting them short can leave no scored target (MQAR scores
    # only the queries at the end), and a loss over nothing is NaN.
    x, y = dataset.train_batch(1 if spec.data.seq_len > 1024 else 2, torch.Generator().manual_seed(0))
    logits = model(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    checks["forward_backward"] = {
        "ok": bool(torch.isfinite(loss)) and all(g is not None and torch.isfinite(g).all() for g in grads),
        "loss": loss.item(),
    }
    if expected_params:
        off = abs(params - expected_params) / expected_params
        checks["params"] = {"ok": off <= tolerance, "params": params, "expected": expected_params,
                            "off_by": round(off, 4), "tolerance": tolerance}
    est = estimate(spec)
    # Per GPU against the 80 GB of one; on CPU, every worker together against this machine.
    need, limit = ((est.memory_per_gpu_gb, GPU_MEMORY_GB) if spec.resources.gpus > 0
                   else (est.memory_cpu_gb, round(machine_memory_gb(), 1)))
    checks["memory"] = {"ok": need <= limit, "estimate_gb": round(need, 2), "limit_gb": limit}
    return {"ok": all(c["ok"] for c in checks.values()), "params": params, "checks": checks,
            "estimate": est.to_dict(), "seconds": round(time.time() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--expected-params", type=int, default=None, help="the plan's parameter count")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed relative parameter-count gap")
    args = parser.parse_args(argv)
    try:
        spec = TrainSpec.from_yaml(args.spec)
    except ValueError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 2
    try:
        report = smoke_test(spec, args.expected_params, args.tolerance)
    except Exception as exc:  # the point of a smoke test: report what broke
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
