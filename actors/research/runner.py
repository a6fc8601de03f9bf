"""One AutoResearch experiment run: the training script as a Ray task that holds
its GPUs, under a wall-clock timeout.

The task gets the script's bytes, not a path: it may land on any node of the
cluster, and a Parameter Golf script is self-contained by the rules. It writes
the script into a fresh working directory, runs it (`torchrun --standalone
--nproc_per_node=G` when it holds G >= 1 GPUs, the way the challenge runs it;
plain `python` on CPU), saves the combined stdout/stderr, and returns the log.
A run that outlives the timeout has its whole process group killed and counts
as a crash. The environment is `actors.shared.sandbox.child_env`'s allowlist:
no API keys, no Ray token; what torch, CUDA and NCCL need, plus the caller's
overrides (a CPU run sees no GPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from actors.shared.sandbox import child_env


@dataclass
class RunResult:
    log: str
    returncode: int | None
    timed_out: bool
    seconds: float
    command: str
    node: str = ""

    @property
    def failed(self) -> bool:
        return self.timed_out or self.returncode != 0


def run_script(source: str, filename: str = "train_gpt.py", *, env: dict[str, str] | None = None,
               timeout_s: float = 900.0, gpus: int = 0, log_path: str | None = None) -> RunResult:
    """Run `source` as `filename` in a fresh directory; kill it after `timeout_s`."""
    import platform

    with tempfile.TemporaryDirectory(prefix="autoresearch-run-") as tmp:
        work = Path(tmp)
        (work / filename).write_text(source, encoding="utf-8")
        if gpus >= 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={gpus}", filename]
        else:
            cmd = [sys.executable, filename]
        out_path = Path(log_path) if log_path else work / "run.log"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as out:
            # A session of its own, so that a timeout kills torchrun and every rank it started.
            proc = subprocess.Popen(cmd, cwd=work, env=child_env(env, gpu=gpus >= 1), stdout=out,
                                    stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            except BaseException:
                _kill_group(proc)  # the task was cancelled: leave nothing running
                raise
        seconds = time.monotonic() - t0
        log = out_path.read_text(encoding="utf-8", errors="replace")
        if timed_out:
            log += f"\n[autoresearch] killed after the {timeout_s:.0f}s wall-clock timeout\n"
        return RunResult(log=log, returncode=proc.returncode, timed_out=timed_out, seconds=seconds,
                         command=" ".join(cmd[1:]), node=platform.node())


def _die_with_parent() -> None:
    """In the child: SIGTERM when the task's worker dies (Linux), so that a killed
    actor or a cancelled task never leaves a training run behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_on_ray(source: str, filename: str, *, env: dict[str, str], timeout_s: float, gpus: int,
               cpus: float = 1.0) -> RunResult:
    """`run_script` as a Ray task that requests `gpus` GPUs (and `cpus` CPUs)."""
    import ray

    task = ray.remote(run_script).options(num_gpus=gpus, num_cpus=cpus, max_retries=0,
                                         name=f"autoresearch-run:{filename}")
    ref = task.remote(source, filename, env=env, timeout_s=timeout_s, gpus=gpus)
    # The task enforces the timeout itself; this bound covers scheduling and a
    # stuck worker, after which the task is cancelled (its process group dies with it).
    ready, _ = ray.wait([ref], timeout=timeout_s + 300)
    if not ready:
        ray.cancel(ref, force=True)
        return RunResult(log=f"[autoresearch] the run did not finish within {timeout_s + 300:.0f}s "
                         "(scheduling included); cancelled\n",
                         returncode=None, timed_out=True, seconds=timeout_s + 300, command=filename)
    return ray.get(ref)
