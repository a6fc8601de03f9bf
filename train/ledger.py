"""The experiments ledger: one markdown entry per run in ``experiments/EXPERIMENTS.md``.

Research groups keep this file by hand; runs append to it too, so an entry must
read like a hand-written one (headings, tables, a command that reproduces the
run) and two runs finishing at once must never interleave their entries.
Each entry is rendered in full first, then appended with one write while an
exclusive ``fcntl.flock`` is held on the file. flock is advisory and local: it
serialises every writer that goes through ``append_entry`` on one machine (the
head node, where ``experiments/`` lives), not an editor saving the file.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

LEDGER_TITLE = "# Experiments"
SECTIONS = ("Configuration", "GPU allocation", "Results", "Observations", "Artifacts", "Command")
REDACTED = "[REDACTED]"

# Secrets must never reach a ledger (DESIGN.md). Config keys that name one are
# blanked, and the live values of these variables are scrubbed from the whole entry.
_SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|access_token|auth_token|bearer)$", re.I)
_SECRET_ENV = re.compile(r"(API_KEY|_SECRET|_TOKEN|PASSWORD)$")
_MIN_SECRET_LEN = 8  # shorter values would scrub ordinary text


@dataclass
class LedgerEntry:
    title: str                      # e.g. "008_scaled: GPT 25M on WikiText-103"
    config: dict                    # nested keys are shown dotted: optim.lr
    gpu_allocation: list[dict]      # rows with keys node, gpu_ids, role; empty means CPU only
    results: dict                   # steps, tokens_per_s, val_loss, cost_usd, stop_reason...
    observations: list[str]
    artifacts: dict                 # name -> path or URL
    command: str                    # reproduces the run
    timestamp: float | None = field(default=None)  # seconds since the epoch; None means now


# ---------------------------------------------------------------- rendering

def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"  # six significant digits: enough for a loss, short for a table
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, Mapping) and not value:
        return "{}"
    return str(value)


def _cell(value: object) -> str:
    # A bare '|' ends the cell and a newline ends the table.
    text = _fmt(value).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _config_rows(config: Mapping) -> list[list[object]]:
    rows = []
    for key, value in _flatten(config):
        last = key.rsplit(".", 1)[-1]
        rows.append([key, REDACTED if _SECRET_KEY.search(last) and value else value])
    return rows


def _gpu_rows(gpu_allocation: list[dict]) -> tuple[list[str], list[list[object]]]:
    header = ["node", "gpu_ids", "role"]
    if not gpu_allocation:
        return header, [["local", "none", "CPU only"]]
    for i, row in enumerate(gpu_allocation):
        missing = [k for k in header if k not in row]
        if missing:
            raise ValueError(f"gpu_allocation[{i}] lacks {', '.join(missing)}; each row needs node, gpu_ids, role")
    for row in gpu_allocation:  # extra keys (e.g. gpu_type) become extra columns
        header += [k for k in row if k not in header]
    return header, [[row.get(k) for k in header] for row in gpu_allocation]


def _artifact_line(name: str, target: object) -> str:
    text = _fmt(target)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text) or "`" in text:
        return f"- {name}: {text}"
    return f"- {name}: `{text}`"


def _fence(command: str) -> str:
    # A fence longer than any backtick run inside the command cannot be closed early.
    longest = max((len(m) for m in re.findall(r"`+", command)), default=0)
    return "`" * max(3, longest + 1)


def _iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _scrub_secrets(text: str) -> str:
    for name, value in os.environ.items():
        if _SECRET_ENV.search(name) and len(value) >= _MIN_SECRET_LEN and value in text:
            text = text.replace(value, REDACTED)
    return text


def render_entry(entry: LedgerEntry) -> str:
    """The markdown of one entry: a '## title (time)' heading and six '###' sections."""
    title = " ".join(str(entry.title).split())  # a newline would split the heading
    if not title:
        raise ValueError("LedgerEntry.title is empty; name the run, e.g. '008_scaled: GPT 25M on WikiText-103'")
    ts = time.time() if entry.timestamp is None else float(entry.timestamp)
    command = (entry.command or "").strip("\n") or "# command not recorded"
    fence = _fence(command)

    lines = [f"## {title} ({_iso_utc(ts)})", ""]
    lines += ["### Configuration", ""]
    lines += _table(["key", "value"], _config_rows(entry.config) or [["(none)", ""]]) + [""]
    lines += ["### GPU allocation", ""]
    lines += _table(*_gpu_rows(entry.gpu_allocation)) + [""]
    lines += ["### Results", ""]
    lines += _table(["metric", "value"], [list(r) for r in _flatten(entry.results)] or [["(none)", ""]]) + [""]
    lines += ["### Observations", ""]
    lines += [f"- {' '.join(str(o).split())}" for o in entry.observations] or ["- (none)"]
    lines += ["", "### Artifacts", ""]
    lines += [_artifact_line(str(k), v) for k, v in entry.artifacts.items()] or ["- (none)"]
    lines += ["", "### Command", "", f"{fence}bash", command, fence, ""]
    return _scrub_secrets("\n".join(lines))


# ---------------------------------------------------------------- appending

def append_entry(path: str | Path, entry: LedgerEntry) -> str:
    """Append one entry to the ledger at ``path`` and return exactly the text appended.

    The file (and its folder) is created with the title line if missing. The whole
    text goes out in one write under an exclusive flock, so concurrent runs append
    whole entries one after another.
    """
    body = render_entry(entry)  # render before locking: a bad entry raises with the file untouched
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # Size and tail are read under the lock: another writer may have just
            # created the file or added an entry.
            size = os.fstat(fd).st_size
            if size == 0:
                text = f"{LEDGER_TITLE}\n\n{body}"
            else:
                tail = os.pread(fd, 2, max(0, size - 2))
                sep = "" if tail.endswith(b"\n\n") else ("\n" if tail.endswith(b"\n") else "\n\n")
                text = sep + body
            data = text.encode("utf-8")
            written = 0
            while written < len(data):  # os.write may write less than asked
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return text


# ---------------------------------------------------------------- observations

def _num(row: Mapping, key: str, index: int) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"history[{index}] (step {row.get('step')}): {key}={value!r} is not a number") from None


def _g(x: float) -> str:
    return f"{x:.4g}"


def observe(history: list[dict], *, collapse_ratio: float = 0.5) -> list[str]:
    """Checks a run makes about itself.

    ``history`` holds one dict per logged step, in logged order, with ``step`` and
    ``train_loss`` and optionally ``val_loss`` and ``tokens_per_s`` (a loss may be
    missing or None on a row, e.g. an eval-only row). Returns human-readable
    findings: 'loss exactly constant', 'loss is exactly 0.0', 'NaN/inf loss at step
    N', 'no improvement: final val_loss X >= first Y' (train loss when no val loss
    was logged), 'throughput collapse: tokens/s fell from A to B' (median of the
    last quarter below ``collapse_ratio`` times the median of the first quarter,
    the first logged step skipped as warm-up, at least 4 samples). Returns
    ``['no anomalies']`` when none.
    """
    if not 0 < collapse_ratio < 1:
        raise ValueError(f"collapse_ratio must be between 0 and 1, got {collapse_ratio}")
    if not history:
        return ["no steps logged"]

    series: dict[str, list[tuple[object, float]]] = {"train_loss": [], "val_loss": [], "tokens_per_s": []}
    for i, row in enumerate(history):
        if "step" not in row:
            raise ValueError(f"history[{i}] has no 'step'; each logged row needs step and train_loss")
        for key in series:
            x = _num(row, key, i)
            if x is not None:
                series[key].append((row["step"], x))

    findings: list[str] = []
    # Every logged loss in logged order, so "at step N" names the first occurrence.
    losses = [(row["step"], k, float(row[k])) for row in history for k in ("train_loss", "val_loss")
              if row.get(k) is not None]

    bad = [(s, k, x) for s, k, x in losses if not math.isfinite(x)]
    if bad:
        # The earliest one is the finding; later NaNs are usually its consequence.
        step, key, x = bad[0]
        more = f"; {len(bad)} non-finite values in all" if len(bad) > 1 else ""
        findings.append(f"NaN/inf loss at step {step} ({key}={x}{more})")

    train = [x for _, x in series["train_loss"] if math.isfinite(x)]
    if len(train) >= 2 and len(set(train)) == 1:
        findings.append(f"loss exactly constant: train_loss = {train[0]!r} at all {len(train)} logged steps")

    zeros = [(s, k) for s, k, x in losses if x == 0.0]
    if zeros:
        findings.append(f"loss is exactly 0.0 at step {zeros[0][0]} ({zeros[0][1]})")

    val = [x for _, x in series["val_loss"] if math.isfinite(x)]
    key, tracked = ("val_loss", val) if len(val) >= 2 else ("train_loss", train)
    if len(tracked) >= 2 and tracked[-1] >= tracked[0]:
        findings.append(f"no improvement: final {key} {_g(tracked[-1])} >= first {_g(tracked[0])}")

    # The first logged step pays for compilation and warm-up; it is not throughput.
    tps = [x for i, row in enumerate(history[1:], start=1)
           if (x := _num(row, "tokens_per_s", i)) is not None and math.isfinite(x)]
    if len(tps) >= 4:
        quarter = len(tps) // 4
        early, late = median(tps[:quarter]), median(tps[-quarter:])
        if late < collapse_ratio * early:
            findings.append(f"throughput collapse: tokens/s fell from {_g(early)} to {_g(late)}")

    return findings or ["no anomalies"]
