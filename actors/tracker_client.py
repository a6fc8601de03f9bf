"""How agents hold leases: calls that survive a tracker restart, and a
heartbeat thread that tells its owner the moment a lease is lost.

The tracker actor runs with `max_task_retries=0`, so a call in flight when it
dies fails instead of being replayed blindly. `TrackerClient` retries such calls
itself while the actor restarts: heartbeat and release are idempotent, and a
claim carries a request id so that its retry returns the grant already made.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.leases import Claim

logger = logging.getLogger(__name__)


class TrackerUnavailable(RuntimeError):
    """The tracker did not come back within the retry window."""


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


class LeaseKeeper:
    """Heartbeats one lease from a background thread until stopped.

    `lost` is set when the tracker refuses a heartbeat (the lease was evicted)
    or stays unreachable past the lease's own TTL; the holder must then stop
    its work, because someone else may already hold a newer token.
    """

    def __init__(self, client: TrackerClient, claim: Claim, interval_s: float | None = None):
        self.client = client
        self.claim = claim
        ttl = claim.expires_at - claim.claimed_at
        self.interval_s = interval_s if interval_s is not None else max(ttl / 3.0, 0.05)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-{claim.work_id}", daemon=True
        )

    def __enter__(self) -> "LeaseKeeper":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                ok = self.client.heartbeat(self.claim.work_id, self.claim.token)
            except TrackerUnavailable:
                ok = False
            if not ok:
                logger.warning(
                    "lease on %s (token %d) lost: stop working on it",
                    self.claim.work_id, self.claim.token,
                )
                self.lost.set()
                return
