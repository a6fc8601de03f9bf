"""The datasets the training engine trains on, chosen by benchmark name.

    ds = build_dataset("bytes", seq_len=256)             # needs no download
    x, y = ds.train_batch(32, torch.Generator().manual_seed(0))
    for x, y in ds.eval_batches(32, max_batches=8): ...

Parameters of each benchmark are the keyword arguments of its class
(BytesCorpus, MQAR, WikiText103, FineWeb); a name that is not one of them, or a
value that does not fit, is a ValueError that names it. Data that is not on this
machine is a DatasetUnavailable that says what to download and where to put it.
"""

from __future__ import annotations

import inspect

from .base import (
    IGNORE_INDEX,
    DatasetUnavailable,
    TokenDataset,
    accuracy,
    bits_per_byte,
    check_int,
    correct_and_total,
    scored_bytes,
)
from .bytes_corpus import BytesCorpus
from .fineweb import FineWeb
from .mqar import MQAR
from .wikitext import WikiText103

BENCHMARKS = ("bytes", "mqar", "wikitext103", "fineweb")

_CLASSES: dict[str, type[TokenDataset]] = {
    "bytes": BytesCorpus,
    "mqar": MQAR,
    "wikitext103": WikiText103,
    "fineweb": FineWeb,
}


def benchmark_params(benchmark: str) -> dict[str, object]:
    """The parameters a benchmark accepts, with their defaults (beyond seq_len and seed)."""
    signature = inspect.signature(_CLASSES[benchmark].__init__)
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("seq_len", "seed")
    }


def build_dataset(benchmark: str, *, seq_len: int, seed: int = 0, **params) -> TokenDataset:
    """The dataset for `benchmark`, one of BENCHMARKS."""
    if not isinstance(benchmark, str) or benchmark not in _CLASSES:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of: {', '.join(BENCHMARKS)}")
    accepted = benchmark_params(benchmark)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        listed = ", ".join(accepted) or "none"
        raise ValueError(
            f"unknown parameter {unknown[0]!r} for benchmark {benchmark!r}"
            + (f" (also {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
            + f"; it accepts: {listed}"
        )
    check_int("seed", seed, minimum=0)
    return _CLASSES[benchmark](seq_len=seq_len, seed=seed, **params)


__all__ = [
    "BENCHMARKS",
    "IGNORE_INDEX",
    "BytesCorpus",
    "DatasetUnavailable",
    "FineWeb",
    "MQAR",
    "TokenDataset",
    "WikiText103",
    "accuracy",
    "benchmark_params",
    "bits_per_byte",
    "build_dataset",
    "correct_and_total",
    "scored_bytes",
]
