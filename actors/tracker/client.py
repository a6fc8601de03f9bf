"""How agents hold work: calls that survive a tracker restart, and `Lease`, the one
way every agent claims, heartbeats and lets go of a work item.

The tracker actor runs with `max_task_retries=0`, so a call in flight when it
dies fails instead of being replayed blindly. `TrackerClient` retries such calls
itself while the actor restarts: heartbeat and release are idempotent, and a
claim carries a request id so that its retry returns the grant already made.

    with client.hold("scale:008", owner="scaler-1") as lease:   # LeaseRefused if held
        ...
        lease.check()                    # LeaseLost once the lease is gone: stop, write nothing
        lease.confirm()                  # fencing: a round trip that proves the token still holds
        lease.finish("done", {...})      # release with the outcome
    # leaving the block any other way releases the claim as `abandoned`
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.tracker.owners import owner_is_gone, process_owner  # noqa: F401 (part of the client's API)
from actors.tracker.rules import Claim, LeaseState

logger = logging.getLogger(__name__)


class TrackerUnavailable(RuntimeError):
    """The tracker did not come back within the retry window."""


class LeaseRefused(RuntimeError):
    """Someone else holds the work (or it is done): `holder` is their claim, if any."""

    def __init__(self, work_id: str, holder: Claim | None):
        who = f"held by {holder.owner}" if holder is not None and holder.live else (
            "already done" if holder is not None and holder.state is LeaseState.DONE else "not granted")
        super().__init__(f"{work_id} is {who}")
        self.work_id, self.holder = work_id, holder


class LeaseLost(RuntimeError):
    """Our lease is gone: someone else may hold the work now. Stop, write nothing."""


class TrackerClient:
    def __init__(self, handle, retry_window_s: float = 60.0, backoff_s: float = 0.2):
        self.handle = handle
        self.retry_window_s = retry_window_s
        self.backoff_s = backoff_s

    def _call(self, method: str, *args) -> Any:
        deadline = time.monotonic() + self.retry_window_s
        delay = self.backoff_s
        while True:
            try:
                return ray.get(getattr(self.handle, method).remote(*args))
            except RayActorError as exc:
                if time.monotonic() >= deadline:
                    raise TrackerUnavailable(
                        f"work tracker unreachable for {self.retry_window_s:.0f}s: {exc}"
                    ) from exc
                logger.info("work tracker unavailable (%s); retrying %s", type(exc).__name__, method)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def claim(self, work_id: str, owner: str, request_id: str | None = None) -> Claim | None:
        return self._call("claim", work_id, owner, request_id or uuid.uuid4().hex)

    def heartbeat(self, work_id: str, token: int) -> bool:
        return self._call("heartbeat", work_id, token)

    def release(self, work_id: str, token: int, outcome: str, result: dict | None = None) -> bool:
        return self._call("release", work_id, token, outcome, result)

    def list_claims(self, state: str | None = None) -> list[Claim]:
        return self._call("list_claims", state)

    def get(self, work_id: str) -> Claim | None:
        return self._call("get", work_id)

    def hold(self, work_id: str, owner: str, *, heartbeat_s: float | None = None) -> "Lease":
        """A `Lease` on `work_id` for `owner`, to use as a context manager."""
        return Lease(self, work_id, owner, heartbeat_s=heartbeat_s)


class Lease:
    """One held work item: claim it (the tracker hands over the claim of a holder
    that is certainly dead at once, see `actors.tracker.owners`), heartbeat from a
    thread, `lost` when the tracker refuses a heartbeat or stays unreachable past
    the lease's TTL, release on exit.

    Leaving the `with` block without `finish()` releases the claim as
    `abandoned`, with the exception (Ctrl-C included) as the reason, so nothing
    stays held for a TTL after its holder stopped.
    """

    def __init__(self, client: TrackerClient, work_id: str, owner: str, *, heartbeat_s: float | None = None):
        self.client, self.work_id, self.owner = client, work_id, owner
        self._heartbeat_s = heartbeat_s
        self.claim: Claim | None = None
        self.lost = threading.Event()
        self.released = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> int:
        return self.claim.token if self.claim is not None else -1

    # -- acquire -------------------------------------------------------------

    def acquire(self) -> "Lease":
        claim = self.client.claim(self.work_id, self.owner)
        if claim is None:
            raise LeaseRefused(self.work_id, self.client.get(self.work_id))
        self.claim = claim
        ttl = claim.expires_at - claim.claimed_at
        interval = self._heartbeat_s if self._heartbeat_s is not None else max(ttl / 3.0, 0.05)
        self._thread = threading.Thread(target=self._beat, args=(interval,), name=f"lease-{self.work_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> "Lease":
        return self if self.claim is not None else self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.released or self.claim is None:
            self._stop_beating()
            return
        reason = "left without an outcome" if exc_type is None else (
            f"stopped by {exc_type.__name__}" + (f": {str(exc)[:300]}" if str(exc) else ""))
        try:
            self.finish(LeaseState.ABANDONED.value, {"reason": reason})
        except (LeaseLost, TrackerUnavailable) as err:  # nothing of ours left to release
            logger.warning("%s: %s", self.work_id, err)

    # -- while holding -------------------------------------------------------

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                ok = self.client.heartbeat(self.work_id, self.claim.token)
            except TrackerUnavailable:
                ok = False
            if not ok:
                logger.warning("lease on %s (token %d) lost: stop working on it", self.work_id, self.claim.token)
                self.lost.set()
                return

    def check(self) -> None:
        """Raise LeaseLost when the heartbeat thread has seen the lease go."""
        if self.lost.is_set():
            raise LeaseLost(f"lease on {self.work_id} lost (token {self.token}): stopping")

    def confirm(self) -> None:
        """Fencing before a write that must be ours alone: prove the token still holds."""
        self.check()
        if not self.client.heartbeat(self.work_id, self.token):
            self.lost.set()
            raise LeaseLost(f"lease on {self.work_id} (token {self.token}) lost before writing results")

    def finish(self, outcome: str, result: dict | None = None) -> None:
        """Release with `outcome` (done, failed, abandoned). LeaseLost if the tracker
        refuses: the lease was taken over, and the new holder decides what stands."""
        self._stop_beating()
        if self.released:
            return
        self.released = True
        if not self.client.release(self.work_id, self.token, outcome, result):
            raise LeaseLost(f"release of {self.work_id} (token {self.token}) refused: the lease was taken over")

    def _stop_beating(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
