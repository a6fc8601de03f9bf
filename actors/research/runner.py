"""One AutoResearch run: the research file (with the repository's other tracked
files, the protected harness among them) as a Ray task that holds its GPUs, under
a wall-clock timeout.

The task gets the files' bytes, not a path: it may land on any node of the
cluster. A Parameter Golf script is self-contained by the rules; a
karpathy/autoresearch `train.py` imports the `prepare.py` beside it, so the
repository's other tracked files travel with the script (`repo_files`, or the
commit's files). It writes them into a fresh working directory at their places
in the repository, runs the command (`torchrun --standalone --nproc_per_node=G
FILE` when it holds G >= 1 GPUs, the way Parameter Golf runs; plain `python
FILE` on CPU; or the harness's re-score command), saves the combined
stdout/stderr, and returns the log, the files asked for (the artifact, for the
held-out re-score) and the size of the compressed model file the run wrote, if
any (the artifact, for a script that does not print its size). A run that
outlives the timeout has its whole process group killed and counts as a crash.
The environment is `actors.shared.sandbox.child_env`'s allowlist: no API keys,
no Ray token; what torch, CUDA and NCCL need, plus the caller's overrides (a CPU
run sees no GPU).

`run_on_ray` polls `cancelled()` while it waits, so that a cancelled researcher
stops its training run within a second (`ray.cancel(..., force=True)` kills the
task's worker, and the run dies with it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from actors.shared.sandbox import child_env

MAX_COLLECT_BYTES = 64_000_000  # an artifact larger than this is not brought back
POLL_S = 0.5


class RunCancelled(Exception):
    """The run was stopped because its researcher was cancelled."""


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
    collected: dict[str, bytes] = field(default_factory=dict)
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


@dataclass
class RunSpec:
    """What one run needs: its files (relative path -> bytes), which one to run, how."""

    files: dict[str, bytes]
    entry: str  # the research file, relative to the repository
    command: list[str] | None = None  # None: python ENTRY (torchrun with GPUs)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 900.0
    gpus: int = 0
    cpus: float = 1.0
    collect: tuple[str, ...] = ()  # files to bring back when the run leaves them
    name: str = ""


def _command(spec: RunSpec) -> list[str]:
    if spec.command:
        cmd = list(spec.command)
        if cmd[0] in ("python", "python3"):
            cmd[0] = sys.executable  # the interpreter this cluster runs, with its torch
        return cmd
    if spec.gpus >= 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.gpus}",
                spec.entry]
    return [sys.executable, spec.entry]


def _write_files(work: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = (work / rel).resolve()
        if not target.is_relative_to(work.resolve()):
            raise ValueError(f"{rel!r} is outside the run's directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _artifact(work: Path, shipped: set[Path], code_bytes: int) -> tuple[str, int | None]:
    """The newest compressed model file the run wrote, and code + its bytes."""
    made = [p for p in work.rglob("*") if p.is_file() and p.suffix in ARTIFACT_SUFFIXES and p not in shipped]
    if not made:
        return "", None
    newest = max(made, key=lambda p: p.stat().st_mtime)
    return str(newest.relative_to(work)), code_bytes + newest.stat().st_size


def run_spec(spec: RunSpec, log_path: str | None = None) -> RunResult:
    """Run `spec` in a fresh directory; kill it after `spec.timeout_s`."""
    import platform

    with tempfile.TemporaryDirectory(prefix="autoresearch-run-") as tmp:
        work = Path(tmp)
        _write_files(work, spec.files)
        shipped = {p.resolve() for p in work.rglob("*")}
        cmd = _command(spec)
        out_path = Path(log_path) if log_path else work / ".run.log"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as out:
            # A session of its own, so that a timeout kills torchrun and every rank it started.
            proc = subprocess.Popen(cmd, cwd=work, env=child_env(spec.env, gpu=spec.gpus >= 1), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)
            try:
                proc.wait(timeout=spec.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            except BaseException:
                _kill_group(proc)  # the task was cancelled: leave nothing running
                raise
        seconds = time.monotonic() - t0
        log = out_path.read_text(encoding="utf-8", errors="replace")
        if timed_out:
            log += f"\n[autoresearch] killed after the {spec.timeout_s:.0f}s wall-clock timeout\n"
        collected = {}
        for rel in spec.collect:
            path = work / rel
            if path.is_file() and path.stat().st_size <= MAX_COLLECT_BYTES:
                collected[rel] = path.read_bytes()
        artifact_file, artifact_bytes = _artifact(work.resolve(), shipped, len(spec.files.get(spec.entry, b"")))
        return RunResult(log=log, returncode=proc.returncode, timed_out=timed_out, seconds=seconds,
                         command=" ".join([Path(cmd[0]).name, *cmd[1:]]), node=platform.node(),
                         collected=collected, artifact_file=artifact_file, artifact_bytes=artifact_bytes)


def run_script(source: str, filename: str = "train_gpt.py", *, files: dict[str, bytes] | None = None,
               env: dict[str, str] | None = None, timeout_s: float = 900.0, gpus: int = 0,
               log_path: str | None = None) -> RunResult:
    """Run `source` as `filename` (a path in the repository) in a fresh directory that
    also holds `files` ({path: bytes}, e.g. from `repo_files`): `run_spec` with those files."""
    return run_spec(RunSpec({**(files or {}), filename: source.encode("utf-8")}, filename, env=dict(env or {}),
                            timeout_s=timeout_s, gpus=gpus), log_path)


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


def run_local(spec: RunSpec, cancelled: Callable[[], bool] = lambda: False) -> RunResult:
    """`run_spec` in this process's child (tests and library use without Ray)."""
    if cancelled():
        raise RunCancelled(spec.name)
    return run_spec(spec)


def run_on_ray(spec: RunSpec, cancelled: Callable[[], bool] = lambda: False) -> RunResult:
    """`run_spec` as a Ray task that requests `spec.gpus` GPUs (and `spec.cpus` CPUs)."""
    import ray

    task = ray.remote(run_spec).options(num_gpus=spec.gpus, num_cpus=spec.cpus, max_retries=0,
                                        name=f"autoresearch-run:{spec.name or spec.entry}")
    ref = task.remote(spec)
    # The task enforces the timeout itself; this bound covers scheduling and a
    # stuck worker, after which the task is cancelled (its process group dies with it).
    deadline = time.monotonic() + spec.timeout_s + 300
    while True:
        ready, _ = ray.wait([ref], timeout=POLL_S)
        if ready:
            return ray.get(ref)
        if cancelled():
            ray.cancel(ref, force=True)
            raise RunCancelled(spec.name)
        if time.monotonic() > deadline:
            ray.cancel(ref, force=True)
            return RunResult(log=f"[autoresearch] the run did not finish within {spec.timeout_s + 300:.0f}s "
                             "(scheduling included); cancelled\n",
                             returncode=None, timed_out=True, seconds=spec.timeout_s + 300, command=spec.entry)
