"""What the scaling-law fits share: the fit result's JSON, bootstrap
intervals, R^2, input checks, and single-threaded BLAS for the optimisers."""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from analysis.files import atomic_write_text, nan_to_none

Interval = tuple[float, float]


class FitError(ValueError):
    """The data cannot be fitted (too few points, non-positive values, ...)."""




def _loaded_openblas() -> list[tuple[Any, Any]]:
    """(get_num_threads, set_num_threads) of every OpenBLAS loaded in this process
    (numpy's and scipy's wheels each bring one, with suffixed symbol names). Linux
    only; elsewhere []."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return found
    for path in sorted(p for p in paths if p.startswith("/")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for base in ("scipy_openblas", "openblas"):
            for suffix in ("", "64_"):
                get, set_ = f"{base}_get_num_threads{suffix}", f"{base}_set_num_threads{suffix}"
                if hasattr(lib, get) and hasattr(lib, set_):
                    found.append((getattr(lib, get), getattr(lib, set_)))
                    break
            else:
                continue
            break
    return found


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run OpenBLAS on one thread inside the block. L-BFGS-B makes thousands of
    BLAS calls on 5-vectors; with OpenBLAS's default thread pool these spin and,
    on a busy machine, cost 10-30x more CPU than the fit itself. Best effort: a
    no-op where no OpenBLAS can be found."""
    saved = []
    for get, set_ in _loaded_openblas():
        n = int(get())
        set_(1)
        saved.append((set_, n))
    try:
        yield
    finally:
        for set_, n in saved:
            set_(n)


def as_positive(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise FitError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise FitError(f"{name} holds a non-finite value (NaN or inf)")
    if np.any(arr <= 0):
        raise FitError(f"{name} must be positive for a fit in log space; smallest value is {arr.min():g}")
    return arr


def percentile_intervals(samples: np.ndarray, names: Sequence[str], confidence: float) -> dict[str, Interval | None]:
    if samples.shape[0] < 2:
        return {n: None for n in names}
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    q = np.percentile(samples, [lo, hi], axis=0)
    return {n: (float(q[0, i]), float(q[1, i])) for i, n in enumerate(names)}


def r2_score(observed: np.ndarray, predicted: np.ndarray) -> float:
    ss_tot = float(np.sum((observed - observed.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((observed - predicted) ** 2)) / ss_tot


def check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise FitError(f"confidence must be in (0, 1), got {confidence}")


class FitResult(BaseModel):
    """A fit's numbers, its intervals, and its JSON form."""

    model_config = ConfigDict(frozen=True)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """The fit as JSON (NaN written as null); also written to `path` when given."""
        text = json.dumps(nan_to_none(self.to_dict()), indent=indent)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    def covers(self, **truth: float) -> bool:
        """True when every given parameter's interval contains the given value."""
        for name, value in truth.items():
            iv = self.intervals.get(name)
            if iv is None or not iv[0] <= value <= iv[1]:
                return False
        return True

    @classmethod
    def from_json(cls, text_or_path: str | Path):
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.model_validate(json.loads(text))
