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

Task families:
- "synthetic" (default, needs no download): `SyntheticTaskFamily`, a fixed
  generative distribution. Inputs live in `dim` dimensions with isotropic noise;
  a class is a prototype in the span of a few of `n_factors` latent directions
  (each task uses `factors_per_task` of them, drawn with Zipf frequencies, so
  rare factors appear only once many tasks are seen). The N_tasks training tasks
  of a seed are the first N_tasks of that seed's stream (pools are nested), and
  the held-out test tasks are one fixed set shared by every run.
- "banking77": 5-way tasks over the 77 Banking77 intents, classes split into
  meta-train and held-out intents; needs the dataset locally or reachable.

Models: "small" (`SmallClassifier`: Linear -> LayerNorm -> GELU -> head, optionally
with LoRA on the feature layer) or "hf" (`HFClassifier`: a Hugging Face causal LM
such as TinyLlama-1.1B, LoRA on its attention projections, a linear head on the
mean-pooled last hidden state). Only the trainable parameters are meta-learned;
with LoRA that is the adapters and the head.

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
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.func import functional_call, grad, vmap

logger = logging.getLogger(__name__)

DEFAULT_HF_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
BANKING77_DATASET = "PolyAI/banking77"


class ReptileUnavailable(RuntimeError):
    """A model or dataset the configuration names is not available here; the
    message says what is missing and how to get it."""


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticFamilyConfig(_Strict):
    """The fixed generative distribution of the default task family."""

    dim: int = Field(256, ge=2, description="input dimensions")
    n_factors: int = Field(64, ge=1, description="latent directions a class can use")
    zipf: float = Field(1.2, ge=0, description="factor i is used with frequency proportional to (i + 1)^-zipf")
    factors_per_task: int = Field(4, ge=1, description="latent directions the classes of one task vary along")
    class_scale: float = Field(2.0, gt=0, description="std of a prototype's coordinate on an active factor")
    noise: float = Field(1.0, ge=0, description="std of the isotropic noise on every input dimension")
    seed: int = Field(1234, ge=0, description="fixes the distribution and the held-out test tasks")

    @model_validator(mode="after")
    def _fits(self):
        if self.n_factors > self.dim:
            raise ValueError(f"n_factors ({self.n_factors}) must be at most dim ({self.dim})")
        if self.factors_per_task > self.n_factors:
            raise ValueError(f"factors_per_task ({self.factors_per_task}) must be at most n_factors ({self.n_factors})")
        return self


