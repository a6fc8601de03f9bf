"""FineWeb token shards in the format of OpenAI's Parameter Golf challenge.

A shard (`train_gpt.py` in github.com/openai/parameter-golf) is a header of 256
little-endian int32 (magic 20240520, version 1, token count, then zeros),
followed by that many little-endian uint16 token ids. Shards are memory-mapped,
never read whole. The metric is bits per byte, so each token's byte length is
needed: from a .npy array (`token_bytes_path`) or from the sentencepiece model
(`tokenizer_path`, needs the optional `sentencepiece` package).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from analysis.files import atomic_write_bytes

from .base import DatasetUnavailable, MappedTokens, WindowedTokenDataset, check_int, check_path

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = "<u2"

HOW_TO_GET_IT = (
    "Get the shards and tokenizer with Parameter Golf's downloader "
    "(https://github.com/openai/parameter-golf: "
    "`python3 data/cached_challenge_fineweb.py --variant sp1024`), "
    "which writes data/datasets/fineweb10B_sp1024/fineweb_{train,val}_*.bin and "
    "data/tokenizers/fineweb_1024_bpe.model; pass the shard directory as `path` and the model as "
    "`tokenizer_path` (or a .npy of each token's byte length as `token_bytes_path`)."
)


def write_shard(path, tokens) -> None:
    """Write `tokens` (ints in [0, 65536)) as a shard file, atomically."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or (tokens.size and not np.issubdtype(tokens.dtype, np.integer)):
        raise ValueError(
            f"write_shard: tokens must be a 1-D array of integers, got shape {tokens.shape} dtype {tokens.dtype}"
        )
    if tokens.size and (tokens.min() < 0 or tokens.max() > 0xFFFF):
        raise ValueError("write_shard: token ids must be in [0, 65535] to fit the uint16 format")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    atomic_write_bytes(path, header.tobytes() + tokens.astype(TOKEN_DTYPE).tobytes())


def open_shard(path) -> MappedTokens:
    """Check a shard's header and size, and map its tokens."""
    path = Path(path)
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header.size != HEADER_INTS:
        raise ValueError(
            f"fineweb: {path} is not a token shard: {path.stat().st_size} bytes, "
            f"shorter than the {HEADER_BYTES}-byte header"
        )
    if int(header[0]) != SHARD_MAGIC:
        raise ValueError(
            f"fineweb: {path} is not a token shard: magic number {int(header[0])}, expected {SHARD_MAGIC}"
        )
    if int(header[1]) != SHARD_VERSION:
        raise ValueError(
            f"fineweb: {path} has shard version {int(header[1])}; only version {SHARD_VERSION} is supported"
        )
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    actual = path.stat().st_size
    if count < 0 or actual != expected:
        raise ValueError(
            f"fineweb: {path} is truncated or corrupt: its header says {count} tokens "
            f"({expected} bytes in all) but the file has {actual} bytes"
        )
    return MappedTokens(path, TOKEN_DTYPE, HEADER_BYTES, count)


def token_bytes_from_sentencepiece(model_path, vocab_size: int) -> np.ndarray:
    """Each token's UTF-8 byte length under a sentencepiece model, as Parameter
    Golf counts it: a leading '▁' is one space byte, byte-fallback pieces
    (<0x41>) are one byte, control/unknown/unused pieces are zero.

    Parameter Golf also drops the leading space of a token that follows a
    control token (a document start); one number per token cannot express that,
    so this counts one byte more per document (about 0.05% on FineWeb).
    Save the result with np.save to use it where sentencepiece is not installed.
    """
    try:
        import sentencepiece as spm  # optional; only this path needs it
    except ImportError:
        raise DatasetUnavailable(
            f"fineweb: reading the tokenizer {model_path} needs the `sentencepiece` package, which is not "
            "installed. Install it, or on a machine that has it run "
            "`np.save('token_bytes.npy', "
            "train.data.fineweb.token_bytes_from_sentencepiece(model, vocab_size))` "
            "and pass that file as `token_bytes_path`."
        ) from None
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    n = int(sp.vocab_size())
    if n > vocab_size:
        raise ValueError(
            f"fineweb: the tokenizer {model_path} has {n} pieces but vocab_size is {vocab_size}; "
            f"set vocab_size: {n}"
        )
    table = np.zeros(vocab_size, dtype=np.int64)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        if sp.is_byte(i):
            table[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):  # '▁' marks a space before the word
            table[i] = 1 + len(piece[1:].encode("utf-8"))
        else:
            table[i] = len(piece.encode("utf-8"))
    return table


