"""The lease rules, on the pure LeaseTable with a hand-moved clock."""

import pytest

from actors.tracker.rules import LeaseState, LeaseTable
from tests.support import FakeClock

TTL = 100.0


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def table(clock):
    return LeaseTable(ttl_s=TTL, clock=clock)


def test_claim_grants_once_and_refuses_while_held(table, clock):
    a = table.claim("w", "alice")
    assert a is not None and a.state is LeaseState.CLAIMED and a.owner == "alice"
    assert a.expires_at == clock.now + TTL
    assert table.claim("w", "bob") is None
    assert table.claim("w", "alice") is None  # no re-entrant grant without the request id


def test_tokens_strictly_increase_across_work_items(table):
    tokens = [table.claim(f"w{i}", "a").token for i in range(5)]
    assert tokens == sorted(tokens) and len(set(tokens)) == 5


def test_retried_claim_returns_the_same_grant(table):
    first = table.claim("w", "alice", request_id="r1")
    again = table.claim("w", "alice", request_id="r1")
    assert again == first
    assert table.next_token == first.token + 1  # nothing granted twice


def test_request_id_reused_for_other_work_is_an_error(table):
    table.claim("w1", "alice", request_id="r1")
    with pytest.raises(ValueError, match="already used to claim 'w1'"):
        table.claim("w2", "alice", request_id="r1")


def test_heartbeat_extends_and_expiry_evicts(table, clock):
    c = table.claim("w", "alice")
    clock.advance(TTL * 0.9)
    assert table.heartbeat("w", c.token)
    clock.advance(TTL * 0.9)  # past the original expiry, inside the extended one
    assert table.get("w").live
    clock.advance(TTL)
    assert table.heartbeat("w", c.token) is False
    assert table.get("w").state is LeaseState.EVICTED
    b = table.claim("w", "bob")
    assert b.token > c.token and b.attempts == 2
    assert table.release("w", c.token, "done") is False  # the evicted holder is fenced off
    assert table.get("w").owner == "bob"


def test_evict_stale_returns_only_expired_leases(table, clock):
    old = table.claim("old", "a")
    clock.advance(TTL / 2)
    table.claim("new", "b")
    clock.advance(TTL / 2)
    evicted = table.evict_stale()
    assert [e.work_id for e in evicted] == ["old"] and evicted[0].token == old.token
    assert table.get("new").live


def test_done_is_terminal_failed_is_retryable(table):
    c = table.claim("d", "a")
    assert table.release("d", c.token, "done", {"score": 1.5})
    assert table.claim("d", "b") is None
    assert table.get("d").result == {"score": 1.5}
    f = table.claim("f", "a")
    assert table.release("f", f.token, "failed", {"reason": "oom"})
    again = table.claim("f", "b")
    assert again is not None and again.attempts == 2 and again.token > f.token


def test_release_is_idempotent_and_stale_tokens_change_nothing(table):
    c = table.claim("w", "a")
    assert table.release("w", c.token, "abandoned")
    v = table.version
    assert table.release("w", c.token, "abandoned")  # a retry gets the same answer
    assert table.release("w", c.token, "done") is False  # but cannot change the outcome
    assert table.release("w", c.token + 7, "done") is False
    assert table.version == v


def test_bad_arguments_are_refused_with_their_name(table):
    with pytest.raises(ValueError, match="work_id"):
        table.claim("", "a")
    with pytest.raises(ValueError, match="owner"):
        table.claim("w", None)
    c = table.claim("w", "a")
    with pytest.raises(ValueError, match="outcome must be one of done, failed, abandoned"):
        table.release("w", c.token, "finished")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        table.release("w", c.token, "done", {"x": object()})
    assert table.get("w").live  # the refused release changed nothing


def test_restore_refreshes_live_leases(clock):
    t1 = LeaseTable(ttl_s=TTL, clock=clock)
    c = t1.claim("w", "a")
    clock.advance(TTL * 5)  # the tracker was down far longer than the TTL
    t2 = LeaseTable.restore(*t1.snapshot(), ttl_s=TTL, clock=clock)
    assert t2.get("w").expires_at == clock.now + TTL
    assert t2.heartbeat("w", c.token)
    assert t2.claim("x", "b").token > c.token


def test_restore_evicts_dead_owners_and_refreshes_living_ones():
    clock = FakeClock()
    table = LeaseTable(ttl_s=60, clock=clock)
    table.claim("a", "alive@pid:h:1")
    table.claim("b", "dead@pid:h:2")
    clock.advance(50)
    restored = LeaseTable.restore(*table.snapshot(), ttl_s=60, clock=clock, owner_gone=lambda o: o.startswith("dead"))
    a, b = restored.get("a"), restored.get("b")
    assert a.live and a.expires_at == clock.now + 60  # a living owner keeps its lease, refreshed
    assert b.state is LeaseState.EVICTED and b.result == {"reason": "owner gone"}  # never refreshed
    assert restored.claim("b", "next") is not None


def test_evict_owners_only_touches_live_leases_of_dead_owners():
    table = LeaseTable(ttl_s=60, clock=FakeClock())
    for w in ("x", "y", "z"):
        table.claim(w, f"{w}-owner")
    table.release("z", table.get("z").token, "done")
    gone = {"x-owner", "z-owner"}.__contains__
    assert [c.work_id for c in table.evict_owners(gone, "y")] == []
    assert [c.work_id for c in table.evict_owners(gone)] == ["x"]
    assert table.get("z").state is LeaseState.DONE and table.get("y").live
