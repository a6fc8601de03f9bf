"""One AutoResearch experiment run: the training script as a Ray task that holds
its GPUs, under a wall-clock timeout.

The task gets bytes, not paths: it may land on any node of the cluster. A
Parameter Golf script is self-contained by the rules; a karpathy/autoresearch
`train.py` imports the `prepare.py` beside it, so the repository's other tracked
files travel with the script (`repo_files`). It writes them and the script into a
fresh working directory at their places in the repository, runs the script (`torchrun --standalone
--nproc_per_node=G` when it holds G >= 1 GPUs, the way the challenge runs it;
plain `python` on CPU), saves the combined stdout/stderr, and returns the log
with the size of the compressed model file the run wrote, if any (the artifact,
for a script that does not print its size).
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


# Files a run writes that can be its submitted artifact: compressed model files. The
# raw checkpoint (final_model.pt) never is; the artifact is code + compressed model.
ARTIFACT_SUFFIXES = (".ptz", ".zst", ".zstd", ".br", ".xz", ".lzma", ".gz", ".zlib", ".bz2")
MAX_REPO_FILE_BYTES = 8 * 1024 * 1024  # larger tracked files (data) are not shipped with a run
MAX_REPO_BYTES = 32 * 1024 * 1024


@dataclass
class RunResult:
    log: str
    returncode: int | None
    timed_out: bool
    seconds: float
    command: str
    node: str = ""
    artifact_file: str = ""  # the compressed model file the run wrote, if any
    artifact_bytes: int | None = None  # the script's bytes + that file's: the artifact, measured

    @property
    def failed(self) -> bool:
        return self.timed_out or self.returncode != 0


def repo_files(root: Path, exclude: str) -> dict[str, bytes]:
    """The repository's tracked files (but `exclude`, the file under research) that a
    run needs beside it: `prepare.py` and the like. Large files (data) stay behind."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    out: dict[str, bytes] = {}
    total = 0
    for name in sorted(n for n in listed.decode("utf-8", "replace").split("\0") if n and n != exclude):
        path = Path(root) / name
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        if size > MAX_REPO_FILE_BYTES or total + size > MAX_REPO_BYTES:
            continue
        out[name] = path.read_bytes()
        total += size
    return out


def _inside(work: Path, name: str) -> Path:
    path = (work / name).resolve()
    if not path.is_relative_to(work.resolve()):
        raise ValueError(f"{name!r} is not a path inside the run's directory")
    return path


def _artifact(work: Path, shipped: set[Path], source: str) -> tuple[str, int | None]:
    """The newest compressed model file the run wrote, and code + its bytes."""
    made = [p for p in work.rglob("*") if p.is_file() and p.suffix in ARTIFACT_SUFFIXES and p not in shipped]
    if not made:
        return "", None
    newest = max(made, key=lambda p: p.stat().st_mtime)
    return str(newest.relative_to(work)), len(source.encode("utf-8")) + newest.stat().st_size


def run_script(source: str, filename: str = "train_gpt.py", *, files: dict[str, bytes] | None = None,
               env: dict[str, str] | None = None, timeout_s: float = 900.0, gpus: int = 0,
               log_path: str | None = None) -> RunResult:
    """Run `source` as `filename` (a path in the repository) in a fresh directory that
    also holds `files` ({path: bytes}, e.g. from `repo_files`); kill it after `timeout_s`."""
    import platform

    with tempfile.TemporaryDirectory(prefix="autoresearch-run-") as tmp:
        work = Path(tmp)
        for name, data in (files or {}).items():
            dest = _inside(work, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        script = _inside(work, filename)
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(source, encoding="utf-8")
        shipped = {p.resolve() for p in work.rglob("*")}
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
        artifact_file, artifact_bytes = _artifact(work.resolve(), shipped, source)
        return RunResult(log=log, returncode=proc.returncode, timed_out=timed_out, seconds=seconds,
                         command=" ".join(cmd[1:]), node=platform.node(), artifact_file=artifact_file,
                         artifact_bytes=artifact_bytes)


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
               cpus: float = 1.0, files: dict[str, bytes] | None = None) -> RunResult:
    """`run_script` as a Ray task that requests `gpus` GPUs (and `cpus` CPUs)."""
    import ray

    task = ray.remote(run_script).options(num_gpus=gpus, num_cpus=cpus, max_retries=0,
                                         name=f"autoresearch-run:{filename}")
    ref = task.remote(source, filename, files=files, env=env, timeout_s=timeout_s, gpus=gpus)
    # The task enforces the timeout itself; this bound covers scheduling and a
    # stuck worker, after which the task is cancelled (its process group dies with it).
    ready, _ = ray.wait([ref], timeout=timeout_s + 300)
    if not ready:
        ray.cancel(ref, force=True)
        return RunResult(log=f"[autoresearch] the run did not finish within {timeout_s + 300:.0f}s "
                         "(scheduling included); cancelled\n",
                         returncode=None, timed_out=True, seconds=timeout_s + 300, command=filename)
    return ray.get(ref)
