"""Byte-level text from local files: the benchmark that needs no download.

By default the corpus is the Python standard library source of the running
interpreter: real text, present on every machine, and read in sorted path order,
so two builds on one image give the same bytes (`describe()["sha256"]` lets you
check that across machines). Files are split into train and validation by a
stable hash of their relative path, so no file's text is in both splits.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import sysconfig
from pathlib import Path

import numpy as np
import torch

from .base import WindowedTokenDataset, check_float, check_int, check_path

# Third-party code and the test suites are left out of the stdlib corpus: the
# former differs between environments, the latter is mostly repetitive fixtures.
STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)


def _walk(root: Path, pattern: str, excluded: frozenset[str]) -> list[tuple[str, Path]]:
    """(path relative to root, path) of the files under root whose name matches
    pattern, sorted, skipping hidden directories (.git, .venv) and `excluded`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in excluded and not d.startswith(".")]
        for filename in filenames:
            path = Path(dirpath) / filename
            if fnmatch.fnmatch(filename, pattern) and path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def _hash_unit(key: str) -> float:
    """A number in [0, 1) fixed by the path. sha256, not Python's hash(), which
    is salted per process: every process must draw the same split."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _validation_flags(keys: list[str], val_fraction: float) -> list[bool]:
    """Which files are validation: those whose hash is below val_fraction. With
    few files that can leave a split without any, so then the file with the
    lowest (highest) hash is moved to validation (training): still by file,
    still the same every time."""
    units = [_hash_unit(k) for k in keys]
    flags = [u < val_fraction for u in units]
    if not any(flags):
        flags[units.index(min(units))] = True
    if all(flags):
        flags[units.index(max(units))] = False
    return flags


def _read_capped(paths: list[Path], budget: int) -> tuple[list[bytes], bool]:
    """The files' bytes, in order, until `budget` bytes are read; and whether the
    budget left anything out."""
    chunks, total = [], 0
    for i, path in enumerate(paths):
        room = budget - total
        if room <= 0:
            return chunks, True
        with open(path, "rb") as f:
            data = f.read(room + 1)  # one byte more tells whether the cap cuts the file
        if len(data) > room:
            return chunks + [data[:room]], True
        if data:
            chunks.append(data)
            total += len(data)
    return chunks, False


def _normalise_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not paths:
        raise ValueError(f"parameter 'paths' must be a list of files or directories, got {paths!r}")
    resolved = []
    for p in paths:
        path = check_path("paths", p)
        if not path.exists():
            raise ValueError(f"parameter 'paths': {str(p)!r} does not exist")
        resolved.append(path)
    return resolved


class BytesCorpus(WindowedTokenDataset):
    """Byte-level language modelling (vocab 256) on local text files.

    paths: files or directories (directories are walked for files whose name
        matches `glob`); None means the Python standard library.
    max_bytes: cap on the corpus size. Validation files are read in sorted order
        up to val_fraction of it, then training files up to the rest.
    val_fraction: the chance that a file goes to validation, decided by a hash
        of its path (relative to the directory given). A corpus of a single file
        cannot be split by file, so its last val_fraction of bytes is the
        validation split instead.
    """

    name = "bytes"
    vocab_size = 256
    metric = "bpb"

    def __init__(
        self,
        *,
        seq_len: int,
        seed: int = 0,
        paths: list[str] | None = None,
        glob: str = "*.py",
        max_bytes: int = 8_000_000,
        val_fraction: float = 0.05,
    ):
        seq_len = check_int("seq_len", seq_len, minimum=1)
        max_bytes = check_int("max_bytes", max_bytes, minimum=1)
        val_fraction = check_float(
            "val_fraction", val_fraction, low=0.0, high=1.0, low_open=True, high_open=True
        )
        if not isinstance(glob, str) or not glob:
            raise ValueError(f"parameter 'glob' must be a file name pattern such as '*.py', got {glob!r}")

        if paths is None:
            stdlib = Path(sysconfig.get_paths()["stdlib"])
            roots = [stdlib]
            files = _walk(stdlib, glob, STDLIB_EXCLUDED_DIRS)
            source = "python-stdlib"
        else:
            roots = _normalise_paths(paths)
            files = []
            for root in roots:
                if root.is_dir():
                    files += _walk(root, glob, frozenset({"__pycache__"}))
                else:
                    # A file named explicitly is used whatever its name.
                    files.append((root.name, root))
            source = "paths"
        where = ", ".join(str(r) for r in roots)
        if not files:
            raise ValueError(f"bytes corpus is empty: no files matching {glob!r} under {where}")

        if len(files) == 1:
            # One file cannot be split by file: its tail is the validation split.
            chunks, truncated = _read_capped([files[0][1]], max_bytes)
            data = b"".join(chunks)
            cut = len(data) - max(1, round(len(data) * val_fraction))
            train, val = data[:cut], data[cut:]
            n_train_files = n_val_files = 1
            split_rule = "single file: its last val_fraction of bytes is validation"
        else:
            is_val = _validation_flags([key for key, _ in files], val_fraction)
            # The cap is shared out by val_fraction, so a small max_bytes still
            # leaves both splits their files (taking the first files in sorted
            # order would otherwise often take no validation file at all).
            val_files = [p for (_, p), v in zip(files, is_val) if v]
            train_files = [p for (_, p), v in zip(files, is_val) if not v]
            val_chunks, val_cut = _read_capped(val_files, math.ceil(max_bytes * val_fraction))
            val = b"".join(val_chunks)
            train_chunks, train_cut = _read_capped(train_files, max_bytes - len(val))
            # Each split is its files joined end to end: most stdlib files are
            # shorter than a window, and per-file windows would drop them.
            train = b"".join(train_chunks)
            truncated = val_cut or train_cut
            n_train_files, n_val_files = len(train_chunks), len(val_chunks)
            split_rule = "by file: sha256 of the relative path"
        if not train and not val:
            raise ValueError(
                f"bytes corpus is empty: the files matching {glob!r} under {where} are all empty"
            )

        span = seq_len + 1
        for split, data, n in (("training", train, n_train_files), ("validation", val, n_val_files)):
            if len(data) < span:
                raise ValueError(
                    f"bytes corpus: the {split} split has {len(data)} bytes from {n} file(s) under {where}, "
                    f"fewer than seq_len + 1 = {span}; add files, raise max_bytes, change val_fraction "
                    f"(now {val_fraction}) or use a shorter seq_len"
                )

        self._info = {
            "source": source,
            "roots": [str(r) for r in roots],
            "glob": glob,
            "max_bytes": max_bytes,
            "truncated": truncated,
            "val_fraction": val_fraction,
            "split": split_rule,
            "files": {"train": n_train_files, "val": n_val_files},
            "sha256": hashlib.sha256(train + b"\0" + val).hexdigest(),
        }
        self.token_bytes = torch.ones(256, dtype=torch.long)
        super().__init__(
            [np.frombuffer(train, dtype=np.uint8)],
            [np.frombuffer(val, dtype=np.uint8)],
            seq_len,
        )

    def details(self) -> dict:
        return {
            "bytes": {"train": self.train_tokens, "val": self.val_tokens},
            **self._info,
        }
