"""Parse Parameter Golf ``train_gpt.py`` logs into a flat result dict.

Pure functions, no Ray. Robust to warnings, torchrun/NCCL noise, interleaved lines
from several ranks, prefixes (``[rank0]:``, timestamps), ANSI colour codes, ``nan``
values and a truncated last line.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["parse_log"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_NUM = r"([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf|infinity))"

_FINAL_EXACT = re.compile(
    r"final_int8_zlib_roundtrip_exact\s+val_loss:" + _NUM + r"\s+val_bpb:" + _NUM, re.I
)
_FINAL = re.compile(
    r"final_int8_zlib_roundtrip\s+val_loss:" + _NUM + r"\s+val_bpb:" + _NUM, re.I
)
_STEP = re.compile(r"(?<![\w])step:(\d+)/(\d+)\b")
_STEP_VAL = re.compile(
    r"(?<![\w])step:(\d+)/(\d+)\s+val_loss:" + _NUM + r"\s+val_bpb:" + _NUM, re.I
)
_TRAIN_LOSS = re.compile(r"\btrain_loss:" + _NUM, re.I)
_TOTAL = re.compile(r"Total submission size int8\+zlib:\s*(\d+)\s*bytes")
_MODEL = re.compile(r"Serialized model int8\+zlib:\s*(\d+)\s*bytes")
_PARAMS = re.compile(r"\bmodel_params:(\d+)")
_PEAK = re.compile(r"peak memory allocated:\s*(\d+)\s*MiB")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
# "ValueError: ...", "torch.OutOfMemoryError: ...", "RuntimeError" alone, etc.
_EXC_LINE = re.compile(r"^((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError", re.I)
_CHILD_FAILED = re.compile(r"ChildFailedError|exitcode\s*:\s*-?[1-9]")


def _float(s: str) -> float:
    return float(s)  # float() accepts nan/inf spellings case-insensitively


def _strip_prefix(line: str) -> str:
    """Drop everything before the first known token, e.g. ``[rank3]: `` or timestamps."""
    for tok in ("final_int8", "step:", "Traceback", "Total submission", "Serialized model",
                "model_params:", "peak memory"):
        i = line.find(tok)
        if i > 0:
            return line[i:]
    # "[rank0]: ValueError: x" / "[default0]:RuntimeError: y"
    return re.sub(r"^(?:\[[^\]]*\]:?\s*|\S+:\d+:\s+)+", "", line).strip()


def parse_log(text: str) -> dict[str, Any]:
    """Return the key numbers of a Parameter Golf run log (see module docstring).

    val_bpb/val_loss: the final round-trip value, preferring the ``_exact`` line, then
    the rounded line, then the last ``step:`` validation; None when none is present
    or the value is not finite (nan/inf).
    crashed: a traceback, an OOM, a non-finite loss, or no final round-trip line.
    """
    text = _ANSI.sub("", text or "").replace("\r\n", "\n").replace("\r", "\n")
    exact = rounded = last_step_val = None
    artifact = model_bytes = params = peak = None
    steps = total_steps = None
    nan_seen = traceback = oom = child_failed = False
    error = None

    for raw in text.split("\n"):
        line = _strip_prefix(raw.strip())
        if not line:
            continue
        if m := _FINAL_EXACT.search(line):
            exact = (_float(m.group(1)), _float(m.group(2)))
        elif m := _FINAL.search(line):
            rounded = (_float(m.group(1)), _float(m.group(2)))
        if m := _STEP_VAL.search(line):
            last_step_val = (_float(m.group(3)), _float(m.group(4)))
        if m := _STEP.search(line):
            s, t = int(m.group(1)), int(m.group(2))
            if steps is None or s >= steps:
                steps, total_steps = s, t
        if m := _TRAIN_LOSS.search(line):
            if not math.isfinite(_float(m.group(1))):
                nan_seen = True
        if m := _TOTAL.search(line):
            artifact = int(m.group(1))
        if m := _MODEL.search(line):
            model_bytes = int(m.group(1))
        if m := _PARAMS.search(line):
            params = int(m.group(1))
        if m := _PEAK.search(line):
            peak = int(m.group(1))
        if _TRACEBACK.search(line):
            traceback = True
        if _OOM.search(line):
            oom = True
            error = error or line
        if _CHILD_FAILED.search(line):
            child_failed = True
        if m := _EXC_LINE.match(line):
            error = line

    for pair in (exact, rounded, last_step_val):
        if pair is not None and not all(math.isfinite(v) for v in pair):
            nan_seen = True
    final = exact or rounded
    best = final or last_step_val
    val_loss, val_bpb = best if best is not None else (None, None)
    # non-finite numbers are reported as None (and the run as crashed): JSON-safe and
    # never mistaken for a score by a comparison
    val_loss = val_loss if val_loss is not None and math.isfinite(val_loss) else None
    val_bpb = val_bpb if val_bpb is not None and math.isfinite(val_bpb) else None
    crashed = bool(traceback or oom or nan_seen or child_failed or final is None)
    if crashed and error is None:
        if nan_seen:
            error = "non-finite loss (nan/inf)"
        elif final is None:
            error = "no final_int8_zlib_roundtrip line (run incomplete)"
    if not crashed:
        error = None
    return {
        "val_bpb": val_bpb,
        "val_loss": val_loss,
        "artifact_bytes": artifact,
        "model_bytes": model_bytes,
        "model_params": params,
        "peak_memory_mib": peak,
        "steps": steps,
        "total_steps": total_steps,
        "crashed": crashed,
        "error": error,
    }
