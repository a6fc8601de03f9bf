"""Benchmark the training engine's Ray Train loop.

Measures, in one run, for the same spec (model, data, batch):
  1. steady-state tokens/s of the loop under Ray Train (TorchTrainer, one CPU
     worker) against the same loop in a plain process with the same number of
     threads; target ratio >= 0.95;
  2. the time from calling `train.run` to the end of the first optimiser step,
     with Ray already up (the cluster case), and how long starting local Ray
     takes on top (the laptop case); aim under 15 s.

    python scripts/bench_train.py [--steps 300] [--out runs/bench]

Where a GPU is present it also reports tokens/s and MFU of a ~17M-parameter GPT
at sequence length 1024 in bf16 (one GPU, plain process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from train.loop import LocalSession, run_loop  # noqa: E402
from train.spec import TrainSpec  # noqa: E402


def bench_spec(steps: int) -> TrainSpec:
    return TrainSpec.parse({
        "name": "bench",
        "model": {"family": "gpt", "d_model": 128, "n_layers": 4, "n_heads": 4},
        "data": {"benchmark": "bytes", "seq_len": 128, "params": {"max_bytes": 2_000_000}},
        "optim": {"batch_size": 16, "lr": 1e-3, "warmup_steps": 10},
        "precision": "fp32",
        "resources": {"gpus": 0, "cpu_workers": 1, "cpus_per_worker": 1},
        "budget": {"max_steps": steps, "max_hours": 1, "eval_interval": steps, "eval_batches": 4},
        "logging": {"tensorboard": False, "log_interval": 5},
    })


def steady_tokens_per_s(history: list[dict]) -> float:
    """Median per-step throughput over the logged steps, skipping the first
    quarter (allocator and kernel warm-up)."""
    rates = [h["tokens_per_s"] for h in history if "tokens_per_s" in h]
    return statistics.median(rates[len(rates) // 4:])


def bench_plain(spec: TrainSpec) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(int(spec.resources.cpus_per_worker))  # what Ray gives a 1-CPU worker
    try:
        t0 = time.time()
        state = run_loop(spec, LocalSession("cpu"))
    finally:
        torch.set_num_threads(threads)
    return {"where": "plain process", "tokens_per_s": steady_tokens_per_s(state.history),
            "to_first_step_s": state.first_step_at - t0, "steps": state.step}


def bench_ray_train(spec: TrainSpec, workdir: Path) -> dict:
    from train.run import run

    t0 = time.time()
    res = run(spec, out_dir=workdir / "ray", ledger=None)
    return {"where": "Ray Train (1 CPU worker)", "tokens_per_s": steady_tokens_per_s(res["history"]),
            "to_first_step_s": res["first_step_at"] - t0, "steps": res["steps"]}


def bench_gpu_mfu(steps: int = 50) -> dict | None:
    if not torch.cuda.is_available():
        return None
    spec = TrainSpec.parse({
        "name": "mfu",
        "model": {"family": "gpt", "d_model": 384, "n_layers": 8, "n_heads": 6},
        "data": {"benchmark": "bytes", "seq_len": 1024, "params": {"max_bytes": 8_000_000}},
        "optim": {"batch_size": 32, "warmup_steps": 5},
        "precision": "bf16",
        "budget": {"max_steps": steps, "eval_interval": steps, "eval_batches": 2},
        "logging": {"tensorboard": False, "log_interval": 5},
    })
    from train.estimate import estimate

    est = estimate(spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpus": 1})}))
    state = run_loop(spec, LocalSession("cuda"))
    tps = steady_tokens_per_s(state.history)
    peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
    name = torch.cuda.get_device_name()
    peak_flops = next((v for k, v in peak.items() if k in name), 312e12)
    return {"gpu": name, "params": est.params, "tokens_per_s": round(tps), "mfu": round(tps * est.flops_per_token / peak_flops, 3),
            "peak_tflops_assumed": peak_flops / 1e12}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    import ray

    spec = bench_spec(args.steps)
    t0 = time.time()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.time() - t0
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        ray_row = bench_ray_train(spec, Path(tmp))
    ray.shutdown()
    plain_row = bench_plain(spec)
    gpu = bench_gpu_mfu()

    rows = [plain_row, ray_row]
    print(f"\nSame spec ({spec.model.family} d{spec.model.d_model}x{spec.model.n_layers}, seq {spec.data.seq_len}, "
          f"batch {spec.optim.batch_size}, {args.steps} steps, 1 CPU thread)")
    print(f"{'where':>26}  {'tokens/s':>10}  {'to first step (s)':>18}")
    for r in rows:
        print(f"{r['where']:>26}  {r['tokens_per_s']:>10.0f}  {r['to_first_step_s']:>18.2f}")
    ratio = ray_row["tokens_per_s"] / plain_row["tokens_per_s"]
    print(f"\nRay Train / plain tokens/s: {ratio:.3f} (target >= 0.95)")
    print(f"train.run -> first optimiser step: {ray_row['to_first_step_s']:.1f} s with Ray up; "
          f"+{ray_start_s:.1f} s to start local Ray (aim < 15 s)")
    if gpu:
        print(f"GPU: {gpu}")
    else:
        print("GPU: none present; the 17M-parameter bf16 MFU figure needs one")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "bench_train.json"
    out.write_text(json.dumps({"rows": rows, "ratio": ratio, "ray_start_s": ray_start_s, "gpu": gpu}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
