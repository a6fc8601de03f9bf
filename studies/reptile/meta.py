"""First-order Reptile meta-learning for N-way K-shot classification.

    cfg = ReptileConfig(meta_steps=2000)                 # 5-way, 5-shot support, 15 queries
    result = run_reptile(cfg, n_tasks=100, seed=0, out_dir="runs/reptile/ntasks_100_seed_0")
    result["meta_test_loss"], result["baselines"]["scratch_tuned"]["loss"]

Reptile (Nichol, Achiam & Schulman 2018): for each meta-step, take a meta-batch
of training tasks, adapt a copy of the parameters to each task with `inner_steps`
of SGD on its support set, and move the initialisation towards the adapted
weights, theta <- theta + eps * mean(phi_i - theta), with eps annealed linearly
from `meta_lr` to 0. Labels are permuted in every episode, so the head cannot
memorise classes. With `zero_head` (the default) the classifier head starts
every task at zero and is not meta-learned: under label permutation its best
initialisation is symmetric anyway, and a zero head removes the per-task noise it
would otherwise add to the meta-update of the features.

The tasks come from studies.reptile.tasks, the models (and LoRA) from
studies.reptile.models, the configuration from studies.reptile.config.

Baselines on the same held-out tasks (`baselines`):
- zero_shot: the meta-learned initialisation with no adaptation (chance level on
  label-permuted tasks: log(ways) with a zero head);
- scratch: no meta-learning, the same initial weights fine-tuned on each task's
  support set with the same steps and learning rate as the meta-learned model;
- scratch_tuned: the same, with the steps and learning rate picked from a grid on
  the held-out tasks themselves (every advantage to the baseline).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from analysis.files import atomic_write_json
from studies.reptile.config import ReptileConfig
from studies.reptile.models import build_model_and_family, resolve_device
from studies.reptile.tasks import Episodes

logger = logging.getLogger(__name__)


Params = dict[str, torch.Tensor]


class Reptile:
    """First-order Reptile over the trainable parameters of `model`.

    Everything is functional (torch.func): `self.params` is the meta-learned
    initialisation; adaptation never touches the module's own tensors. With
    `vectorize` the tasks of a batch adapt in parallel under vmap.
    """

    def __init__(self, model: nn.Module, cfg: ReptileConfig, device: torch.device | str = "cpu"):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not names:
            raise ValueError("the model has no trainable parameters")
        self.head_names = [n for n in names if n.startswith("head.")] if cfg.zero_head else []
        if cfg.zero_head and not self.head_names:
            raise ValueError("zero_head needs the classifier head to be a module named 'head'")
        self.params: Params = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
        for n in self.head_names:
            self.params[n].zero_()
        self.vectorize = cfg.vectorize if cfg.vectorize is not None else cfg.model == "small"
        # Models that can run many parameter sets at once skip vmap (same result, faster).
        self.batched = self.vectorize and hasattr(model, "batched_forward")
        self.step = 0

    # -- the inner loop ---------------------------------------------------------

    def _loss(self, params: Params, inputs: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(self.model, params, args=(), kwargs=inputs), y)

    def adapt(self, params: Params, inputs: dict[str, torch.Tensor], y: torch.Tensor, steps: int, lr: float) -> Params:
        """`steps` of plain SGD on one task's support set, from `params`."""
        if self.cfg.zero_head:
            params = {**params, **{n: torch.zeros_like(params[n]) for n in self.head_names}}
        g = grad(self._loss)
        for _ in range(steps):
            grads = g(params, inputs, y)
            params = {n: params[n] - lr * grads[n] for n in params}
        return params

    def _adapt_batched(self, params: Params, support: dict, support_y: torch.Tensor, steps: int, lr: float) -> Params:
        T = support_y.shape[0]
        P = {n: v.unsqueeze(0).expand(T, *v.shape).clone() for n, v in params.items()}
        for n in self.head_names:
            P[n].zero_()
        names = list(P)
        for _ in range(steps):
            with torch.enable_grad():
                leaves = [P[n].requires_grad_(True) for n in names]
                logits = self.model.batched_forward(dict(zip(names, leaves)), **support)
                # The sum over tasks of each task's mean loss: its gradient in one
                # task's parameters is that task's own gradient.
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), support_y.reshape(-1),
                                       reduction="sum") / support_y.shape[1]
                grads = torch.autograd.grad(loss, leaves)
            P = {n: (P[n] - lr * g_).detach() for n, g_ in zip(names, grads)}
        return P

    def _adapt_all(self, params: Params, support: dict, support_y: torch.Tensor, steps: int, lr: float) -> Params:
        """Adapted parameters of every task, stacked along a leading task dimension."""
        if self.batched:
            return self._adapt_batched(params, support, support_y, steps, lr)
        if self.vectorize:
            return vmap(lambda s, y: self.adapt(params, s, y, steps, lr))(support, support_y)
        adapted = [self.adapt(params, {k: v[i] for k, v in support.items()}, support_y[i], steps, lr)
                   for i in range(len(support_y))]
        return {n: torch.stack([a[n] for a in adapted]) for n in params}

    def _query_metrics(self, adapted: Params, query: dict, query_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task query loss and accuracy for stacked adapted parameters."""
        def one(p, q, y):
            logits = functional_call(self.model, p, args=(), kwargs=q)
            return F.cross_entropy(logits, y), (logits.argmax(-1) == y).float().mean()

        if self.batched:
            logits = self.model.batched_forward(adapted, **query)
            loss = F.cross_entropy(logits.transpose(1, 2), query_y, reduction="none").mean(1)
            return loss, (logits.argmax(-1) == query_y).float().mean(1)
        if self.vectorize:
            return vmap(one)(adapted, query, query_y)
        out = [one({n: v[i] for n, v in adapted.items()}, {k: v[i] for k, v in query.items()}, query_y[i])
               for i in range(len(query_y))]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])

    # -- meta-training ------------------------------------------------------------

    def meta_lr_at(self, step: int) -> float:
        return self.cfg.meta_lr * max(0.0, 1.0 - step / self.cfg.meta_steps)

    def meta_step(self, episodes: Episodes) -> dict[str, float]:
        """One Reptile update from a meta-batch of training episodes; returns the
        adapted models' support loss and their loss and accuracy on the episodes'
        queries (fresh examples of the same training tasks)."""
        ep = episodes.to(self.device)
        adapted = self._adapt_all(self.params, ep.support, ep.support_y, self.cfg.inner_steps, self.cfg.inner_lr)
        eps = self.meta_lr_at(self.step)
        with torch.no_grad():
            for n in self.params:
                if n not in self.head_names:
                    self.params[n] = self.params[n] + eps * (adapted[n].mean(0) - self.params[n])
            s_loss, _ = self._query_metrics(adapted, ep.support, ep.support_y)
            q_loss, q_acc = self._query_metrics(adapted, ep.query, ep.query_y)
        self.step += 1
        return {"meta_lr": eps, "train_support_loss": s_loss.mean().item(), "train_query_loss": q_loss.mean().item(),
                "train_query_acc": q_acc.mean().item()}

    # -- evaluation ------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, episodes: Episodes, steps: int | None = None, lr: float | None = None,
                 params: Params | None = None, chunk: int = 100) -> dict[str, float]:
        """Adapt `params` (default: the meta-learned ones) to each task's support set
        and score its queries: mean loss and accuracy over tasks, and the standard
        error of the mean loss."""
        steps = self.cfg.eval_inner_steps if steps is None else steps
        lr = self.cfg.inner_lr if lr is None else lr
        params = self.params if params is None else params
        losses, accs = [], []
        with torch.enable_grad():
            for i in range(0, len(episodes), chunk):
                ep = episodes.take(slice(i, i + chunk)).to(self.device)
                adapted = self._adapt_all(params, ep.support, ep.support_y, steps, lr)
                loss, acc = self._query_metrics({n: v.detach() for n, v in adapted.items()}, ep.query, ep.query_y)
                losses.append(loss.detach())
                accs.append(acc.detach())
        loss, acc = torch.cat(losses).double(), torch.cat(accs).double()
        sem = (loss.std() / math.sqrt(len(loss))).item() if len(loss) > 1 else float("nan")
        return {"loss": loss.mean().item(), "acc": acc.mean().item(), "loss_sem": sem, "tasks": len(loss)}


# ---------------------------------------------------------------------------
# one run: meta-train, evaluate every interval, baselines, files
# ---------------------------------------------------------------------------

TRAIN_FIELDS = ("step", "meta_lr", "train_support_loss", "train_query_loss", "train_query_acc", "elapsed_s")
EVAL_FIELDS = ("step", "test_loss", "test_acc", "test_loss_sem", "test_tasks", "elapsed_s")


class _CsvLog:
    def __init__(self, path: Path | None, fields: Sequence[str]):
        self.fields, self.rows = list(fields), []
        self._fh = None
        if path is not None:
            self._fh = path.open("w", newline="")
            self._writer = csv.DictWriter(self._fh, fieldnames=self.fields)
            self._writer.writeheader()
            self._fh.flush()

    def add(self, row: dict) -> None:
        row = {k: row.get(k) for k in self.fields}
        self.rows.append(row)
        if self._fh is not None:
            self._writer.writerow(row)
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def evaluate_baselines(learner: Reptile, initial: Params, test: Episodes) -> dict[str, dict[str, Any]]:
    """zero_shot, scratch (same budget as the meta-learned model) and scratch_tuned
    (best steps and lr of a grid, picked on the held-out tasks themselves)."""
    cfg = learner.cfg
    zero = learner.evaluate(test, steps=0)
    same = learner.evaluate(test, params=initial)
    grid = []
    for lr in cfg.scratch_lrs:
        for steps in sorted(set(cfg.scratch_steps) | {cfg.eval_inner_steps}):
            r = learner.evaluate(test, steps=steps, lr=lr, params=initial)
            grid.append({"lr": lr, "steps": steps, **r})
    finite = [g for g in grid if math.isfinite(g["loss"])]
    best = min(finite, key=lambda g: g["loss"]) if finite else grid[0]
    return {
        "zero_shot": {**zero, "steps": 0},
        "scratch": {**same, "lr": cfg.inner_lr, "steps": cfg.eval_inner_steps},
        "scratch_tuned": {**best, "grid": [{k: g[k] for k in ("lr", "steps", "loss", "acc")} for g in grid]},
    }


def run_reptile(cfg: ReptileConfig, n_tasks: int, seed: int, out_dir: str | Path | None = None,
                report: Callable[[dict], None] | None = None, device: str | torch.device | None = None) -> dict[str, Any]:
    """Meta-train on `n_tasks` training tasks with `seed`, evaluate on the held-out
    tasks every `eval_interval` meta-steps, and end with the baselines.

    With `out_dir`, writes config.json first, train_stats.csv and eval_stats.csv as
    it goes, and final_result.json (atomically) last. `report` receives the metrics
    of every evaluation (Ray Tune's `tune.report`). Returns the final result.
    """
    if n_tasks < 1:
        raise ValueError(f"n_tasks must be at least 1, got {n_tasks}")
    t0 = time.time()
    device = torch.device(device) if device is not None else resolve_device(cfg)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {"n_tasks": n_tasks, "seed": seed, "device": str(device),
                                          "reptile": cfg.model_dump(mode="json")})
    model, family = build_model_and_family(cfg, seed, device)
    learner = Reptile(model, cfg, device)
    initial = {n: v.clone() for n, v in learner.params.items()}
    pool = family.train_pool(n_tasks, seed)
    test = family.test_episodes(cfg.test_tasks)
    eval_set = test.take(slice(0, cfg.eval_tasks))
    g = torch.Generator().manual_seed(seed)
    train_log = _CsvLog(out / "train_stats.csv" if out else None, TRAIN_FIELDS)
    eval_log = _CsvLog(out / "eval_stats.csv" if out else None, EVAL_FIELDS)
    logger.info("reptile: %d training tasks (%d factors/classes seen), seed %d, %d meta-steps on %s",
                n_tasks, pool.factors_seen(), seed, cfg.meta_steps, device)

    def evaluate_now(step: int) -> dict:
        r = learner.evaluate(eval_set)
        row = {"step": step, "test_loss": r["loss"], "test_acc": r["acc"], "test_loss_sem": r["loss_sem"],
               "test_tasks": r["tasks"], "elapsed_s": round(time.time() - t0, 3)}
        eval_log.add(row)
        if report is not None:
            report({**row, "n_tasks": n_tasks, "seed": seed})
        return row

    try:
        evaluate_now(0)
        acc: dict[str, float] = {}
        for step in range(1, cfg.meta_steps + 1):
            stats = learner.meta_step(pool.sample(cfg.meta_batch, g))
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + v
            acc["_n"] = acc.get("_n", 0) + 1
            if step % cfg.log_interval == 0 or step == cfg.meta_steps:
                n = acc.pop("_n")
                train_log.add({"step": step, **{k: v / n for k, v in acc.items()}, "elapsed_s": round(time.time() - t0, 3)})
                acc = {}
            if step % cfg.eval_interval == 0 and step != cfg.meta_steps:
                row = evaluate_now(step)
                logger.info("n_tasks %d seed %d step %d: held-out loss %.4f acc %.3f", n_tasks, seed, step,
                            row["test_loss"], row["test_acc"])
        last = evaluate_now(cfg.meta_steps)
    finally:
        train_log.close()
        eval_log.close()

    final = learner.evaluate(test)
    baselines = evaluate_baselines(learner, initial, test)
    result = {
        "n_tasks": n_tasks,
        "seed": seed,
        "meta_test_loss": final["loss"],
        "meta_test_acc": final["acc"],
        "meta_test_loss_sem": final["loss_sem"],
        "test_tasks": final["tasks"],
        "eval_inner_steps": cfg.eval_inner_steps,
        "baselines": baselines,
        "meta_beats_scratch": final["loss"] < baselines["scratch_tuned"]["loss"],
        "train_query_loss": train_log.rows[-1]["train_query_loss"] if train_log.rows else None,
        "held_out_loss_at_start": eval_log.rows[0]["test_loss"],
        "held_out_loss_last_interval": last["test_loss"],
        "factors_seen": pool.factors_seen(),
        "meta_steps": cfg.meta_steps,
        "device": str(device),
        "wall_s": round(time.time() - t0, 3),
    }
    if out is not None:
        atomic_write_json(out / "final_result.json", result)
    logger.info("n_tasks %d seed %d: meta-test loss %.4f (scratch tuned %.4f, zero-shot %.4f) in %.1f s", n_tasks, seed,
                result["meta_test_loss"], baselines["scratch_tuned"]["loss"], baselines["zero_shot"]["loss"],
                result["wall_s"])
    return result
