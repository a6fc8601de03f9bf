"""The training loop, as every worker runs it.

`train_loop_per_worker` is what Ray Train's TorchTrainer runs on each worker;
`run_loop(spec, session)` is the loop itself, written against a small session
interface so that the same code also runs in a plain process (`LocalSession`,
used by the benchmark that measures what Ray Train costs).

What the loop does: DDP through Ray Train, bf16 autocast on CUDA, gradient
accumulation, an evaluation before the first step and every `eval_interval`,
early stopping (target reached, no improvement for `patience` evaluations, NaN
or divergence), a wall-clock deadline (`budget.max_hours`, counting time spent
before a restart; a scaled job's 6-hour limit is checked before it starts),
checkpoints through `ray.train.report`, and resume from the last checkpoint
after a failure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from train.spec import TrainSpec

STOP_CODES = {0: None, 1: "max_steps", 2: "target", 3: "no_improvement", 4: "deadline", 5: "diverged", 6: "nan"}
_CODE = {v: k for k, v in STOP_CODES.items()}


# -- sessions ------------------------------------------------------------------


class RayTrainSession:
    """The loop's view of Ray Train on one worker."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._prepare = ray.train.torch.prepare_model

    def prepare_model(self, model):
        return self._prepare(model)

    def get_checkpoint_dir(self):
        ckpt = self._train.get_checkpoint()
        return ckpt.as_directory() if ckpt is not None else None

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        ckpt = self._train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt)

    def allocation(self) -> dict:
        return worker_allocation(self.rank, self.device)


class LocalSession:
    """The same loop in this process, with no Ray: one worker, reports kept in
    memory, checkpoints copied to `checkpoint_root` if given."""

    rank, world = 0, 1

    def __init__(self, device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.reports: list[dict] = []

    def prepare_model(self, model):
        return model.to(self.device)

    def get_checkpoint_dir(self):
        return None

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.reports.append(metrics)

    def allocation(self) -> dict:
        return {"rank": 0, "node": "local", "gpu_ids": [], "device": str(self.device)}


# -- state that survives a restart ------------------------------------------------


@dataclass
class LoopState:
    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0  # wall time of all attempts so far
    train_s: float = 0.0  # time spent in training steps (not evaluation)
    gpu_seconds: float = 0.0
    best: float | None = None
    evals_since_best: int = 0
    val_at_start: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)
    eval_step: int = 0  # the step last_val was measured at
    first_step_at: float | None = None  # Unix time the first optimiser step finished
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from_step: int | None = None


# -- the loop ------------------------------------------------------------------


def autocast_for(device: torch.device, precision: str):
    """The loop's autocast: bf16 on CUDA when the spec asks for it, and off on
    CPU whatever it asks. CPU bf16 is not worth it for training here: oneDNN's
    bf16 kernels are slow without AVX-512 BF16 / AMX, and some (the LSTM) do
    not exist at all on CPUs without AVX-512, e.g. many AMD EPYCs."""
    if torch.device(device).type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def train_loop_per_worker(config: dict) -> None:
    spec = TrainSpec.model_validate(config["spec"])
    if config.get("model_files"):
        # The worker runs in a directory of its own, maybe on another node: it builds
        # the custom model from the files that came with the job, never the user's path.
        from train.models.custom import unpack_model_files

        model = spec.model.model_copy(update={"path": str(unpack_model_files(config["model_files"]))})
        spec = spec.model_copy(update={"model": model})
    run_loop(spec, RayTrainSession(), out_dir=config.get("out_dir"))


