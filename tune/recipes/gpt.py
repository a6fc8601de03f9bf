"""The default hardware-scaling recipe: the training engine's GPT on the byte corpus.

Each trial is one `train.loop.run_loop` over a TrainSpec built from the trial's
hyperparameters, so the sweep trains exactly what `python -m train.run` trains.

- samples are tokens; the batch unit of one GPU is `seqs_per_gpu` sequences of
  `seq_len` tokens, the granule one sequence. batch_size and minibatch_size
  (tokens, all GPUs together) become the per-worker micro-batch
  (minibatch / seq_len / workers sequences) and gradient accumulation
  (batch / minibatch), so one optimiser step sees batch_size tokens.
- the score of an evaluation is 1 - val_bpb / 8: the fraction of the 8 bits per
  byte of a uniform byte model that the model saves (0 for an untrained or
  diverged model, higher is better).
- every trial trains `steps` optimiser steps and evaluates every
  `eval_interval` steps on the same `eval_seqs` validation sequences.

With --local in "inprocess" mode the trial trains in its own process with as
many threads as CPUs it holds; otherwise (the cluster, or --local-workers) on
one DDP worker per GPU of the shape (see tune.recipes.workers).
"""

from __future__ import annotations

from typing import Any, Callable

from tune.space import BatchUnit, Param

SETTINGS: dict[str, Any] = {
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "seq_len": 64,
    "seqs_per_gpu": 2,  # the per-GPU batch unit is seqs_per_gpu * seq_len tokens
    "steps": 100,
    "eval_interval": 20,
    "eval_seqs": 128,
    "max_bytes": 2_000_000,
    "target_score": 0.45,  # val_bpb 4.4
    "seed": 0,
    "max_hours": 1.0,
}

HYPERPARAMS: dict[str, Param] = {
    "lr": Param(3e-3, 1e-4, 3e-2, log=True),
    "weight_decay": Param(0.1, 0.0, 0.3),
    "warmup_frac": Param(0.1, 0.0, 0.5),
    "beta2": Param(0.95, 0.9, 0.999),
}

# batch = min_batch * 2**k with k in [0, 3]; k = 1 by default: 4 sequences of 64 tokens per GPU.
BATCH_EXPONENTS = (1, 3)

UNIFORM_BITS_PER_BYTE = 8.0


def batch_unit(settings: dict) -> BatchUnit:
    return BatchUnit(per_gpu=settings["seqs_per_gpu"] * settings["seq_len"], granule=settings["seq_len"])


def evaluate(metrics: dict, settings: dict) -> float:
    """Score of one evaluation: 1 - val_bpb / 8, floored at 0."""
    bpb = metrics.get("val_bpb")
    if bpb is None or not bpb == bpb or bpb == float("inf"):
        return 0.0
    return max(0.0, 1.0 - float(bpb) / UNIFORM_BITS_PER_BYTE)


