"""Multi-Query Associative Recall (MQAR), as defined in Zoology.

Arora, Eyuboglu et al. 2023, "Zoology: Measuring and Improving Recall in
Efficient Language Models"; reference generator `multiquery_ar` in
github.com/HazyResearch/zoology (zoology/data/associative_recall.py). Each row:

    k1 v1 k2 v2 ... kN vN | query region of seq_len - 2N tokens

Keys come from [1, vocab/2) and values from [vocab/2, vocab), N distinct of each
per row. Every key is queried once, at an even offset 2*g of the query region,
where the gaps g are drawn without replacement from a power law
p(g) ~ (g+1)^(power_a - 1): small gaps are likely, as repeated bigrams in real
text tend to recur soon. The target at a query position is the value paired
with that key; every other target is -100. The remaining query-region tokens
are 0, or uniform random tokens when random_non_queries (Zoology's default).

Unlike the language-modelling datasets, y is not x shifted by one: the scored
target at a query is the paired value, not the (random) token that follows it.
This is exactly Zoology's labelling. Here the rows are drawn with torch from the
caller's generator instead of numpy's global seed; the distribution is the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .base import IGNORE_INDEX, TokenDataset, check_batch_args, check_bool, check_float, check_int

# The validation set's generator is seeded far from any seed a trainer would use
# for its own generator (seed, seed + rank, ...), so training batches can never
# replay the validation rows.
_VALIDATION_SEED_OFFSET = 0x5A0_0100_0000


def power_law_gap_weights(space: int, power_a: float) -> torch.Tensor:
    """Zoology's query-gap distribution over 0..space-1: p ~ a * (g+1)^(a-1), normalised."""
    ranks = torch.arange(1, space + 1, dtype=torch.float64)
    p = power_a * ranks ** (power_a - 1)
    return p / p.sum()


def mqar_batch(
    n: int,
    *,
    seq_len: int,
    vocab_size: int,
    num_kv_pairs: int,
    power_a: float,
    random_non_queries: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n MQAR rows: x, y LongTensor[n, seq_len]. Arguments are assumed valid
    (MQAR.__init__ checks them)."""
    context = 2 * num_kv_pairs
    key_vocab = vocab_size // 2

    # N distinct keys and values per row: the top-N of iid uniform scores is a
    # uniformly random ordered subset, like np.random.choice(replace=False).
    keys = torch.rand(n, key_vocab - 1, generator=generator).topk(num_kv_pairs, dim=1).indices + 1
    values = torch.rand(n, vocab_size - key_vocab, generator=generator).topk(num_kv_pairs, dim=1).indices
    values += key_vocab

    # Gap of each key's query, without replacement, power-law weighted. torch's
    # multinomial draws sequentially and renormalises, as numpy's choice does.
    space = (seq_len - context) // 2
    weights = power_law_gap_weights(space, power_a).to(torch.float32).expand(n, space)
    gaps = torch.multinomial(weights, num_kv_pairs, replacement=False, generator=generator)
    query_pos = context + 2 * gaps

    # One token longer than seq_len, then shift, as Zoology builds it: a query at
    # position q gets the label at q + 1, which after the shift is y[q].
    inputs = torch.zeros(n, seq_len + 1, dtype=torch.long)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    inputs.scatter_(1, query_pos, keys)
    labels = torch.full((n, seq_len + 1), IGNORE_INDEX, dtype=torch.long)
    labels.scatter_(1, query_pos + 1, values)
    x, y = inputs[:, :-1].contiguous(), labels[:, 1:].contiguous()

    if random_non_queries:
        noise = torch.randint(vocab_size, x.shape, generator=generator)
        x = torch.where(x == 0, noise, x)
    return x, y


class MQAR(TokenDataset):
    """MQAR generated on the fly: training rows from the caller's generator, a
    fixed validation set of num_examples rows from `seed`. Metric: accuracy over
    the query positions."""

    name = "mqar"
    metric = "accuracy"
    token_bytes = None

    def __init__(
        self,
        *,
        seq_len: int,
        seed: int = 0,
        vocab_size: int = 8192,
        num_kv_pairs: int = 8,
        num_examples: int = 1000,
        power_a: float = 0.01,
        random_non_queries: bool = True,
    ):
        self.seq_len = check_int("seq_len", seq_len, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=4)
        self.num_kv_pairs = check_int("num_kv_pairs", num_kv_pairs, minimum=1)
        self.num_examples = check_int("num_examples", num_examples, minimum=1)
        self.power_a = check_float("power_a", power_a, low=0.0, high=math.inf, low_open=True)
        self.random_non_queries = check_bool("random_non_queries", random_non_queries)

        # Zoology's own preconditions, as errors that say what to change.
        if self.seq_len % 2:
            raise ValueError(
                f"mqar: seq_len must be even (key-value pairs and query slots are 2 tokens), got {seq_len}"
            )
        if self.seq_len < 4 * self.num_kv_pairs:
            raise ValueError(
                f"mqar: seq_len must be >= 4 * num_kv_pairs = {4 * self.num_kv_pairs} "
                f"(2 tokens per pair, 2 per query slot), got seq_len={seq_len}; "
                f"raise seq_len or lower num_kv_pairs"
            )
        if self.vocab_size <= self.seq_len:
            raise ValueError(
                f"mqar: vocab_size must be > seq_len, got vocab_size={vocab_size}, seq_len={seq_len}"
            )
        if self.num_kv_pairs > self.vocab_size // 2 - 1:
            raise ValueError(
                f"mqar: num_kv_pairs={num_kv_pairs} distinct keys do not fit in the "
                f"{self.vocab_size // 2 - 1} key tokens of vocab_size={vocab_size}"
            )
        self._val: tuple[torch.Tensor, torch.Tensor] | None = None

    def _rows(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return mqar_batch(
            n,
            seq_len=self.seq_len,
            vocab_size=self.vocab_size,
            num_kv_pairs=self.num_kv_pairs,
            power_a=self.power_a,
            random_non_queries=self.random_non_queries,
            generator=generator,
        )

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch_args(batch_size)
        return self._rows(batch_size, generator)

    def validation_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All num_examples validation rows, generated once from `seed`."""
        if self._val is None:
            g = torch.Generator().manual_seed(self.seed + _VALIDATION_SEED_OFFSET)
            self._val = self._rows(self.num_examples, g)
        return self._val

    def eval_batches(self, batch_size: int, max_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        check_batch_args(batch_size, max_batches)
        x, y = self.validation_set()
        for i in range(0, min(len(x), batch_size * max_batches), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]

    def __getstate__(self):
        # The validation rows are regenerated from the seed; no need to ship them.
        state = self.__dict__.copy()
        state["_val"] = None
        return state

    def details(self) -> dict:
        return {
            "num_kv_pairs": self.num_kv_pairs,
            "power_a": self.power_a,
            "random_non_queries": self.random_non_queries,
            "seed": self.seed,
            "examples": {"train": "generated per batch", "val": self.num_examples},
            "source": "synthetic (Zoology multiquery_ar)",
        }
