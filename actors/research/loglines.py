"""What one line of a training log says: the line patterns behind `logparse`, no state.

The formats read here, as training scripts print them:

- Parameter Golf (openai/parameter-golf): progress ``step:200/20000 val_loss:2.65 val_bpb:1.569 ...``
  or ``4000/20000 val_loss: 2.43 val_bpb: 1.11``; scores on lines named by the script
  (``final_int8_zlib_roundtrip_exact``, ``final_int6_sliding_window_exact``,
  ``quantized_ttt_phased``, ``ttt_sliding:done val_loss=... val_bpb=...``), usually a
  rounded line and its full-precision ``_exact`` twin; sizes as ``Total submission size
  <codec>: N bytes`` and ``Serialized model <codec>: N bytes``; ``model_params:N``;
  ``peak memory allocated: N MiB``.
- karpathy/autoresearch: ``\\rstep 00953 (100.0%) | loss: ...`` progress, then a summary
  block after ``---``: ``val_bpb:          0.997900``, ``training_seconds:``,
  ``peak_vram_mb:``, ``num_steps:``, ``num_params_M:``.
- around them: torchrun/NCCL/glog noise, ``[rank3]:`` and timestamp prefixes, Ray's
  ``(pid=...)`` prefixes, ANSI colours, Python warnings and tracebacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# CSI sequences (colours, cursor moves) and OSC sequences (terminal titles, links).
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")

# A number as scripts print it, nan/inf included (float() reads all of these).
NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)(?![A-Za-z0-9_])"

# Whatever a launcher or a logger puts before the script's own text, repeated:
# [rank0]:  [default3]:  (RayTrainWorker pid=12, ip=1.2.3.4)  2026-03-18 10:00:01,123
# W0318 10:00:01.123000 1234 run.py:793]  INFO:root:  rank 3:
_PREFIX = re.compile(r"""^(?:
    \[[^\]]{0,80}\]:?\s*
  | \([^)]{0,120}\bpid=[^)]{0,120}\)\s*
  | (?:local_)?rank\s*\d+\s*[:|>]\s*
  | \d{4}-\d\d-\d\d[T\s]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s*(?:[-|:]\s*)?
  | \d\d:\d\d:\d\d(?:[.,]\d+)?\s+(?:[-|]\s*)?
  | [IWEF]\d{4}\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]\s*
  | (?:INFO|WARNING|WARN|ERROR|DEBUG|CRITICAL)(?::[\w.]*:|\s*[:|-]|\s)\s*
)+""", re.X)

# The metric key: `val_bpb` itself or a key ending in it (`post_ttt_val_bpb`), followed
# by `:`, `: ` (aligned summary blocks), `=` (key=value logs) or `":` (JSON). A space
# before `=` is Python source (logs of Parameter Golf start with the script's code).
_BPB = re.compile(r"(?<![A-Za-z0-9])(?:[A-Za-z0-9]+_)*val_bpb\"?(?::\s*|=)(" + NUM + ")", re.I)
_LOSS = re.compile(r"(?<![A-Za-z0-9])(?:[A-Za-z0-9]+_)*val_loss\"?(?::\s*|=)(" + NUM + ")", re.I)
_KEY = re.compile(r"(?<![A-Za-z0-9])(?:[A-Za-z0-9]+_)*val_(?:bpb|loss)\b", re.I)

# Training progress: a step counter before the metric (`step:200/20000`, `step 00953`,
# `4000/20000 val_loss: ...`, `epoch 3`). Its values are intermediate, never the result.
_COUNTER_AT_START = re.compile(r"^(?:(?:step|iter(?:ation)?|epoch)\s*[:=#]?\s*)?\d+\s*/\s*\d+(?![\d/])", re.I)
_STEP_WORD = re.compile(r"(?<![A-Za-z0-9_])(?:step|iter(?:ation)?|epoch)\s*[:=#]?\s*\d+", re.I)
_STEP_COUNT = re.compile(r"(?<![A-Za-z0-9_])step[:\s]\s*(\d+)(?:/(\d+))?|^(\d+)/(\d+)\s+(?:train|val)_loss", re.I)
_NUM_STEPS = re.compile(r"(?<![A-Za-z0-9_])num_steps\s*[:=]\s*(\d+)", re.I)
_TRAIN_LOSS = re.compile(r"(?<![A-Za-z0-9_])(?:train_)?loss\s*[:=]\s*(" + NUM + ")", re.I)

# "Total submission size int6+zstd: N bytes"; the bare "Total submission size: N bytes"
# of the baseline is the uncompressed total, so a line naming its codec wins.
_TOTAL = re.compile(r"Total submission(?: size)?(?P<codec>[^:\n]*?)\s*:\s*(\d[\d,_]*)\s*bytes", re.I)
_ARTIFACT_KEY = re.compile(r"(?<![A-Za-z0-9_])(?:artifact|submission)_(?:size_)?bytes\s*[:=]\s*(\d[\d,_]*)", re.I)
_MODEL = re.compile(r"Serialized model(?P<codec>[^:\n]*?)\s*:\s*(\d[\d,_]*)\s*bytes", re.I)
_CODE = re.compile(r"Code size(?P<codec>[^:\n]*?)\s*:\s*(\d[\d,_]*)\s*bytes", re.I)
_PARAMS = re.compile(r"(?<![A-Za-z0-9_])(?:model|num|n|total)_params\s*[:=]\s*(\d[\d,_]*)(?![\d.])", re.I)
_PARAMS_M = re.compile(r"(?<![A-Za-z0-9_])(?:num|model|n)_params_M\s*[:=]\s*(" + NUM + ")", re.I)
_PEAK = re.compile(r"peak memory allocated:\s*(" + NUM + r")\s*(MiB|MB|GiB|GB)"
                   r"|(?<![A-Za-z0-9_])peak_(?:vram|mem|memory)(?:_(mib|mb|gib|gb))?\s*[:=]\s*(" + NUM + ")", re.I)
_TRAINING_SECONDS = re.compile(r"(?<![A-Za-z0-9_])training_seconds\s*[:=]\s*(" + NUM + ")", re.I)
_TRAIN_TIME = re.compile(r"(?<![A-Za-z0-9_])train_time\s*[:=]\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min)?(?![A-Za-z])", re.I)

# What ends a run abnormally. Counted only after the score line: the same words earlier
# (a caught exception, a retried step) did not stop the run.
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
_HARD_ERROR = re.compile(
    r"CUDA error|CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_\w+|cuDNN error|NCCL error|"
    r"illegal memory access|device-side assert|ChildFailedError|Segmentation fault|core dumped|"
    r"Watchdog caught collective operation timeout|failed \(exitcode: -?[1-9]|^Killed$|^Aborted\b")
_EXCEPTION = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit))(?::\s*(.*))?$")
# A timeout anywhere means the run was killed: the runner's own marker, Slurm's.
_TIMEOUT = re.compile(r"\[autoresearch\] (?:killed after|the run did not finish)|DUE TO TIME LIMIT")
# The lines that name a failure best, first: the CUDA/NCCL/OOM error itself, then an
# exception that ends a traceback; torchrun's ChildFailedError only says a rank died.
_TELLING = (re.compile(r"CUDA|out of memory|OutOfMemory|NCCL error|illegal memory|device-side|Segmentation"),
            re.compile(r"^(?!.*ChildFailedError)" + _EXCEPTION.pattern[1:]))


def clean(line: str) -> str:
    """The line without colour codes, launcher/logger prefixes and outer blanks."""
    line = ANSI.sub("", line).strip()
    m = _PREFIX.match(line)
    return line[m.end():].strip() if m else line


def decimals(text: str) -> int:
    """Digits after the point, as printed: 4 for 1.2146, 8 for 1.21456789."""
    mant = re.split(r"[eE]", text)[0]
    return len(mant.split(".", 1)[1]) if "." in mant else 0


@dataclass(frozen=True)
class Score:
    """A score a line reports: its value as printed and where it is."""

    value: float
    text: str  # the number as printed
    loss: float | None
    label: str  # what the line calls it, without "exact": the key of its rounded/exact twin
    line: str
    line_no: int  # 1-based

    @property
    def decimals(self) -> int:
        return decimals(self.text)


def _label(line: str, start: int) -> str:
    label = re.sub(r"(?i)[_\s]?exact\b", "", line[:start])
    return " ".join(re.sub(r"[^A-Za-z0-9_]+", " ", label).lower().split())


def is_progress(line: str, key_at: int) -> bool:
    """A training-progress line: a step counter before the metric key."""
    return bool(_COUNTER_AT_START.match(line) or _STEP_WORD.search(line[:key_at]))


def default_score(line: str, line_no: int) -> tuple[Score | None, bool]:
    """The val_bpb this line reports, and whether the line is training progress."""
    m = _BPB.search(line)
    if not m:
        return None, False
    key = _KEY.search(line)
    key_at = key.start() if key else m.start()
    loss = _LOSS.search(line)
    score = Score(float(m.group(1)), m.group(1), float(loss.group(1)) if loss else None,
                  _label(line, key_at), line, line_no)
    return score, is_progress(line, key_at)


def pinned_score(pattern: re.Pattern, line: str, line_no: int) -> tuple[Score | None, bool]:
    """The score of a line the `--metric` pattern matches: its group `value` (or its
    first group) when it has one, else the line's val_bpb, else the first number after
    the match; None when the line does not match or holds no number there. And whether
    the line is training progress."""
    m = pattern.search(line)
    if not m:
        return None, False
    if "value" in pattern.groupindex:
        text = m.group("value")
    elif pattern.groups:
        text = m.group(1)
    else:
        bpb = _BPB.search(line, m.start())
        after = re.search(NUM, line[m.end():], re.I)
        text = bpb.group(1) if bpb else after.group(0) if after else None
    if text is None or not re.fullmatch(r"\s*(?:" + NUM + r")\s*", text, re.I):
        return None, False
    loss = _LOSS.search(line)
    score = Score(float(text), text.strip(), float(loss.group(1)) if loss else None,
                  _label(line, m.start()), line, line_no)
    return score, is_progress(line, m.start())


def _int(s: str) -> int:
    return int(s.replace(",", "").replace("_", ""))


@dataclass
class Facts:
    """What the log says besides its score; the last value printed wins."""

    artifact_bytes: int | None = None
    artifact_qualified: bool = False  # from a line that names its codec (not the raw total)
    model_bytes: int | None = None
    model_qualified: bool = False
    code_bytes: int | None = None
    model_params: int | None = None
    params_exact: bool = False
    peak_memory_mib: float | None = None
    training_seconds: float | None = None
    train_time_s: float | None = None
    steps: int | None = None
    total_steps: int | None = None
    nonfinite_loss: bool = False

    def read(self, line: str, progress: bool) -> None:
        for m in _TOTAL.finditer(line):
            qualified = bool(m.group("codec").strip())
            if qualified or not self.artifact_qualified:
                self.artifact_bytes, self.artifact_qualified = _int(m.group(2)), qualified
        if m := _ARTIFACT_KEY.search(line):
            self.artifact_bytes, self.artifact_qualified = _int(m.group(1)), True
        for m in _MODEL.finditer(line):
            qualified = bool(m.group("codec").strip())
            if qualified or not self.model_qualified:
                self.model_bytes, self.model_qualified = _int(m.group(2)), qualified
        if m := _CODE.search(line):
            # "Code size (uncompressed)" and "(compressed)": the submission counts the latter
            if "uncompressed" not in m.group("codec").lower() or self.code_bytes is None:
                self.code_bytes = _int(m.group(2))
        if m := _PARAMS.search(line):
            self.model_params, self.params_exact = _int(m.group(1)), True
        elif (m := _PARAMS_M.search(line)) and not self.params_exact:
            self.model_params = round(float(m.group(1)) * 1e6)
        if m := _PEAK.search(line):
            value, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3) or "mib")
            self.peak_memory_mib = float(value) * (1024.0 if unit.lower().startswith("g") else 1.0)
        if m := _TRAINING_SECONDS.search(line):
            self.training_seconds = float(m.group(1))
        if m := _TRAIN_TIME.search(line):
            unit = (m.group(2) or "s").lower()
            self.train_time_s = round(float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0}[unit], 3)
        if m := _STEP_COUNT.search(line):
            step, total = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            if self.steps is None or int(step) >= self.steps:
                self.steps = int(step)
                self.total_steps = int(total) if total else self.total_steps
        if m := _NUM_STEPS.search(line):
            self.steps = int(m.group(1))
        if progress or _STEP_WORD.search(line) or _COUNTER_AT_START.match(line):
            m = _TRAIN_LOSS.search(line)
            if m and not _finite(m.group(1)):
                self.nonfinite_loss = True


def _finite(text: str) -> bool:
    v = float(text)
    return v == v and v not in (float("inf"), float("-inf"))


def crash_marker(line: str) -> bool:
    """Whether this line says the run failed: a traceback, a CUDA/NCCL error, a dead
    rank, an exception."""
    return bool(_TRACEBACK.search(line) or _HARD_ERROR.search(line) or _EXCEPTION.match(line))


def is_exception_line(line: str) -> bool:
    return bool(_EXCEPTION.match(line) or _HARD_ERROR.search(line))


def is_timeout(raw_line: str) -> bool:
    """Whether the line (as written, prefixes kept) says the run was killed for time."""
    return bool(_TIMEOUT.search(raw_line))


def most_telling(lines: list[str]) -> int:
    """The index of the line that names a failure best (see _TELLING)."""
    for pattern in _TELLING:
        for i, line in enumerate(lines):
            if pattern.search(line):
                return i
    return 0
