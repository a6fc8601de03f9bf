"""Few-shot episodes and the task families they come from.

- "synthetic" (default, needs no download): `SyntheticTaskFamily`, a fixed
  generative distribution. Inputs live in `dim` dimensions with isotropic noise;
  a class is a prototype in the span of a few of `n_factors` latent directions
  (each task uses `factors_per_task` of them, drawn with Zipf frequencies, so
  rare factors appear only once many tasks are seen). The N_tasks training tasks
  of a seed are the first N_tasks of that seed's stream (pools are nested), and
  the held-out test tasks are one fixed set shared by every run.
- "banking77": 5-way tasks over the 77 Banking77 intents, classes split into
  meta-train and held-out intents; needs the dataset locally or reachable.

Labels are permuted in every episode, so a model cannot memorise classes.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from studies.reptile.config import ReptileConfig, ReptileUnavailable, SyntheticFamilyConfig

BANKING77_DATASET = "PolyAI/banking77"


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


def build_family(cfg: ReptileConfig, tokenizer=None):
    if cfg.task_family == "synthetic":
        return SyntheticTaskFamily(cfg.family, cfg.ways, cfg.shots, cfg.queries)
    train_rows, test_rows = load_banking77(cfg.banking77_path)
    return TextTaskFamily(train_rows, test_rows, tokenizer, cfg.ways, cfg.shots, cfg.queries, cfg.max_length)