def check_settings(settings: dict) -> None:
    for key in ("d_model", "n_layers", "n_heads", "seq_len", "seqs_per_gpu", "steps", "eval_interval",
                "eval_seqs", "max_bytes"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ValueError(f"{key} must be a positive integer, got {settings[key]!r}")
    if settings["seq_len"] < 2:
        raise ValueError("seq_len must be at least 2")
    if settings["target_score"] is not None and not 0 < settings["target_score"] < 1:
        raise ValueError(f"target_score must be in (0, 1), got {settings['target_score']}")
    from train.estimate import build_model_for
    from train.spec import SpecError

    hp = {name: p.default for name, p in HYPERPARAMS.items()}
    seqs = settings["seqs_per_gpu"] * 2 ** BATCH_EXPONENTS[0]
    hp.update(batch_size=seqs * settings["seq_len"], minibatch_size=seqs * settings["seq_len"])
    try:
        build_model_for(spec_for(hp, settings, workers=1), "meta")
    except SpecError as exc:
        raise ValueError(str(exc)) from None
    from train.data import build_dataset

    # The corpus is read once here (a fraction of a second) so that a setting
    # it cannot work with fails now, not in every trial.
    build_dataset("bytes", seq_len=settings["seq_len"], seed=settings["seed"], max_bytes=settings["max_bytes"])


def spec_for(hp: dict, settings: dict, workers: int, name: str = "hw_trial", gpus: bool = False):
    """The TrainSpec of one trial on `workers` data-parallel workers: one per
    GPU of the shape with `gpus` (the cluster: resources.gpus = g * n), else
    CPU workers (--local: resources.cpu_workers)."""
    from train.spec import TrainSpec

    seq = settings["seq_len"]
    batch_seqs, mini_seqs = hp["batch_size"] // seq, hp["minibatch_size"] // seq
    micro = mini_seqs // workers
    steps = settings["steps"]
    return TrainSpec.parse({
        "name": name,
        "seed": settings["seed"],
        "model": {"family": "gpt", "d_model": settings["d_model"], "n_layers": settings["n_layers"],
                  "n_heads": settings["n_heads"]},
        "data": {"benchmark": "bytes", "seq_len": seq, "params": {"max_bytes": settings["max_bytes"]}},
        "optim": {"lr": hp["lr"], "weight_decay": hp["weight_decay"], "betas": [0.9, hp["beta2"]],
                  "warmup_steps": round(hp["warmup_frac"] * steps), "batch_size": micro,
                  "grad_accum": batch_seqs // mini_seqs},
        # What the trial trains on, as it is. The workers themselves are started
        # by tune.recipes.workers inside the trial's placement group.
        "resources": {"gpus": workers} if gpus else {"gpus": 0, "cpu_workers": workers},
        "budget": {"max_steps": steps, "max_hours": settings["max_hours"],
                   "eval_interval": settings["eval_interval"],
                   "eval_batches": max(1, settings["eval_seqs"] // micro)},
        "logging": {"tensorboard": False, "log_interval": max(1, settings["eval_interval"])},
    }, source="recipe tune.recipes.gpt")


def trial_spec(hp: dict, settings: dict, hardware):
    """The TrainSpec a trial of `hardware` trains: on the cluster, one worker per
    GPU of the shape (resources.gpus = g * n); with --local, CPU workers (one
    in-process worker using the trial's threads, or g * n gloo workers)."""
    workers = hardware.total_gpus if hardware.distributed else 1
    return spec_for(hp, settings, workers, gpus=not hardware.local)


def train(hp: dict, settings: dict, hardware, report: Callable[[dict], None]) -> None:
    """Train one trial, calling report(metrics) at each evaluation (the first
    one, of the untrained model, included)."""
    spec = trial_spec(hp, settings, hardware)
    workers = spec.resources.workers
    seen_start = False

    def on_loop_report(m: dict) -> None:
        nonlocal seen_start
        if not seen_start and "val_bpb_at_start" in m:
            seen_start = True
            report({"samples": 0, "time_s": 0.0, "step": 0, "val_bpb": m["val_bpb_at_start"],
                    "val_loss": m.get("val_loss_at_start")})
        report({"samples": m["tokens"], "time_s": m["wall_s"], "step": m["step"], "val_bpb": m.get("val_bpb"),
                "val_loss": m.get("val_loss"), "tokens_per_s": m.get("tokens_per_s"),
                "stop_reason": m.get("stop_reason") or ""})

    if hardware.distributed:
        from tune.recipes.workers import run_worker_group

        use_gpu = spec.resources.gpus > 0
        per_worker = hardware.cpus_per_gpu if use_gpu else hardware.cpus / workers
        run_worker_group(spec, hardware.gpus_per_node, hardware.nodes, on_loop_report,
                         use_gpu=use_gpu, cpus_per_worker=per_worker)
    else:
        import torch

        from train.loop import LocalSession, run_loop

        torch.set_num_threads(max(1, int(hardware.cpus)))

        class _Session(LocalSession):
            def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
                on_loop_report(metrics)

        run_loop(spec, _Session("cpu" if hardware.local else None))
