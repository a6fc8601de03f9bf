"""The lease rules of the WorkTracker, with no Ray and no I/O.

`LeaseTable` is a pure state machine over `Claim` records. The Ray actor in
`actors.tracker.actor` wraps it with persistence (group commit to Parquet) and a
background sweep; tests drive it directly with an injected clock.

The rules, in the spirit of etcd leases and Chubby sequencers:

- at most one live lease per work item; a claim on live work is refused;
- every grant carries a fencing token drawn from one counter that only grows,
  for the life of the state file (the counter is persisted with the table);
- a lease lives until `expires_at` on the tracker's clock; heartbeats move it
  forward, an expired lease is gone (heartbeat and release with it are refused);
- `done` is terminal; `failed`, `abandoned` and `evicted` work may be claimed
  again, and `attempts` counts the grants;
- a retried claim with the same (owner, request_id) returns the grant it already
  made instead of a second one.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict

DEFAULT_TTL_S = 30 * 60.0


class LeaseState(str, Enum):
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"
    EVICTED = "evicted"


# What a holder may say when it lets go of a lease.
OUTCOMES = (LeaseState.DONE, LeaseState.FAILED, LeaseState.ABANDONED)


class Claim(BaseModel):
    """One work item's lease record: the current (or last) grant on it."""

    model_config = ConfigDict(frozen=True)

    work_id: str
    owner: str
    token: int
    state: LeaseState
    claimed_at: float
    expires_at: float
    heartbeat_at: float
    released_at: float | None = None
    attempts: int = 1
    request_id: str | None = None
    result: dict[str, Any] | None = None

    @property
    def live(self) -> bool:
        return self.state is LeaseState.CLAIMED


def tracker_clock() -> Callable[[], float]:
    """A clock that reads as Unix time but never steps backwards or jumps.

    Leases are timed on the tracker's own monotonic clock (as etcd does), so an
    NTP step on the head node cannot expire or extend them; anchoring it to wall
    time once keeps `claimed_at`/`expires_at` readable. Leases are refreshed on
    every restart, so the anchor only has to hold for one process lifetime.
    """
    wall0, mono0 = time.time(), time.monotonic()
    return lambda: wall0 + (time.monotonic() - mono0)


def _require_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


