"""Stopping on request: Ctrl-C or SIGTERM at the driver becomes a cancelled Ray
task in every agent, and the agent stops within seconds, releasing what it holds.

The driver calls `ray.cancel(ref)` on each agent's running method. For a sync
actor Ray 2.60 does not interrupt the method; it sets a flag the method reads with
`ray.get_runtime_context().is_canceled()` (the public way to cancel gracefully).
Agents call `check_stop()` between steps, and wait on their long children (a
training job, a smoke test) through `wait_task` and `run_child`, which poll the
flag and kill the child when it is raised.

Outside Ray (tests, a library caller) `request_stop()` raises the same flag for
the process.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any, Callable

POLL_S = 0.5

_local_stop = threading.Event()


class Stopped(Exception):
    """The operator asked us to stop: release what we hold and return."""


def request_stop() -> None:
    """Ask this process's agents to stop (the in-process counterpart of ray.cancel)."""
    _local_stop.set()


def clear_stop() -> None:
    _local_stop.clear()


def stop_requested() -> bool:
    if _local_stop.is_set():
        return True
    try:
        import ray

        if ray.is_initialized():
            return bool(ray.get_runtime_context().is_canceled())
    except RuntimeError:  # the driver, or an async actor: nobody cancels us this way
        return False
    return False


def check_stop(what: str = "") -> None:
    if stop_requested():
        raise Stopped(f"stopped by the operator{' ' + what if what else ''}")


def wait_task(ref, *, lost: Callable[[], bool] | None = None, on_lost: Callable[[], Exception] | None = None,
              poll_s: float = POLL_S) -> Any:
    """`ray.get(ref)`, polling: on a stop request (or when `lost()` turns true) the
    task is force-cancelled, which kills its worker process and with it every
    actor it owns (a Ray Train controller and its workers), then Stopped (or
    `on_lost()`) is raised."""
    import ray

    while True:
        ready, _ = ray.wait([ref], timeout=poll_s)
        if ready:
            try:
                return ray.get(ref)
            except ray.exceptions.RayError as exc:
                # Cancelled from outside: a stop cancels the caller's task with its
                # children, and the child can end before this loop sees the request.
                # That is a stop (or the lost lease), never a failure of the work.
                cause = getattr(exc, "cause", None)
                if not isinstance(exc, ray.exceptions.TaskCancelledError) and \
                        not isinstance(cause, ray.exceptions.TaskCancelledError):
                    raise
                if lost is not None and lost():
                    raise (on_lost() if on_lost is not None else Stopped("the job was cancelled")) from None
                raise Stopped("stopped by the operator; the running job was cancelled") from None
        if stop_requested():
            ray.cancel(ref, force=True)
            raise Stopped("stopped by the operator; the running job was cancelled")
        if lost is not None and lost():
            ray.cancel(ref, force=True)
            raise on_lost() if on_lost is not None else Stopped("the job was cancelled")


def run_child(cmd: list[str], *, cwd, env: dict, timeout_s: float, poll_s: float = POLL_S
              ) -> subprocess.CompletedProcess:
    """`subprocess.run(capture_output=True, text=True)` that also ends on a stop
    request (the child is killed, Stopped raised). TimeoutExpired after `timeout_s`."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=poll_s)
                return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                if stop_requested():
                    raise Stopped("stopped by the operator during a child process") from None
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(cmd, timeout_s) from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
