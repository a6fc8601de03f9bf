"""Read a training run's log: its final score, what else it reports, and whether it crashed.

Pure functions, no Ray. The line patterns live in `actors.research.loglines`.

The score is what the run reports last: by default the last `val_bpb` printed on a
line that is not training progress (`step:...`), preferring a full-precision line to
its rounded twin printed just before or after it (``final_int8_zlib_roundtrip`` and
``final_int8_zlib_roundtrip_exact``). A repository whose script prints several scores
pins the line with a regular expression (`metric`, from ``--metric``, ``program.md`` or
``autoresearch.toml``).

A crash is a crash: no final score, a non-finite score or training loss, a traceback
or CUDA error after the score line, a timeout, or a last line cut off (a log without
its final newline: the process died while writing it, perhaps mid-number). The one
unterminated last line taken whole is an exact score its rounded twin just before
confirms. A crash has no `val_bpb`; what the run had reached is in `last_val_bpb`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from actors.research.loglines import (
    ANSI,
    Facts,
    Score,
    clean,
    crash_marker,
    default_score,
    is_exception_line,
    is_timeout,
    most_telling,
    pinned_score,
)

__all__ = ["parse_log", "compile_metric", "MetricError"]

_TWIN_WINDOW = 3  # a rounded score's exact twin is among the few score lines before it
_IGNORED_BLOCK_LINES = 40  # an "Exception ignored in" block is a short traceback


class MetricError(ValueError):
    """A `--metric` that is not a regular expression."""


def compile_metric(metric: str | re.Pattern | None) -> re.Pattern | None:
    if metric is None or isinstance(metric, re.Pattern):
        return metric
    if not metric.strip():
        return None
    try:
        return re.compile(metric)
    except re.error as exc:
        raise MetricError(f"metric {metric!r} is not a regular expression: {exc}") from None


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _exact_twin(final: Score, scores: list[Score]) -> Score:
    """A more precise line printing the same score (same name without "exact", or the
    line right before) replaces a rounded final line."""
    best = final
    earlier = [s for s in scores if s.line_no < final.line_no][-_TWIN_WINDOW:]
    for i, s in enumerate(reversed(earlier)):
        if s.decimals <= best.decimals or not (s.label == final.label or i == 0):
            continue
        if _finite(s.value) and _finite(final.value) and \
                abs(s.value - final.value) <= 0.5 * 10 ** -final.decimals + 1e-12:
            best = s
    return best


def _confirms(cut: Score, scores: list[Score]) -> bool:
    """Whether a last line without its newline is whole: only when a rounded twin
    printed just before it agrees with it and it carries more digits (a number cut
    mid-way, `val_bpb:1.2` of `1.2146`, never does)."""
    for s in scores[-_TWIN_WINDOW:]:
        if (s.label == cut.label or s is scores[-1]) and cut.decimals > s.decimals and _finite(s.value) \
                and _finite(cut.value) and abs(cut.value - s.value) <= 0.5 * 10 ** -s.decimals + 1e-12:
            return True
    return False


def parse_log(text: str, metric: str | re.Pattern | None = None) -> dict[str, Any]:
    """The key numbers of a run log (see the module docstring). Keys:

    val_bpb, val_loss: the final score and the loss on its line; None for a crash.
    metric_line, metric_line_no: the line the score was read from (for a crash after
        the score, that score line); None when there is none.
    last_val_bpb: the last finite value of the metric on any complete line, training
        progress included: what a crashed run had reached. Never the result.
    artifact_bytes, model_bytes, code_bytes, model_params, peak_memory_mib,
    training_seconds, steps, total_steps: as the log prints them, else None.
    crashed, timed_out, error.
    """
    pattern = compile_metric(metric)
    text = (text or "").replace("\r\n", "\n")
    lines = text.split("\n")
    partial = lines.pop()  # "" when the log ends with its newline; else the cut last line
    facts = Facts()
    scores: list[Score] = []
    last_value: float | None = None
    markers: list[tuple[int, str]] = []  # (line number, line) of tracebacks and errors
    timeout = None
    ignoring = 0  # lines left in an "Exception ignored in" block

    for no, physical in enumerate(lines, 1):
        # karpathy/autoresearch rewrites its progress line with "\r": each part is a line
        for part in physical.split("\r"):
            if is_timeout(part):
                timeout = timeout or ANSI.sub("", part).strip()
            line = clean(part)
            if not line:
                continue
            score, progress = pinned_score(pattern, line, no) if pattern else default_score(line, no)
            if score is not None:
                if _finite(score.value):
                    last_value = score.value
                if not progress:
                    scores.append(score)
                    ignoring = 0
            facts.read(line, progress)
            if line.startswith("Exception ignored in"):
                ignoring = _IGNORED_BLOCK_LINES
            elif ignoring:
                # the block ends with its exception line; nothing in it is a crash
                ignoring = 0 if is_exception_line(line) and not line.startswith("Traceback") else ignoring - 1
            elif crash_marker(line):
                markers.append((no, line))

    cut = partial.strip()
    if cut:
        cut_score, progress = (pinned_score(pattern, clean(cut), len(lines) + 1) if pattern
                               else default_score(clean(cut), len(lines) + 1))
        if cut_score is not None and not progress and _confirms(cut_score, scores):
            scores.append(cut_score)  # the exact twin of the rounded line before it: whole
            last_value, cut = cut_score.value, ""

    final = _exact_twin(scores[-1], scores) if scores else None
    after = [(no, line) for no, line in markers if final is None or no > final.line_no]
    error = None
    if timeout:
        error = f"timed out: {timeout}"
    elif cut:
        error = f"the log ends mid-line (the run was cut off): {cut[-120:]!r}"
    elif final is not None and after:
        error = f"failed after the score line ({_failure(after)})"
    elif final is None:
        what = f"no line matches the metric {pattern.pattern!r}" if pattern else "no final val_bpb line"
        error = f"{what} (run incomplete)" + (f": {_failure(after)}" if after else "")
    elif not _finite(final.value):
        error = f"the final score is not a number ({final.text})"
    elif facts.nonfinite_loss:
        error = "non-finite training loss (nan/inf)"
    crashed = error is not None

    return {
        "val_bpb": None if crashed else final.value,
        "val_loss": None if crashed or not _finite(final.loss) else final.loss,
        "metric_line": final.line if final else None,
        "metric_line_no": final.line_no if final else None,
        "last_val_bpb": last_value,
        "artifact_bytes": facts.artifact_bytes,
        "model_bytes": facts.model_bytes,
        "code_bytes": facts.code_bytes,
        "model_params": facts.model_params,
        "peak_memory_mib": facts.peak_memory_mib,
        "training_seconds": facts.training_seconds if facts.training_seconds is not None else facts.train_time_s,
        "steps": facts.steps,
        "total_steps": facts.total_steps,
        "crashed": crashed,
        "timed_out": timeout is not None,
        "error": error,
    }


def _failure(markers: list[tuple[int, str]]) -> str:
    """Where and what the failure is, told by its most telling line."""
    no, line = markers[most_telling([line for _, line in markers])]
    return f"line {no}: {line[:200]}"