def run_loop(spec: TrainSpec, session, out_dir: str | None = None) -> LoopState:
    from train.data import build_dataset
    from train.estimate import build_model_for

    t_attempt = time.time()
    device = session.device
    torch.manual_seed(spec.seed)  # identical initial weights on every rank
    dataset = build_dataset(spec.data.benchmark, seq_len=spec.data.seq_len, seed=spec.seed, **spec.data.params)
    model = session.prepare_model(build_model_for(spec, "cpu"))
    raw = model.module if hasattr(model, "module") else model
    optimizer = _optimizer(raw, spec)
    state = LoopState()

    ckpt = session.get_checkpoint_dir()
    if ckpt is not None:
        with ckpt as d:
            raw.load_state_dict(torch.load(Path(d) / "model.pt", map_location=device))
            optimizer.load_state_dict(torch.load(Path(d) / "optimizer.pt", map_location=device))
            state = LoopState(**json.loads((Path(d) / "state.json").read_text()))
        state.resumed_from_step = state.step

    autocast = autocast_for(device, spec.precision)
    higher_is_better = dataset.metric == "accuracy"
    metric_key = "val_accuracy" if higher_is_better else "val_bpb"
    elapsed_before = state.elapsed_s  # earlier attempts count against the deadline
    deadline = t_attempt + spec.budget.max_hours * 3600 - elapsed_before
    gpus_per_worker = 1 if device.type == "cuda" else 0
    allocation = _gather(session, session.allocation())
    writer = _tensorboard(spec, session, out_dir)
    wandb_run = _wandb(spec, session, out_dir)

    def evaluate() -> dict[str, float]:
        return evaluate_model(model, dataset, spec, device, session, autocast)

    def save_checkpoint(tmp: str, weights: bool) -> None:
        if weights:
            torch.save(raw.state_dict(), Path(tmp) / "model.pt")
            torch.save(optimizer.state_dict(), Path(tmp) / "optimizer.pt")
        (Path(tmp) / "state.json").write_text(json.dumps(asdict(state)))

    def report(final_reason: str | None, with_checkpoint: bool, weights: bool = True) -> None:
        state.elapsed_s = elapsed_before + (time.time() - t_attempt)
        metrics = {
            "step": state.step,
            "tokens": state.tokens,
            **state.last_val,
            **{f"{k}_at_start": v for k, v in state.val_at_start.items()},
            "tokens_per_s": state.tokens / state.train_s if state.train_s > 0 else 0.0,
            "peak_memory_mb": _peak_memory_mb(device),
            "wall_s": state.elapsed_s,
            "gpu_seconds": state.gpu_seconds,
            "stop_reason": final_reason,
            "resumed_from_step": state.resumed_from_step,
            "first_step_at": state.first_step_at,
            "gpu_allocation": allocation,
            "world_size": session.world,
        }
        if final_reason is not None:
            metrics["history"] = state.history
        if with_checkpoint and session.rank == 0:
            with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
                save_checkpoint(tmp, weights)
                session.report(metrics, checkpoint_dir=tmp)
        else:
            session.report(metrics)

    def evaluate_and_judge() -> int:
        """Evaluate; return the stop code the result calls for (0: go on).
        The metrics are summed across ranks, so every rank judges alike."""
        state.last_val = evaluate()
        state.eval_step = state.step
        _log(writer, wandb_run, state.last_val, state.step)
        state.history.append({"step": state.step, **state.last_val})
        score = state.last_val[metric_key]
        if state.best is None or (score > state.best if higher_is_better else score < state.best):
            state.best, state.evals_since_best = score, 0
        else:
            state.evals_since_best += 1
        target = spec.budget.target
        if target is not None and (score >= target if higher_is_better else score <= target):
            return _CODE["target"]
        if spec.budget.patience and state.evals_since_best >= spec.budget.patience:
            return _CODE["no_improvement"]
        return 0

    if not state.val_at_start:
        state.val_at_start = evaluate()
        state.last_val = dict(state.val_at_start)

    gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + session.rank * 7919 + state.step)
    ckpt_every = spec.budget.checkpoint_interval or spec.budget.eval_interval
    stop = None
    model.train()
    while stop is None:
        if state.step >= spec.budget.max_steps:
            stop = "max_steps"
            break
        t0 = time.time()
        lr = _lr_at(state.step, spec)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for micro in range(spec.optim.grad_accum):
            x, y = dataset.train_batch(spec.optim.batch_size, gen)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = micro == spec.optim.grad_accum - 1 or not hasattr(model, "no_sync")
            ctx = model.no_sync() if not sync else contextlib.nullcontext()
            with ctx, autocast:
                logits = model(x)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1)) / spec.optim.grad_accum
            loss.backward()
            loss_sum += loss.item()
        if spec.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(raw.parameters(), spec.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.time() - t0
        if state.first_step_at is None:
            state.first_step_at = time.time()
        state.step += 1
        state.tokens += spec.tokens_per_step
        state.train_s += dt
        state.gpu_seconds += dt * gpus_per_worker * session.world

        code = 0
        if not math.isfinite(loss_sum):
            code = _CODE["nan"]
        elif loss_sum > spec.budget.divergence_factor * state.val_at_start["val_loss"]:
            code = _CODE["diverged"]
        elif time.time() >= deadline:
            code = _CODE["deadline"]
        if state.step % spec.logging.log_interval == 0 or code:
            entry = {"step": state.step, "train_loss": loss_sum, "lr": lr,
                     "tokens_per_s": spec.tokens_per_step / dt if dt > 0 else 0.0}
            state.history.append(entry)
            _log(writer, wandb_run, entry, state.step)
        # Every rank stops at the same step, the most severe reason winning;
        # below, evaluation and reports are collective, so all ranks agree first.
        code = _agree(session, code, device)

        if not code and (state.step % spec.budget.eval_interval == 0 or state.step >= spec.budget.max_steps):
            code = evaluate_and_judge()
            if not code and state.step < spec.budget.max_steps:
                report(None, with_checkpoint=state.step % ckpt_every == 0)
        stop = STOP_CODES[code]

    if stop == "deadline" and state.eval_step != state.step:
        state.last_val = evaluate()  # the deadline cut in between evaluations
        state.eval_step = state.step
        state.history.append({"step": state.step, **state.last_val})
    # Ray Train keeps metrics only with a checkpoint, so the final report always
    # has one; after NaN or divergence it holds the run's state but no weights,
    # and the last healthy checkpoint stays the one to resume or evaluate from.
    report(stop, with_checkpoint=True, weights=stop not in ("nan", "diverged"))
    if writer is not None:
        writer.close()
    if wandb_run is not None:
        wandb_run.finish()
    return state


def evaluate_model(model, dataset, spec: TrainSpec, device, session=None, autocast=None) -> dict[str, float]:
    """Validation loss, and bits per byte or accuracy, over the dataset's fixed
    validation batches; under DDP each rank takes its share and the sums are
    reduced, so every rank returns the same numbers."""
    session = session or LocalSession(str(device))
    autocast = autocast or autocast_for(device, "fp32")
    model.eval()
    nats = scored = nbytes = correct = 0.0
    with torch.no_grad(), autocast:
        for i, (x, y) in enumerate(dataset.eval_batches(spec.optim.batch_size, spec.budget.eval_batches)):
            if i % session.world != session.rank:
                continue
            x, y = x.to(device), y.to(device)
            logits = model(x).float()
            mask = y != -100
            nats += F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum").item()
            scored += mask.sum().item()
            correct += (logits.argmax(-1)[mask] == y[mask]).sum().item()
            if dataset.token_bytes is not None:
                nbytes += dataset.token_bytes.to(y.device)[y[mask]].sum().item()
    nats, scored, nbytes, correct = _sum_across(session, [nats, scored, nbytes, correct], device)
    model.train()
    out = {"val_loss": nats / max(scored, 1)}
    if dataset.metric == "bpb":
        out["val_bpb"] = nats / math.log(2) / max(nbytes, 1)
    else:
        out["val_accuracy"] = correct / max(scored, 1)
    return out


# -- helpers -------------------------------------------------------------------


def _optimizer(model: torch.nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    # Decay matrices only: norms, biases and (tied) embeddings stay undecayed,
    # as in GPT-2/nanoGPT.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "emb" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.optim.lr, betas=spec.optim.betas)


def _lr_at(step: int, spec: TrainSpec) -> float:
    o = spec.optim
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    span = max(spec.budget.max_steps - o.warmup_steps, 1)
    progress = min(max(step - o.warmup_steps, 0) / span, 1.0)
    floor = o.lr * o.min_lr_ratio
    if o.schedule == "linear":
        return floor + (o.lr - floor) * (1 - progress)
    return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _distributed(session) -> bool:
    return session.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def _agree(session, code: int, device) -> int:
    if not _distributed(session):
        return code
    t = torch.tensor([code], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def _sum_across(session, values: list[float], device) -> list[float]:
    if not _distributed(session):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _gather(session, item: dict) -> list[dict]:
    if not _distributed(session):
        return [item]
    out: list = [None] * session.world
    torch.distributed.all_gather_object(out, item)
    return out


def _peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _tensorboard(spec: TrainSpec, session, out_dir: str | None):
    if not spec.logging.tensorboard or session.rank != 0 or out_dir is None:
        return None
    from tensorboardX import SummaryWriter

    return SummaryWriter(logdir=str(Path(out_dir) / "tensorboard"))


def _wandb(spec: TrainSpec, session, out_dir: str | None):
    """W&B from rank 0 only: offline without a key, never in tests."""
    if spec.logging.wandb_project is None or session.rank != 0:
        return None
    mode = spec.logging.wandb_mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    if os.environ.get("WANDB_MODE") == "disabled":
        mode = "disabled"
    import wandb

    return wandb.init(
        project=spec.logging.wandb_project,
        name=spec.name,
        mode=mode,
        dir=out_dir,
        config=spec.model_dump(mode="json"),
    )


def _log(writer, wandb_run, values: dict, step: int) -> None:
    scalars = {k: v for k, v in values.items() if k != "step" and isinstance(v, (int, float))}
    if writer is not None:
        for k, v in scalars.items():
            writer.add_scalar(k, v, step)
    if wandb_run is not None:
        wandb_run.log(scalars, step=step)


def worker_allocation(rank: int, device) -> dict:
    """Where a training worker runs: rank, node, the GPUs Ray gave it, torch device."""
    import ray

    return {
        "rank": rank,
        "node": ray.util.get_node_ip_address(),
        "gpu_ids": [str(g) for g in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])],
        "device": str(device),
    }