class ReptileConfig(_Strict):
    """One Reptile run, apart from its number of training tasks and its seed."""

    # the few-shot problem
    ways: int = Field(5, ge=2)
    shots: int = Field(5, ge=1, description="support examples per class")
    queries: int = Field(15, ge=1, description="query examples per class")
    task_family: Literal["synthetic", "banking77"] = "synthetic"
    family: SyntheticFamilyConfig = Field(default_factory=SyntheticFamilyConfig)
    banking77_path: str | None = Field(None, description="a folder with Banking77's train.csv and test.csv")
    # Reptile
    inner_steps: int = Field(5, ge=1)
    inner_lr: float = Field(0.5, gt=0)
    meta_lr: float = Field(1.0, gt=0, description="outer step size, annealed linearly to 0")
    meta_batch: int = Field(5, ge=1, description="tasks per meta-step")
    meta_steps: int = Field(10_000, ge=1)
    eval_inner_steps: int = Field(10, ge=0, description="adaptation steps on a held-out task's support set")
    eval_interval: int = Field(500, ge=1)
    log_interval: int = Field(50, ge=1)
    eval_tasks: int = Field(100, ge=1, description="held-out tasks scored at each interval")
    test_tasks: int = Field(300, ge=1, description="held-out tasks scored at the end")
    zero_head: bool = True
    # baselines
    scratch_lrs: tuple[float, ...] = (0.1, 0.3, 1.0)
    scratch_steps: tuple[int, ...] = (10, 50)
    # model
    model: Literal["small", "hf"] = "small"
    hidden: int = Field(64, ge=1)
    lora_rank: int = Field(0, ge=0, description="small model: 0 trains the feature layer fully, >0 through LoRA")
    lora_alpha: float = Field(16.0, gt=0)
    hf_model: str = DEFAULT_HF_MODEL
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    max_length: int = Field(64, ge=4, description="tokens per utterance (hf)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    vectorize: bool | None = Field(None, description="vmap over tasks; default: on for the small model")

    @model_validator(mode="after")
    def _sizes(self):
        if self.eval_tasks > self.test_tasks:
            raise ValueError(f"eval_tasks ({self.eval_tasks}) must be at most test_tasks ({self.test_tasks})")
        if self.task_family == "banking77" and self.model == "small":
            raise ValueError("task_family 'banking77' is text: use model 'hf'")
        if self.task_family == "synthetic" and self.model == "hf":
            raise ValueError("model 'hf' needs text tasks: use task_family 'banking77'")
        return self


# ---------------------------------------------------------------------------
# episodes and task families
# ---------------------------------------------------------------------------


@dataclass
class Episodes:
    """A batch of few-shot episodes: inputs keyed by the model's argument names,
    every tensor with a leading task dimension."""

    support: dict[str, torch.Tensor]
    support_y: torch.Tensor  # [tasks, ways * shots]
    query: dict[str, torch.Tensor]
    query_y: torch.Tensor  # [tasks, ways * queries]

    def __len__(self) -> int:
        return self.support_y.shape[0]

    def take(self, index) -> Episodes:
        return Episodes({k: v[index] for k, v in self.support.items()}, self.support_y[index],
                        {k: v[index] for k, v in self.query.items()}, self.query_y[index])

    def to(self, device) -> Episodes:
        return Episodes({k: v.to(device) for k, v in self.support.items()}, self.support_y.to(device),
                        {k: v.to(device) for k, v in self.query.items()}, self.query_y.to(device))


def _labels(ways: int, per_class: int, tasks: int) -> torch.Tensor:
    return torch.arange(ways).repeat_interleave(per_class).expand(tasks, -1).contiguous()


class SyntheticTaskFamily:
    """Few-shot classification tasks from a fixed generative distribution.

    A task is `ways` classes. Its classes vary along `factors_per_task` latent
    directions (orthonormal columns of a fixed random rotation of R^dim), drawn
    without replacement with Zipf frequencies over `n_factors`; class c has the
    prototype sum_j s_cj u_j with s_cj ~ N(0, class_scale^2), and an example of it is
    the prototype plus N(0, noise^2) noise on every dimension. A learner that knows
    which directions tasks tend to use can ignore most of the noise; a learner that
    starts from scratch on 5 examples per class cannot. Which directions matter is
    learnt from the training tasks, and rare ones show up only in a large pool.
    """

    def __init__(self, cfg: SyntheticFamilyConfig, ways: int = 5, shots: int = 5, queries: int = 15):
        self.cfg, self.ways, self.shots, self.queries = cfg, ways, shots, queries
        g = torch.Generator().manual_seed(cfg.seed)
        rotation, _ = torch.linalg.qr(torch.randn(cfg.dim, cfg.dim, generator=g, dtype=torch.float64))
        self.directions = rotation[:, : cfg.n_factors].float().contiguous()  # [dim, n_factors]
        p = torch.arange(1, cfg.n_factors + 1, dtype=torch.float64) ** (-cfg.zipf)
        self.frequencies = (p / p.sum()).float()

    @property
    def input_dim(self) -> int:
        return self.cfg.dim

    def sample_prototypes(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n tasks drawn one after another from `g`: (active factors [n, k], prototypes
        [n, ways, dim]). Drawing task by task makes the first m of n draws the same
        as a draw of m, so the pools of one seed are nested."""
        k = self.cfg.factors_per_task
        active = torch.empty(n, k, dtype=torch.long)
        coef = torch.empty(n, self.ways, k)
        for i in range(n):
            active[i] = torch.multinomial(self.frequencies, k, replacement=False, generator=g)
            coef[i] = torch.randn(self.ways, k, generator=g) * self.cfg.class_scale
        protos = torch.einsum("nwk,dnk->nwd", coef, self.directions[:, active]) if n else torch.empty(0, self.ways, self.cfg.dim)
        return active, protos

    def train_pool(self, n_tasks: int, seed: int) -> SyntheticPool:
        g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + self.cfg.seed)
        active, protos = self.sample_prototypes(n_tasks, g)
        return SyntheticPool(self, active, protos)

    def episodes(self, protos: torch.Tensor, g: torch.Generator, queries: int | None = None) -> Episodes:
        """One episode per task in `protos` [n, ways, dim], labels permuted per episode."""
        n, q = protos.shape[0], self.queries if queries is None else queries
        perm = torch.argsort(torch.rand(n, self.ways, generator=g), dim=1)
        P = torch.gather(protos, 1, perm[:, :, None].expand(-1, -1, protos.shape[2]))
        ys, yq = _labels(self.ways, self.shots, n), _labels(self.ways, q, n)
        noise = self.cfg.noise
        xs = P[:, ys[0]] + noise * torch.randn(n, ys.shape[1], protos.shape[2], generator=g)
        xq = P[:, yq[0]] + noise * torch.randn(n, yq.shape[1], protos.shape[2], generator=g)
        return Episodes({"x": xs}, ys, {"x": xq}, yq)

    def test_episodes(self, n: int) -> Episodes:
        """The held-out tasks: a fixed set that every run and baseline scores."""
        g = torch.Generator().manual_seed(self.cfg.seed + 7_777_777)
        _, protos = self.sample_prototypes(n, g)
        return self.episodes(protos, g)


class SyntheticPool:
    """The N_tasks training tasks of one run."""

    def __init__(self, family: SyntheticTaskFamily, active: torch.Tensor, protos: torch.Tensor):
        self.family, self.active, self.protos = family, active, protos

    def __len__(self) -> int:
        return self.protos.shape[0]

    def factors_seen(self) -> int:
        return int(torch.unique(self.active).numel())

    def sample(self, batch: int, g: torch.Generator) -> Episodes:
        idx = torch.randint(0, len(self), (batch,), generator=g)
        return self.family.episodes(self.protos[idx], g)


class TextTaskFamily:
    """N-way K-shot tasks over labelled utterances (Banking77 by default).

    The intents are split once (fixed seed) into meta-train intents (`train_fraction`)
    and held-out intents; a training task is `ways` meta-train intents with its
    examples drawn from the train split, a test task `ways` held-out intents.
    Inputs are pre-tokenised to `max_length` tokens.
    """

    def __init__(self, train_rows: Sequence[tuple[str, int]], test_rows: Sequence[tuple[str, int]], tokenizer,
                 ways: int = 5, shots: int = 5, queries: int = 15, max_length: int = 64, train_fraction: float = 0.65,
                 seed: int = 1234):
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed
        rows = list(train_rows) + list(test_rows)
        labels = sorted({label for _, label in rows})
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
        n_train = int(round(train_fraction * len(labels)))
        self.train_classes = sorted(labels[i] for i in order[:n_train])
        self.test_classes = sorted(labels[i] for i in order[n_train:])
        need = shots + queries
        for name, classes in (("meta-train", self.train_classes), ("held-out", self.test_classes)):
            if len(classes) < ways:
                raise ValueError(f"{len(classes)} {name} classes cannot make {ways}-way tasks")
        texts = [t for t, _ in rows]
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        self.input_ids, self.attention_mask = enc["input_ids"], enc["attention_mask"]
        self.by_class: dict[int, torch.Tensor] = {}
        n_first = len(list(train_rows))
        for c in self.train_classes:  # meta-train intents: their train-split examples
            self.by_class[c] = torch.tensor([i for i, (_, lab) in enumerate(rows) if lab == c and i < n_first])
        for c in self.test_classes:  # held-out intents: all their examples
            self.by_class[c] = torch.tensor([i for i, (_, lab) in enumerate(rows) if lab == c])
        short = [c for c, idx in self.by_class.items() if len(idx) < need]
        if short:
            raise ValueError(f"classes {short[:5]} have fewer than shots + queries = {need} examples")

    def _episode(self, classes: Sequence[int], g: torch.Generator, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        s_idx, q_idx = [], []
        for c in classes:
            pool = self.by_class[c]
            pick = pool[torch.randperm(len(pool), generator=g)[: self.shots + q]]
            s_idx.append(pick[: self.shots])
            q_idx.append(pick[self.shots:])
        return torch.cat(s_idx), torch.cat(q_idx)

    def episodes_for(self, tasks: Sequence[Sequence[int]], g: torch.Generator, queries: int | None = None) -> Episodes:
        q = self.queries if queries is None else queries
        S, Q = [], []
        for classes in tasks:
            classes = [classes[i] for i in torch.randperm(len(classes), generator=g).tolist()]  # permute labels
            s, qq = self._episode(classes, g, q)
            S.append(s)
            Q.append(qq)
        S, Q = torch.stack(S), torch.stack(Q)
        n = len(tasks)
        return Episodes({"input_ids": self.input_ids[S], "attention_mask": self.attention_mask[S]},
                        _labels(self.ways, self.shots, n),
                        {"input_ids": self.input_ids[Q], "attention_mask": self.attention_mask[Q]},
                        _labels(self.ways, q, n))

    def _draw_tasks(self, classes: list[int], n: int, g: torch.Generator) -> list[list[int]]:
        return [[classes[i] for i in torch.randperm(len(classes), generator=g)[: self.ways].tolist()] for _ in range(n)]

    def train_pool(self, n_tasks: int, seed: int) -> TextPool:
        g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + self.seed)
        return TextPool(self, self._draw_tasks(self.train_classes, n_tasks, g))

    def test_episodes(self, n: int) -> Episodes:
        g = torch.Generator().manual_seed(self.seed + 7_777_777)
        return self.episodes_for(self._draw_tasks(self.test_classes, n, g), g)


class TextPool:
    def __init__(self, family: TextTaskFamily, tasks: list[list[int]]):
        self.family, self.tasks = family, tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def factors_seen(self) -> int:
        return len({c for t in self.tasks for c in t})

    def sample(self, batch: int, g: torch.Generator) -> Episodes:
        idx = torch.randint(0, len(self), (batch,), generator=g).tolist()
        return self.family.episodes_for([self.tasks[i] for i in idx], g)


def load_banking77(path: str | Path | None = None) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Banking77 as (text, label) rows of its train and test splits: from `path`
    (a folder with the original train.csv and test.csv, columns text and category)
    or through the `datasets` library (its cache, or the Hub when reachable)."""
    if path is not None:
        folder = Path(path)
        files = [folder / "train.csv", folder / "test.csv"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ReptileUnavailable(f"Banking77 not found: missing {', '.join(missing)} (the CSVs of "
                                     f"https://github.com/PolyAI-LDN/task-specific-datasets, columns text,category)")
        splits = []
        for f in files:
            with f.open(newline="") as fh:
                splits.append([(r["text"], r["category"]) for r in csv.DictReader(fh)])
        names = sorted({c for split in splits for _, c in split})
        index = {c: i for i, c in enumerate(names)}
        return [(t, index[c]) for t, c in splits[0]], [(t, index[c]) for t, c in splits[1]]
    try:
        import datasets
    except ImportError as exc:
        raise ReptileUnavailable("Banking77 needs the `datasets` package (pip install datasets) or "
                                 "--banking77-path pointing at its train.csv/test.csv") from exc
    try:
        ds = datasets.load_dataset(BANKING77_DATASET)
    except Exception as exc:  # offline with an empty cache, or the Hub unreachable
        raise ReptileUnavailable(f"could not load {BANKING77_DATASET}: {exc}. Download it once with network "
                                 f"access, or pass --banking77-path") from exc
    return ([(r["text"], int(r["label"])) for r in ds["train"]], [(r["text"], int(r["label"])) for r in ds["test"]])


# ---------------------------------------------------------------------------
# models and LoRA
# ---------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / rank) * x A^T B^T, with the base layer frozen.

    A starts like a Linear layer's weight, B at zero, so the wrapped layer starts
    as the base layer (Hu et al. 2021). The adapter is kept in float32 even when
    the base runs in bf16."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 16.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = (x.to(self.lora_A.dtype) @ self.lora_A.T) @ self.lora_B.T
        return self.base(x) + (delta * self.scaling).to(x.dtype)


def apply_lora(model: nn.Module, targets: Sequence[str], rank: int, alpha: float = 16.0,
               keep_trainable: Sequence[str] = ()) -> list[str]:
    """Wrap every nn.Linear whose name ends with one of `targets` in a LoRALinear,
    freeze every other parameter except those under `keep_trainable` (e.g. the
    head), and return the wrapped names. Raises ValueError when nothing matches."""
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoRALinear(module, rank, alpha))
            wrapped.append(name)
    if not wrapped:
        raise ValueError(f"no nn.Linear layer is named like {', '.join(targets)}")
    for name, p in model.named_parameters():
        keep = "lora_" in name or any(name == k or name.startswith(k + ".") for k in keep_trainable)
        p.requires_grad_(keep)
    return wrapped


class SmallClassifier(nn.Module):
    """Linear features, LayerNorm (no affine), GELU, linear head."""

    def __init__(self, in_dim: int, hidden: int, ways: int):
        super().__init__()
        self.features = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.head = nn.Linear(hidden, ways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.gelu(self.norm(self.features(x))))

    def batched_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """`forward` for T parameter sets at once: every tensor in `params` (the
        trainable ones; frozen ones come from the module) has a leading task
        dimension, and x is [T, n, in_dim]. Batched matmuls instead of vmap: the
        same numbers, about twice as fast on a CPU."""
        f = self.features
        if isinstance(f, LoRALinear):
            w, b = params.get("features.base.weight", f.base.weight), params.get("features.base.bias", f.base.bias)
            h = x @ w.transpose(-1, -2) + b.unsqueeze(-2)
            h = h + f.scaling * (x @ params["features.lora_A"].transpose(1, 2)) @ params["features.lora_B"].transpose(1, 2)
        else:
            h = torch.baddbmm(params["features.bias"].unsqueeze(1), x, params["features.weight"].transpose(1, 2))
        h = F.gelu(F.layer_norm(h, (h.shape[-1],)))
        return torch.baddbmm(params["head.bias"].unsqueeze(1), h, params["head.weight"].transpose(1, 2))


class HFClassifier(nn.Module):
    """A Hugging Face language model as an N-way classifier: the mean of its last
    hidden states over the real tokens, then a linear head."""

    def __init__(self, backbone: nn.Module, hidden_size: int, ways: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, ways)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
        return self.head(pooled.float())


def load_hf(name: str, device: torch.device):
    """(backbone, tokenizer) of a Hugging Face model, from the local cache or the Hub."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ReptileUnavailable("model 'hf' needs the `transformers` package (pip install transformers)") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        backbone = AutoModel.from_pretrained(name, torch_dtype=dtype).to(device)
    except Exception as exc:
        raise ReptileUnavailable(f"could not load {name}: {exc}. Download it once with network access "
                                 f"(huggingface-cli download {name}) or name a local folder") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return backbone, tokenizer


def preflight(cfg: ReptileConfig) -> None:
    """Raise ReptileUnavailable now, before any trial starts, when the model or the
    data `cfg` names cannot be had here. The default (synthetic, small) needs nothing."""
    if cfg.model == "hf":
        try:
            from transformers import AutoConfig
        except ImportError as exc:
            raise ReptileUnavailable("model 'hf' needs the `transformers` package (pip install transformers)") from exc
        try:
            AutoConfig.from_pretrained(cfg.hf_model)
        except Exception as exc:
            raise ReptileUnavailable(f"could not find the model {cfg.hf_model} locally or on the Hub: {exc}") from exc
    if cfg.task_family == "banking77":
        load_banking77(cfg.banking77_path)


def resolve_device(cfg: ReptileConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and cfg.model == "hf"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cpu")


def build_family(cfg: ReptileConfig, tokenizer=None):
    if cfg.task_family == "synthetic":
        return SyntheticTaskFamily(cfg.family, cfg.ways, cfg.shots, cfg.queries)
    train_rows, test_rows = load_banking77(cfg.banking77_path)
    return TextTaskFamily(train_rows, test_rows, tokenizer, cfg.ways, cfg.shots, cfg.queries, cfg.max_length)


def build_model_and_family(cfg: ReptileConfig, seed: int, device: torch.device):
    """(model, family) for `cfg`; the model's initial weights depend on `seed` only."""
    if cfg.model == "hf":
        backbone, tokenizer = load_hf(cfg.hf_model, device)
        family = build_family(cfg, tokenizer)
        with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
            torch.manual_seed(seed)
            model = HFClassifier(backbone, backbone.config.hidden_size, cfg.ways).to(device)
            apply_lora(model, cfg.lora_targets, cfg.lora_rank or 8, cfg.lora_alpha, keep_trainable=("head",))
        return model, family
    family = build_family(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallClassifier(family.input_dim, cfg.hidden, cfg.ways)
        if cfg.lora_rank:
            apply_lora(model, ("features",), cfg.lora_rank, cfg.lora_alpha, keep_trainable=("head",))
    return model.to(device), family


# ---------------------------------------------------------------------------
# Reptile
# ---------------------------------------------------------------------------

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


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


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
        _write_json(out / "config.json", {"n_tasks": n_tasks, "seed": seed, "device": str(device),
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
        _write_json(out / "final_result.json", result)
    logger.info("n_tasks %d seed %d: meta-test loss %.4f (scratch tuned %.4f, zero-shot %.4f) in %.1f s", n_tasks, seed,
                result["meta_test_loss"], baselines["scratch_tuned"]["loss"], baselines["zero_shot"]["loss"],
                result["wall_s"])
    return result
