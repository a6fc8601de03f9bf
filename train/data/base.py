"""What every dataset offers the training engine, and the metrics computed from it.

A dataset hands out `(x, y)` batches of token ids: random training windows drawn
from a `torch.Generator` the caller owns, and a fixed list of validation windows
that is the same on every call and every process, so evaluations are comparable.
Targets that must not be scored hold `IGNORE_INDEX` (-100, what
`torch.nn.functional.cross_entropy` skips by default).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

IGNORE_INDEX = -100
METRICS = ("bpb", "accuracy")


class DatasetUnavailable(RuntimeError):
    """The data is not on this machine and could not be fetched; the message says
    what to download and where to put it."""


# ---------------------------------------------------------------------------
# Parameter checks. User config reaches the datasets as plain keyword arguments,
# so each one is checked here and a bad one is named in a ValueError.
# ---------------------------------------------------------------------------


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    # bool is an int subclass; `num_kv_pairs: true` in a YAML file is a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"parameter {name!r} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"parameter {name!r} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"parameter {name!r} must be <= {maximum}, got {value}")
    return value


def check_float(name: str, value, *, low: float, high: float, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"parameter {name!r} must be a number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if math.isnan(value) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"parameter {name!r} must be in {lo}{low}, {high}{hi}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"parameter {name!r} must be true or false, got {value!r}")
    return bool(value)


def check_path(name: str, value) -> Path:
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise ValueError(f"parameter {name!r} must be a path, got {value!r}")
    return Path(value).expanduser()


# ---------------------------------------------------------------------------
# The interface.
# ---------------------------------------------------------------------------


class TokenDataset(ABC):
    """A benchmark the engine trains and evaluates on.

    Attributes every dataset sets: `name`, `vocab_size`, `seq_len`, `metric`
    ("bpb" or "accuracy") and `token_bytes` (LongTensor[vocab_size], the UTF-8
    bytes each token id stands for, or None where bits per byte means nothing).
    """

    name: str
    vocab_size: int
    seq_len: int
    metric: str
    token_bytes: torch.Tensor | None

    @abstractmethod
    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: LongTensor[batch_size, seq_len]; y holds the next-token targets,
        IGNORE_INDEX where a position is not scored."""

    @abstractmethod
    def eval_batches(self, batch_size: int, max_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Validation batches, identical on every call and on every process."""

    def describe(self) -> dict:
        """A JSON-serialisable summary: name, metric, vocab_size, seq_len, then
        what `details()` adds (split sizes, sources)."""
        return {
            "name": self.name,
            "metric": self.metric,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            **self.details(),
        }

    @abstractmethod
    def details(self) -> dict:
        """What this dataset adds to `describe()`: split sizes and sources."""


def check_batch_args(batch_size, max_batches=None) -> None:
    check_int("batch_size", batch_size, minimum=1)
    if max_batches is not None:
        check_int("max_batches", max_batches, minimum=1)


# ---------------------------------------------------------------------------
# Token sequences held in files, and windows over them.
# ---------------------------------------------------------------------------


class MappedTokens:
    """A read-only 1-D run of tokens inside a file, memory-mapped on first use.

    It pickles as its path, offset and length, so sending a dataset to a Ray
    worker never ships gigabytes of tokens; the worker maps the same file.
    """

    def __init__(self, path: Path, dtype: str, offset: int, count: int):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        self.count = int(count)
        self._map: np.ndarray | None = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key):
        if self._map is None:
            self._map = np.memmap(
                self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.count,)
            )
        return self._map[key]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_map"] = None
        return state


class TokenWindows:
    """Windows of `seq_len + 1` tokens over a list of segments (arrays or
    MappedTokens). A window never crosses a segment boundary, so a dataset
    decides where text may run on (the bytes corpus joins its files into one
    segment; FineWeb keeps each shard a segment of its own)."""

    def __init__(self, segments: Sequence, seq_len: int):
        self.seq_len = seq_len
        span = seq_len + 1
        self.segments = [s for s in segments if len(s) >= span]
        # Number of possible training start positions in each segment, and the
        # flat index of each segment's first one.
        starts = np.array([len(s) - span + 1 for s in self.segments], dtype=np.int64)
        self._start_first = np.cumsum(starts) - starts
        self._num_starts = int(starts.sum())
        # Non-overlapping evaluation tiles: tile i of a segment covers [i*L, i*L + L + 1).
        tiles = np.array([(len(s) - 1) // seq_len for s in self.segments], dtype=np.int64)
        self._tile_first = np.cumsum(tiles) - tiles
        self._num_tiles = int(tiles.sum())

    @property
    def num_tokens(self) -> int:
        return int(sum(len(s) for s in self.segments))

    @property
    def num_tiles(self) -> int:
        return self._num_tiles

    def _gather(self, seg_idx: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        span = self.seq_len + 1
        rows = [np.asarray(self.segments[i][s : s + span]) for i, s in zip(seg_idx.tolist(), starts.tolist())]
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n windows, uniform over every start position of every segment."""
        flat = torch.randint(0, self._num_starts, (n,), generator=generator).numpy()
        seg = np.searchsorted(self._start_first, flat, side="right") - 1
        starts = flat - self._start_first[seg]
        return self._gather(seg, starts)

    def tiles(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` evaluation tiles (all of them if there are fewer), spread evenly
        over the whole split so a short evaluation still sees every part of it."""
        total = self.num_tiles
        n = min(n, total)
        # floor(k * total / n) is strictly increasing when n <= total: distinct tiles.
        flat = (np.arange(n, dtype=np.int64) * total) // n
        seg = np.searchsorted(self._tile_first, flat, side="right") - 1
        return seg, (flat - self._tile_first[seg]) * self.seq_len


class WindowedTokenDataset(TokenDataset):
    """A language-modelling dataset: random windows for training, evenly spread
    non-overlapping windows of the validation split for evaluation."""

    def __init__(self, train_segments: Sequence, val_segments: Sequence, seq_len: int):
        self.seq_len = seq_len
        self._train = TokenWindows(train_segments, seq_len)
        self._val = TokenWindows(val_segments, seq_len)
        for split, segments, windows in (
            ("training", train_segments, self._train),
            ("validation", val_segments, self._val),
        ):
            if not windows.segments:
                longest = max((len(s) for s in segments), default=0)
                raise ValueError(
                    f"{self.name}: the {split} split has no run of at least seq_len + 1 = {seq_len + 1} "
                    f"tokens (the longest has {longest}); use a shorter seq_len or more data"
                )

    def _checked(self, chunk: torch.Tensor) -> torch.Tensor:
        # Cheap guard against a vocab_size that does not match the data, which
        # would otherwise surface as an opaque CUDA index error in the embedding.
        top = int(chunk.max())
        if top >= self.vocab_size:
            raise ValueError(
                f"{self.name}: token id {top} found in the data but vocab_size is {self.vocab_size}; "
                f"set vocab_size to the tokenizer's vocabulary size"
            )
        return chunk

    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_batch_args(batch_size)
        chunk = self._checked(self._train.sample(batch_size, generator))
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    def eval_batches(self, batch_size: int, max_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        check_batch_args(batch_size, max_batches)
        seg, starts = self._val.tiles(batch_size * max_batches)
        for lo in range(0, len(seg), batch_size):
            chunk = self._checked(self._val._gather(seg[lo : lo + batch_size], starts[lo : lo + batch_size]))
            yield chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    def segments(self, split: str) -> list:
        """The token runs (arrays or MappedTokens) of split "train" or "val"."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return list((self._train if split == "train" else self._val).segments)

    @property
    def train_tokens(self) -> int:
        return self._train.num_tokens

    @property
    def val_tokens(self) -> int:
        return self._val.num_tokens


# ---------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------


def scored_bytes(y: torch.Tensor, token_bytes: torch.Tensor) -> int:
    """UTF-8 bytes covered by the scored targets of `y`."""
    targets = y[y != IGNORE_INDEX]
    return int(token_bytes.to(targets.device)[targets].sum())


def bits_per_byte(loss_sum_nats, y: torch.Tensor, token_bytes: torch.Tensor) -> float:
    """Turn cross-entropy summed over the scored targets of `y` (in nats) into
    bits per byte of the text those targets stand for.

    Dividing by bytes rather than tokens makes runs with different tokenizers
    comparable (the Parameter Golf metric). `y` may be one batch or all the
    evaluation targets concatenated, as long as `loss_sum_nats` covers the same.
    """
    if token_bytes is None:
        raise ValueError("bits per byte needs token_bytes; this dataset has none (its metric is accuracy)")
    nbytes = scored_bytes(y, token_bytes)
    if nbytes <= 0:
        raise ValueError("bits per byte is undefined: the scored targets cover 0 bytes")
    return float(loss_sum_nats) / math.log(2.0) / nbytes


def correct_and_total(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """Argmax hits and number of scored positions; sums of these across batches
    and workers give the exact accuracy, which averaging per-batch accuracies does not."""
    mask = y != IGNORE_INDEX
    hits = (logits.argmax(dim=-1)[mask] == y[mask]).sum()
    return int(hits), int(mask.sum())


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of scored positions (y != -100) where the argmax of `logits` is the target."""
    hits, total = correct_and_total(logits, y)
    if total == 0:
        raise ValueError("accuracy is undefined: no position in y is scored (all are -100)")
    return hits / total
