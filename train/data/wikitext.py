"""WikiText-103 (raw), modelled byte by byte (vocab 256, metric bits per byte).

Sources, in order:
1. `path`: a directory holding the original release's wiki.train.raw and
   wiki.valid.raw (memory-mapped, nothing loaded), or the Hugging Face parquet
   files of the wikitext-103-raw-v1 configuration (train-*.parquet and
   validation-*.parquet, whose `text` rows are the lines of the raw files).
   The directory itself, or a wikitext-103-raw / wikitext-103-raw-v1 folder in it.
2. Without `path`: Hugging Face `datasets`, if it is installed (downloads once
   into its own cache; needs network access).
Otherwise DatasetUnavailable says what to download and where to put it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DatasetUnavailable, MappedTokens, WindowedTokenDataset, check_int, check_path

HF_REPO = "Salesforce/wikitext"
HF_CONFIG = "wikitext-103-raw-v1"
SUBDIRS = ("", "wikitext-103-raw", "wikitext-103-raw-v1")

HOW_TO_GET_IT = (
    "Download the raw WikiText-103 from https://huggingface.co/datasets/Salesforce/wikitext "
    "(folder wikitext-103-raw-v1: train-00000-of-00002.parquet, train-00001-of-00002.parquet "
    "and validation-00000-of-00001.parquet), or the original release's wiki.train.raw and "
    "wiki.valid.raw; put them in one directory and pass it as the `path` parameter, e.g. "
    "`data: {benchmark: wikitext103, path: /data/wikitext-103-raw-v1}`."
)


def _find_local(root: Path) -> tuple[str, Path] | None:
    """("raw" | "parquet", directory) for the first layout found under root."""
    for sub in SUBDIRS:
        d = root / sub if sub else root
        if (d / "wiki.train.raw").is_file() and (d / "wiki.valid.raw").is_file():
            return "raw", d
        if sorted(d.glob("train-*.parquet")) and sorted(d.glob("validation-*.parquet")):
            return "parquet", d
    return None


def _parquet_text_bytes(files: list[Path]) -> np.ndarray:
    """The UTF-8 bytes of the `text` column of the files, rows joined with nothing
    (each row already ends in its newline)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pieces = []
    for f in files:
        names = pq.read_schema(f).names
        if "text" not in names:
            raise ValueError(f"wikitext103: {f} has no 'text' column (columns: {names})")
        for chunk in pq.read_table(f, columns=["text"]).column("text").chunks:
            if len(chunk) == 0:
                continue
            chunk = pc.fill_null(chunk.cast(pa.large_string()), "")
            # A string array is one contiguous UTF-8 buffer plus offsets, so the
            # joined text is a slice of that buffer: no per-row Python strings.
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)
            offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
            data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)
            pieces.append(data[offsets[0] : offsets[-1]])
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)


def _from_hugging_face() -> tuple[np.ndarray, np.ndarray]:
    try:
        import datasets  # optional; only this fallback needs it
    except ImportError:
        raise DatasetUnavailable(
            "wikitext103: no local copy was given (parameter `path`) and Hugging Face `datasets` is not "
            "installed, so it cannot be fetched. " + HOW_TO_GET_IT
        ) from None
    try:
        ds = datasets.load_dataset(HF_REPO, HF_CONFIG)
        train = "".join(ds["train"]["text"]).encode("utf-8")
        val = "".join(ds["validation"]["text"]).encode("utf-8")
    except Exception as e:  # network, hub or cache errors all mean the same to the user
        raise DatasetUnavailable(
            f"wikitext103: fetching {HF_REPO}/{HF_CONFIG} with Hugging Face `datasets` failed "
            f"({type(e).__name__}: {e}). " + HOW_TO_GET_IT
        ) from None
    return np.frombuffer(train, dtype=np.uint8), np.frombuffer(val, dtype=np.uint8)


class WikiText103(WindowedTokenDataset):
    name = "wikitext103"
    vocab_size = 256
    metric = "bpb"

    def __init__(self, *, seq_len: int, seed: int = 0, path: str | None = None):
        seq_len = check_int("seq_len", seq_len, minimum=1)
        if path is None:
            train, val = _from_hugging_face()
            self._source = {"source": f"huggingface:{HF_REPO}/{HF_CONFIG}", "format": "datasets"}
        else:
            root = check_path("path", path)
            found = _find_local(root) if root.is_dir() else None
            if found is None:
                if root.exists():
                    problem = (
                        "holds neither wiki.train.raw + wiki.valid.raw "
                        "nor train-*.parquet + validation-*.parquet"
                    )
                else:
                    problem = "does not exist"
                looked = ", ".join(str(root / s) if s else str(root) for s in SUBDIRS)
                raise DatasetUnavailable(
                    f"wikitext103: `path` {str(root)!r} {problem} (looked in {looked}). " + HOW_TO_GET_IT
                )
            kind, d = found
            if kind == "raw":
                train_file, val_file = d / "wiki.train.raw", d / "wiki.valid.raw"
                train = MappedTokens(train_file, "u1", 0, train_file.stat().st_size)
                val = MappedTokens(val_file, "u1", 0, val_file.stat().st_size)
                files = {"train": [str(train_file)], "val": [str(val_file)]}
            else:
                train_files = sorted(d.glob("train-*.parquet"))
                val_files = sorted(d.glob("validation-*.parquet"))
                train, val = _parquet_text_bytes(train_files), _parquet_text_bytes(val_files)
                files = {"train": [str(f) for f in train_files], "val": [str(f) for f in val_files]}
            self._source = {"source": str(d), "format": kind, "files": files}
        self.token_bytes = torch.ones(256, dtype=torch.long)
        super().__init__([train], [val], seq_len)

    def details(self) -> dict:
        return {
            "bytes": {"train": self.train_tokens, "val": self.val_tokens},
            **self._source,
        }