class LeaseTable:
    """All lease records, keyed by work id, and the fencing-token counter.

    `version` counts changes that must be durable before a reply (grants,
    releases, evictions). Heartbeats change only `expires_at`, which every
    restart refreshes anyway, so they are not counted and cost no disk write.
    """

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] | None = None,
        records: Iterable[Claim] = (),
        next_token: int = 1,
    ):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.ttl_s = float(ttl_s)
        self.clock = clock or tracker_clock()
        self._records: dict[str, Claim] = {}
        self._by_request: dict[tuple[str, str], str] = {}
        top = 0
        for rec in records:
            self._records[rec.work_id] = rec
            if rec.request_id is not None:
                self._by_request[(rec.owner, rec.request_id)] = rec.work_id
            top = max(top, rec.token)
        self.next_token = max(int(next_token), top + 1)
        self.version = 0

    @classmethod
    def restore(
        cls,
        records: Iterable[Claim],
        next_token: int,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] | None = None,
        owner_gone: Callable[[str], bool] | None = None,
    ) -> "LeaseTable":
        """Rebuild after a restart: every live claim of a living owner gets a fresh
        full lease, so the time the tracker was down is never counted against a
        holder; the claims of owners `owner_gone` says are certainly dead are
        evicted instead of refreshed."""
        table = cls(ttl_s=ttl_s, clock=clock, records=records, next_token=next_token)
        if owner_gone is not None:
            table.evict_owners(owner_gone)
        now = table.clock()
        for work_id, rec in list(table._records.items()):
            if rec.live:
                table._records[work_id] = rec.model_copy(
                    update={"expires_at": now + table.ttl_s, "heartbeat_at": now}
                )
        return table

    # -- queries -----------------------------------------------------------

    def get(self, work_id: str) -> Claim | None:
        return self._records.get(work_id)

    def list_claims(self, state: LeaseState | str | None = None) -> list[Claim]:
        recs = sorted(self._records.values(), key=lambda r: r.work_id)
        if state is None:
            return recs
        wanted = LeaseState(state)
        return [r for r in recs if r.state is wanted]

    def snapshot(self) -> tuple[list[Claim], int]:
        """A consistent copy for the writer: records are immutable, so a list of
        references is enough."""
        return list(self._records.values()), self.next_token

    def __len__(self) -> int:
        return len(self._records)

    # -- mutations -----------------------------------------------------------

    def claim(self, work_id: str, owner: str, request_id: str | None = None) -> Claim | None:
        _require_text("work_id", work_id)
        _require_text("owner", owner)
        if request_id is not None:
            _require_text("request_id", request_id)
            seen = self._by_request.get((owner, request_id))
            if seen is not None:
                if seen != work_id:
                    raise ValueError(
                        f"request_id {request_id!r} of owner {owner!r} was already "
                        f"used to claim {seen!r}, not {work_id!r}"
                    )
                rec = self._records[work_id]
                # The same grant while it still stands; once it has been evicted
                # or re-granted, this request's lease is gone and the answer is
                # the refusal a late caller would get anyway.
                if rec.live and rec.owner == owner and rec.request_id == request_id:
                    return rec
                return None

        now = self.clock()
        rec = self._records.get(work_id)
        if rec is not None:
            if rec.live and now < rec.expires_at:
                return None
            if rec.live:  # expired but not yet swept: it is gone all the same
                rec = self._evict(rec, now)
            if rec.state is LeaseState.DONE:
                return None
        grant = Claim(
            work_id=work_id,
            owner=owner,
            token=self.next_token,
            state=LeaseState.CLAIMED,
            claimed_at=now,
            expires_at=now + self.ttl_s,
            heartbeat_at=now,
            attempts=(rec.attempts + 1) if rec is not None else 1,
            request_id=request_id,
        )
        self.next_token += 1
        if rec is not None and rec.request_id is not None:
            self._by_request.pop((rec.owner, rec.request_id), None)
        self._records[work_id] = grant
        if request_id is not None:
            self._by_request[(owner, request_id)] = work_id
        self.version += 1
        return grant

    def heartbeat(self, work_id: str, token: int) -> bool:
        rec = self._current(work_id, token)
        if rec is None or not rec.live:
            return False
        now = self.clock()
        if now >= rec.expires_at:
            self._evict(rec, now)
            return False
        self._records[work_id] = rec.model_copy(
            update={"expires_at": now + self.ttl_s, "heartbeat_at": now}
        )
        return True

    def release(
        self,
        work_id: str,
        token: int,
        outcome: LeaseState | str,
        result: dict[str, Any] | None = None,
    ) -> bool:
        try:
            outcome = LeaseState(outcome)
        except ValueError:
            outcome = None
        if outcome not in OUTCOMES:
            raise ValueError(
                "outcome must be one of " + ", ".join(o.value for o in OUTCOMES)
            )
        if result is not None:
            if not isinstance(result, dict):
                raise ValueError(f"result must be a dict, got {type(result).__name__}")
            try:
                result = json.loads(json.dumps(result))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"result must be JSON-serialisable: {exc}") from None
        rec = self._current(work_id, token)
        if rec is None:
            return False
        if not rec.live:
            # A retried release is answered as the first one was.
            return rec.state is outcome and rec.released_at is not None
        now = self.clock()
        if now >= rec.expires_at:
            self._evict(rec, now)
            return False
        self._records[work_id] = rec.model_copy(
            update={"state": outcome, "released_at": now, "result": result}
        )
        self.version += 1
        return True

    def evict_stale(self) -> list[Claim]:
        """Evict every lease whose expiry has passed; return what was evicted."""
        now = self.clock()
        stale = [r for r in self._records.values() if r.live and now >= r.expires_at]
        return [self._evict(r, now) for r in stale]

    def evict_all_live(self) -> list[Claim]:
        """Evict every live lease, expired or not (the cluster is known dead)."""
        now = self.clock()
        return [self._evict(r, now) for r in list(self._records.values()) if r.live]

    def evict_owners(self, owner_gone: Callable[[str], bool], work_id: str | None = None) -> list[Claim]:
        """Evict the live leases (of `work_id`, or all) whose owner is certainly dead."""
        now = self.clock()
        recs = [self._records[work_id]] if work_id in self._records else [] if work_id else list(self._records.values())
        return [self._evict(r, now, "owner gone") for r in recs if r.live and owner_gone(r.owner)]

    # -- internals -----------------------------------------------------------

    def _current(self, work_id: str, token: int) -> Claim | None:
        rec = self._records.get(work_id)
        if rec is None or rec.token != token:
            return None
        return rec

    def _evict(self, rec: Claim, now: float, reason: str = "lease expired") -> Claim:
        evicted = rec.model_copy(update={"state": LeaseState.EVICTED, "released_at": now,
                                         "result": {"reason": reason}})
        self._records[rec.work_id] = evicted
        self.version += 1
        return evicted
