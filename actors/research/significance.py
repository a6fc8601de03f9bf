"""Keeps you can trust: the seed-to-seed noise and the test that decides a keep.

The noise is measured, not assumed: every commit run with several seeds gives a
sample of the run-to-run spread (on CPU, identical reruns are identical and say
nothing, so the seeds differ). The spread of all such groups is pooled (one
standard deviation, with its degrees of freedom), as a one-way analysis of
variance does: more seeded runs anywhere make every comparison sharper.

A candidate is compared with the best by a one-sided t-test on the difference
of the means, H0: it does not beat the best by more than `min_gain`:

    t = (mean(best) - mean(candidate) - min_gain) / (sd * sqrt(1/n_c + 1/n_b)),   p = P(T_df > t)

It is kept when p < alpha (default 0.05; Parameter Golf's records ask 0.01 and
a gain of at least 0.005). A candidate that does not improve at all is discarded
at once; one with a gain too small to decide gets extra seeds (on itself, or on
the best when the best has fewer) until p < alpha or `max_seeds` runs of it
leave the gain unproven.

Pure functions; the distribution is scipy's.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Literal


@dataclass(frozen=True)
class Noise:
    sd: float  # pooled seed-to-seed standard deviation of val_bpb
    df: int  # its degrees of freedom: sum over groups of (runs - 1)

    def __str__(self) -> str:
        return f"sd {self.sd:.4f} ({self.df} df)"


def pooled_noise(groups: Iterable[list[float]]) -> Noise | None:
    """The pooled standard deviation of groups of repeated runs (groups of one add nothing);
    None when no group has two runs."""
    ss, df = 0.0, 0
    for values in groups:
        if len(values) >= 2:
            m = statistics.fmean(values)
            ss += sum((v - m) ** 2 for v in values)
            df += len(values) - 1
    if df == 0:
        return None
    return Noise(math.sqrt(ss / df), df)


def p_value(candidate: list[float], best: list[float], noise: Noise, min_gain: float = 0.0) -> float:
    """One-sided p-value of 'the candidate beats the best by more than min_gain'."""
    from scipy import stats

    gain = statistics.fmean(best) - statistics.fmean(candidate) - min_gain
    se = noise.sd * math.sqrt(1 / len(candidate) + 1 / len(best))
    if se == 0.0:  # identical reruns: the comparison is exact
        return 0.0 if gain > 0 else 1.0
    return float(stats.t.sf(gain / se, noise.df))


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing a candidate with the best so far."""

    status: Literal["keep", "discard", "more"]  # more: run another seed of `more_of`
    why: str
    gain: float
    p: float | None
    more_of: Literal["candidate", "best"] | None = None


def compare(candidate: list[float], best: list[float], noise: Noise | None, *, alpha: float = 0.05,
            min_gain: float = 0.0, max_seeds: int = 5, simplification: bool = False) -> Comparison:
    """Keep, discard, or ask for one more seed. `candidate` and `best` are the
    val_bpb of their seeded runs; `noise` the pooled noise (None: not measured yet)."""
    mc, mb = statistics.fmean(candidate), statistics.fmean(best)
    gain = mb - mc
    runs = f"{len(candidate)} run(s) against {len(best)}"
    if noise is None:
        raise ValueError("no noise estimate: run the baseline with at least two seeds first")
    p = p_value(candidate, best, noise, min_gain)
    if simplification and gain >= -noise.sd:
        return Comparison("keep", f"a simplification within the noise: val_bpb {mc:.4f} against the best "
                          f"{mb:.4f} (noise {noise})", gain, p)
    if gain <= 0:
        return Comparison("discard", f"val_bpb {mc:.4f} does not beat the best {mb:.4f} ({runs})", gain, p)
    if p < alpha:
        return Comparison("keep", f"val_bpb {mc:.4f} beats the best {mb:.4f} by {gain:.4f}"
                          + (f" (more than the {min_gain:g} asked)" if min_gain else "")
                          + f": p = {p:.3g} < {alpha:g} over {runs}, noise {noise}", gain, p)
    if len(candidate) >= max_seeds:
        return Comparison("discard", f"a gain of {gain:.4f} that {max_seeds} seeds did not make significant: "
                          f"p = {p:.3g} >= {alpha:g} ({runs}, noise {noise})", gain, p)
    more = "best" if len(best) < len(candidate) else "candidate"
    return Comparison("more", f"a small gain of {gain:.4f}: p = {p:.3g} >= {alpha:g} over {runs}; "
                      f"one more seed of the {more}", gain, p, more)