def load_token_bytes(npy_path, vocab_size: int) -> np.ndarray:
    """A token_bytes array saved with np.save, checked against vocab_size."""
    where = f"fineweb: token_bytes_path {str(npy_path)!r}"
    try:
        table = np.load(npy_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where} is not a readable .npy array ({e})") from None
    if table.ndim != 1 or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"{where} must hold a 1-D integer array, got shape {table.shape} dtype {table.dtype}")
    if len(table) != vocab_size:
        raise ValueError(f"{where} has {len(table)} entries but vocab_size is {vocab_size}")
    if table.size and table.min() < 0:
        raise ValueError(f"{where} has negative byte lengths")
    return table.astype(np.int64)


class FineWeb(WindowedTokenDataset):
    """FineWeb shards: random windows of the train shards for training, the val
    shards (Parameter Golf's fixed first 50k documents) for evaluation."""

    name = "fineweb"
    metric = "bpb"

    def __init__(
        self,
        *,
        seq_len: int,
        seed: int = 0,
        path: str | None = None,
        tokenizer_path: str | None = None,
        token_bytes_path: str | None = None,
        vocab_size: int = 1024,
    ):
        seq_len = check_int("seq_len", seq_len, minimum=1)
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=2, maximum=0x10000)

        if path is None:
            raise DatasetUnavailable("fineweb: no shard directory given (parameter `path`). " + HOW_TO_GET_IT)
        root = check_path("path", path)
        if not root.is_dir():
            raise DatasetUnavailable(f"fineweb: `path` {str(root)!r} is not a directory. " + HOW_TO_GET_IT)
        train_files = sorted(root.glob("fineweb_train_*.bin"))
        val_files = sorted(root.glob("fineweb_val_*.bin"))
        for split, files in (("train", train_files), ("val", val_files)):
            if not files:
                raise DatasetUnavailable(
                    f"fineweb: no fineweb_{split}_*.bin shards in {root}. " + HOW_TO_GET_IT
                )

        loaders = {"token_bytes_path": load_token_bytes, "tokenizer_path": token_bytes_from_sentencepiece}
        given = {name: value for name, value in
                 (("token_bytes_path", token_bytes_path), ("tokenizer_path", tokenizer_path)) if value is not None}
        if len(given) == 2:
            raise ValueError("fineweb: give either `tokenizer_path` or `token_bytes_path`, not both")
        if not given:
            raise DatasetUnavailable(
                "fineweb: bits per byte needs each token's byte length, so the tokenizer is required: "
                "pass `tokenizer_path` (the sentencepiece .model) or `token_bytes_path`. " + HOW_TO_GET_IT
            )
        [(name, value)] = given.items()
        source = check_path(name, value)
        if not source.is_file():
            raise DatasetUnavailable(f"fineweb: {name} {str(source)!r} does not exist. " + HOW_TO_GET_IT)
        table = loaders[name](source, self.vocab_size)
        self.token_bytes = torch.from_numpy(table)

        train = [open_shard(f) for f in train_files]
        val = [open_shard(f) for f in val_files]
        self._info = {
            "source": str(root),
            "shards": {"train": [str(f) for f in train_files], "val": [str(f) for f in val_files]},
            "token_bytes_from": str(source),
        }
        super().__init__(train, val, seq_len)

    def details(self) -> dict:
        return {
            "tokens": {"train": self.train_tokens, "val": self.val_tokens},
            **self._info,
        }
