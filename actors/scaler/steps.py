"""What a step of scaling one MVE can fail with, and the smoke test, shared by
the agent and the agentic session's tools.

`run_smoke` runs a scaled folder's own check (`train.py --smoke`, or a
benchmark plan's `smoke_command`) in a child process that sees no secret and
no GPU, under a timeout, and returns what it printed; `smoke_test` is the
agent's step: StepFailed saying why, or nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from actors.shared.pricing import Usage
from actors.shared.sandbox import child_env
from actors.shared.stopping import run_child

TAIL_CHARS = 4000  # of a smoke test's output, for the LLM and the transcript


class StepFailed(RuntimeError):
    """A step of scaling one MVE failed; the message says which and why.
    `usage`: what the LLM billed on the way (a rejected plan is billed too).
    `transcript`: the agentic session's, when one ran."""

    def __init__(self, message: str, usage: Usage | None = None, transcript: list | None = None) -> None:
        super().__init__(message)
        self.usage = usage if usage is not None else Usage()
        self.transcript = transcript


@dataclass
class SmokeRun:
    ok: bool
    summary: str  # one line: what failed, or "passed"
    tail: str  # the end of stdout and stderr
    seconds: float


def smoke_command(folder: Path) -> list[str]:
    """The folder's smoke test: a benchmark plan's own command, else train.py --smoke."""
    plan = folder / "plan.json"
    if plan.is_file():
        try:
            command = json.loads(plan.read_text()).get("smoke_command")
        except ValueError:
            command = None
        if command:
            return [sys.executable, *command[1:]]
    return [sys.executable, "train.py", "--smoke"]


def run_smoke(folder: Path, timeout_s: float) -> SmokeRun:
    """Run the folder's smoke test in a child process with the sandbox's
    environment and no GPU; a timeout is a failure."""
    t0 = time.monotonic()
    try:
        proc = run_child(smoke_command(folder), cwd=folder, env=child_env(gpu=False), timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        return SmokeRun(False, f"smoke test timed out after {timeout_s:.0f}s", "", round(time.monotonic() - t0, 1))
    seconds = round(time.monotonic() - t0, 1)
    out, err = proc.stdout.strip(), proc.stderr.strip()
    tail = ((err + "\n" if err else "") + out)[-TAIL_CHARS:]
    if proc.returncode == 0:
        return SmokeRun(True, "passed", tail, seconds)
    last = (out.splitlines() or err.splitlines() or ["no output"])[-1]
    try:
        report = json.loads(last)
        failed = [f"{name} {check}" for name, check in report.get("checks", {}).items() if not check.get("ok")]
        last = "; ".join(failed) or report.get("error", last)
    except (ValueError, AttributeError):
        pass
    return SmokeRun(False, f"smoke test failed: {last[:500]}", tail, seconds)


def smoke_test(folder: Path, timeout_s: float) -> SmokeRun:
    """The agent's step: the smoke run, or StepFailed saying why it failed."""
    run = run_smoke(folder, timeout_s)
    if not run.ok:
        raise StepFailed(run.summary)
    return run
