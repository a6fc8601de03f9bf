"""Atomic file writes, for every layer of the project.

A reader (a person, a resumed run, the report page) sees the old file or the
new one, never half of one: the text is written to a hidden temporary file
beside the target, flushed to disk, then renamed over it.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name per writer, so two processes writing the same file never share a temporary.
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps) -> Path:
    """`data` as indented JSON; values JSON cannot hold are written with `str` unless `default` is given."""
    dumps.setdefault("indent", 2)
    dumps.setdefault("default", str)
    return atomic_write_text(path, json.dumps(data, **dumps) + "\n")


def nan_to_none(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, inf) as None, in nested dicts,
    lists and tuples: JSON has no NaN, and a reader should see null, not an
    invalid token."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj
