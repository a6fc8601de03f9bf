"""A Hypothesis state machine over the lease rules, with crashes.

The system under test is what the actor does, without Ray: apply a call to the
LeaseTable, write a real Parquet snapshot if the call changed durable state, then
answer. A crash may strike before the write (the change is lost) or after it
(the change is kept but the caller never heard); either way the tracker restarts
from the file and the caller retries the same call (with the same request id),
as TrackerClient does. A small reference model says what every acknowledged
answer must be.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.tracker.store import SnapshotStore
from actors.tracker.rules import LeaseState, LeaseTable
from tests.support import FakeClock

TTL = 10.0
WORKS = ["w1", "w2", "w3"]
OWNERS = ["alice", "bob", "carol"]
FATES = st.sampled_from(["ok", "ok", "ok", "crash_before_write", "crash_after_write"])


@dataclass
class ModelLease:
    token: int
    owner: str
    expires: float
    state: str  # claimed, done, failed, abandoned, evicted


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lease-sm-"))
        self.clock = FakeClock(1000.0)
        self.store = SnapshotStore(self.dir / "state.parquet")
        self.table = LeaseTable(ttl_s=TTL, clock=self.clock)
        self.durable_version = 0
        self.leases: dict[str, ModelLease] = {}
        self.tokens_seen: dict[str, set[int]] = {w: set() for w in WORKS}
        self.max_acked_token = 0
        self.crashes = 0

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the system under test, as the actor runs it -------------------------

    def _persist(self):
        if self.table.version != self.durable_version:
            self.store.write(*self.table.snapshot())
            self.durable_version = self.table.version

    def _restart(self):
        self.crashes += 1
        loaded = SnapshotStore(self.store.path).load()
        self.table = LeaseTable.restore(loaded.records, loaded.next_token, ttl_s=TTL, clock=self.clock)
        self.durable_version = self.table.version
        # What a restart does to the model: every live lease gets a fresh TTL.
        for lease in self.leases.values():
            if lease.state == "claimed":
                lease.expires = self.clock.now + TTL

    def _call(self, fate, op, expect):
        """Run `op` through a crash of the given fate, as a retrying client sees it.

        `expect(answer)` checks an acknowledged answer against the model and
        applies it. Returns (acknowledged answer, answer to the retry after a
        crash that struck after the write, or None).
        """
        if fate == "crash_before_write":
            op()  # applied in memory, never written: lost with the crash
            self._restart()
        answer = op()
        self._persist()
        expect(answer)
        if fate != "crash_after_write":
            return answer, None
        self._restart()
        retry = op()
        self._persist()
        return answer, retry

    # -- the model -----------------------------------------------------------

    def _expire_in_model(self, work):
        lease = self.leases.get(work)
        if lease is not None and lease.state == "claimed" and self.clock.now >= lease.expires:
            lease.state = "evicted"

    # -- rules -----------------------------------------------------------------

    @rule(work=st.sampled_from(WORKS), owner=st.sampled_from(OWNERS), fate=FATES)
    def claim(self, work, owner, fate):
        request_id = uuid.uuid4().hex

        def expect(grant):
            self._expire_in_model(work)
            lease = self.leases.get(work)
            if lease is not None and lease.state in ("claimed", "done"):
                assert grant is None, f"{work} granted while {lease.state}"
                return
            assert grant is not None, f"{work} refused while free"
            assert grant.token > self.max_acked_token, "fencing token did not increase"
            assert grant.owner == owner and grant.state is LeaseState.CLAIMED
            self.max_acked_token = grant.token
            self.tokens_seen[work].add(grant.token)
            self.leases[work] = ModelLease(grant.token, owner, self.clock.now + TTL, "claimed")

        grant, retry = self._call(fate, lambda: self.table.claim(work, owner, request_id), expect)
        if fate == "crash_after_write":
            # The grant was on disk: the retry returns it, never a second one.
            assert (retry and retry.token) == (grant and grant.token)

    @rule(work=st.sampled_from(WORKS), data=st.data(), fate=FATES)
    def heartbeat(self, work, data, fate):
        if not self.tokens_seen[work]:
            return
        token = data.draw(st.sampled_from(sorted(self.tokens_seen[work])))

        def expect(ok):
            lease = self.leases[work]
            if lease.token == token:  # a stale token never touches the current lease
                self._expire_in_model(work)
            expected = lease.token == token and lease.state == "claimed"
            assert ok == expected, f"heartbeat({work}, {token}) -> {ok}, expected {expected}"
            if ok:
                lease.expires = self.clock.now + TTL

        ok, retry = self._call(fate, lambda: self.table.heartbeat(work, token), expect)
        if fate == "crash_after_write":
            assert retry == ok

    @rule(
        work=st.sampled_from(WORKS),
        data=st.data(),
        outcome=st.sampled_from(["done", "failed", "abandoned"]),
        fate=FATES,
    )
    def release(self, work, data, outcome, fate):
        if not self.tokens_seen[work]:
            return
        token = data.draw(st.sampled_from(sorted(self.tokens_seen[work])))

        def expect(ok):
            lease = self.leases[work]
            if lease.token == token:
                self._expire_in_model(work)
            expected = lease.token == token and lease.state in ("claimed", outcome)
            assert ok == expected, f"release({work}, {token}, {outcome}) -> {ok}, expected {expected}"
            if ok:
                lease.state = outcome

        ok, retry = self._call(fate, lambda: self.table.release(work, token, outcome), expect)
        if fate == "crash_after_write":
            assert retry == ok, "a retried release must answer as the first did"

    @rule(seconds=st.sampled_from([1.0, TTL / 2, TTL, TTL * 3]))
    def advance_clock(self, seconds):
        self.clock.advance(seconds)

    @rule(fate=FATES)
    def sweep(self, fate):
        def expect(evicted):
            expired = {
                w for w, l in self.leases.items() if l.state == "claimed" and self.clock.now >= l.expires
            }
            assert {c.work_id for c in evicted} == expired
            for w in expired:
                self._expire_in_model(w)

        _, retry = self._call(fate, self.table.evict_stale, expect)
        assert not retry  # nothing left to evict after the restart

    @rule()
    def clean_restart(self):
        self._restart()

    # -- invariants ------------------------------------------------------------

    @invariant()
    def table_agrees_with_model(self):
        for work, lease in self.leases.items():
            rec = self.table.get(work)
            assert rec is not None and rec.token == lease.token
            assert rec.state.value == lease.state

    @invariant()
    def next_token_is_above_every_token_handed_out(self):
        assert self.table.next_token > self.max_acked_token


TestLeaseRules = LeaseMachine.TestCase
TestLeaseRules.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
