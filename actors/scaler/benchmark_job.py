"""A kernel-benchmark MVE scaled as a benchmark job instead of a training job.

Its folder (`code/NNN_scaled/`: README.md, plan.json, scripts/run.sh and the
plan's files) is written by the same all-or-nothing writer as a training
experiment. Its job is the plan's command, run in that folder as a Ray task
that holds the plan's GPUs (so that nothing else is scheduled on them), in the
sandbox's environment (no secrets), killed after the plan's hours: the hard
limits (2 GPUs, 6 hours) hold as for training. The result is the JSON object
the command printed last or wrote to `results_file`. On a cluster without
GPUs the job is a rehearsal: the smoke command, on CPU.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from actors.scaler.plan import BenchmarkPlan
from actors.scaler.scaffold import write_folder
from actors.shared.sandbox import child_env
from actors.shared.stopping import POLL_S, Stopped, run_child, stop_requested

TAIL_CHARS = 4000


def _readme(plan: BenchmarkPlan, planner: str, mve_path: Path | None) -> str:
    criteria = "\n".join(f"- [ ] {c}" for c in plan.success_criteria)
    source = f"`{mve_path}`" if mve_path else f"MVE {plan.mve_id}"
    return f"""# {plan.name}: {plan.title}

Scaled from {source} by the {planner} planner on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},
as a benchmark job (it measures code; it trains no model).

## Why

{plan.rationale}

## Plan

| | |
|---|---|
| Command | `{shlex.join(plan.command)}` |
| Smoke test | `{shlex.join(plan.smoke_command)}` (CPU, no GPU) |
| GPUs | {plan.gpus} |
| Budget | {plan.hours:g} h wall clock (the job is stopped there) |
| Results | last JSON line of the output, or `{plan.results_file}` |

## Success criteria

{criteria}

## Run

```bash
bash scripts/run.sh              # the benchmark, on this machine's GPUs
```
"""


def write_benchmark_experiment(plan: BenchmarkPlan, code_dir: Path, planner: str, mve_path: Path | None = None,
                               extra_files: dict[str, str] | None = None) -> Path:
    run_sh = (f"#!/usr/bin/env bash\n# {plan.name}: {plan.title}\nset -euo pipefail\ncd \"$(dirname \"$0\")/..\"\n"
              f"{shlex.join(plan.command)} \"$@\"\n")
    generated = {"README.md": _readme(plan, planner, mve_path), "plan.json": plan.model_dump_json(indent=2),
                 "scripts/run.sh": run_sh}
    return write_folder(Path(code_dir), plan.name, generated, plan.files, extra_files, executables=("scripts/run.sh",),
                        mve_id=plan.mve_id, planner=planner)


def run_benchmark(folder: str, argv: list[str], results_file: str, timeout_s: float, gpu: bool) -> dict[str, Any]:
    """The command in `folder` (in a child process, the sandbox's environment,
    `timeout_s`): its exit status, wall time, output tail and results."""
    t0 = time.time()
    try:
        proc = run_child([sys.executable, *argv[1:]], cwd=folder, env=child_env(gpu=gpu), timeout_s=timeout_s)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        code, out, err = None, "", f"stopped at the {timeout_s / 3600:g} h limit"
    result: dict[str, Any] = {"returncode": code, "wall_s": round(time.time() - t0, 2),
                              "output_tail": (err.strip() + "\n" + out.strip()).strip()[-TAIL_CHARS:]}
    written = Path(folder) / results_file
    if written.is_file():
        try:
            result["metrics"] = json.loads(written.read_text())
        except ValueError:
            pass
    if "metrics" not in result:
        for line in reversed(out.strip().splitlines()):
            try:
                result["metrics"] = json.loads(line)
                break
            except ValueError:
                continue
    return result


def launch(plan: BenchmarkPlan, folder: Path, gpus_available: bool, lease) -> tuple[dict, str]:
    """Run the benchmark as a Ray task holding the plan's GPUs (or, without
    GPUs, the smoke command on CPU as a rehearsal): (result, mode). A stop
    request or a lost lease cancels the task."""
    import ray

    from actors.tracker.client import LeaseLost

    full = gpus_available or plan.gpus == 0
    argv = plan.command if full else plan.smoke_command
    mode = "full" if full else "laptop rehearsal (the smoke command on CPU: no GPU here)"
    timeout_s = plan.hours * 3600
    if not ray.is_initialized():
        return run_benchmark(str(folder), argv, plan.results_file, timeout_s, gpu=full), mode
    task = ray.remote(run_benchmark).options(num_gpus=plan.gpus if full else 0, num_cpus=1, max_retries=0,
                                             name=f"benchmark:{plan.name}")
    ref = task.remote(str(folder), argv, plan.results_file, timeout_s, full)
    while True:
        ready, _ = ray.wait([ref], timeout=POLL_S)
        if ready:
            return ray.get(ref), mode
        lost = lease.lost.is_set()
        if lost or stop_requested():
            # Not force: the task gets KeyboardInterrupt and run_child's cleanup
            # kills the benchmark's process group (a killed worker would orphan it).
            ray.cancel(ref)
            raise LeaseLost(f"lease on {lease.work_id} lost during the benchmark: the job was cancelled") if lost \
                else Stopped("stopped by the operator; the benchmark job was cancelled")
