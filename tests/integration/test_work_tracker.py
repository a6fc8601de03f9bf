"""The WorkTracker on a real local Ray instance: exclusion, restarts, eviction."""

import os
import signal
import socket
import threading
import time

import pytest
import ray

from actors.tracker.rules import LeaseState
from actors.tracker.store import SnapshotStore
from actors.tracker.client import LeaseLost, LeaseRefused, TrackerClient
from actors.tracker.actor import TrackerConfigError, connect_tracker


def test_fifty_concurrent_claimers_get_exactly_one_grant(make_tracker, tmp_path):
    client = TrackerClient(make_tracker())
    for item in range(3):
        work_id = f"contested-{item}"
        barrier = threading.Barrier(50)
        grants = [None] * 50

        def claimer(i):
            barrier.wait()
            grants[i] = client.claim(work_id, f"agent{i}")

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [g for g in grants if g is not None]
        assert len(winners) == 1, f"{len(winners)} grants for {work_id}"
    # What was granted is what is on disk.
    on_disk = {r.work_id: r for r in SnapshotStore(tmp_path / "state.parquet").load().records}
    assert len(on_disk) == 3 and all(r.state is LeaseState.CLAIMED for r in on_disk.values())


def _kill_os_process(handle):
    os.kill(ray.get(handle.info.remote())["pid"], signal.SIGKILL)


def _kill_through_ray(handle):
    ray.kill(handle, no_restart=False)


@pytest.mark.slow
@pytest.mark.parametrize("kill", [_kill_through_ray, _kill_os_process], ids=["ray_kill", "sigkill"])
def test_killed_tracker_comes_back_with_claims_and_rising_tokens(make_tracker, kill):
    handle = make_tracker()
    client = TrackerClient(handle)
    pid_before = ray.get(handle.info.remote())["pid"]
    acked: dict[str, list] = {f"streamer{s}": [] for s in range(4)}
    errors = []

    def stream(owner, n=60):
        try:
            for i in range(n):
                grant = client.claim(f"{owner}/item{i}", owner)
                assert grant is not None, "a fresh item was refused"
                acked[owner].append(grant)
        except Exception as exc:  # surfaced below with its streamer
            errors.append((owner, exc))

    threads = [threading.Thread(target=stream, args=(o,)) for o in acked]
    for t in threads:
        t.start()
    while sum(len(v) for v in acked.values()) < 60:
        time.sleep(0.01)
    kill(handle)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    info = ray.get(handle.info.remote())
    assert info["pid"] != pid_before, "the tracker was not restarted"
    live = {c.work_id: c for c in ray.get(handle.list_claims.remote(LeaseState.CLAIMED.value))}
    all_tokens = []
    for owner, grants in acked.items():
        assert len(grants) == 60
        tokens = [g.token for g in grants]
        assert tokens == sorted(tokens) and len(set(tokens)) == 60, f"{owner}: tokens went backwards"
        for g in grants:  # every acknowledged claim survived, with its token
            assert live[g.work_id].token == g.token and live[g.work_id].owner == owner
        all_tokens += tokens
    assert len(set(all_tokens)) == len(all_tokens), "a token was granted twice"
    assert info["next_token"] > max(all_tokens)
    # New grants after the restart continue above everything handed out.
    assert client.claim("after-restart", "x").token > max(all_tokens)


@pytest.mark.slow
def test_silent_agent_is_evicted_and_fenced_off(make_tracker):
    ttl = 3.0
    handle = make_tracker(ttl_s=ttl, sweep_interval_s=0.2)
    client = TrackerClient(handle)
    first = client.claim("mve:007", "agent-a")
    # Heartbeats keep it alive well past one TTL (a slow machine has slack) ...
    for _ in range(8):
        time.sleep(ttl / 6)
        assert client.heartbeat("mve:007", first.token)
    assert client.claim("mve:007", "agent-b") is None
    # ... then agent-a goes silent, and the background sweep evicts it unasked.
    deadline = time.monotonic() + ttl + 5
    while ray.get(handle.get.remote("mve:007")).state is not LeaseState.EVICTED:
        assert time.monotonic() < deadline, "the stale lease was never evicted"
        time.sleep(0.1)
    second = client.claim("mve:007", "agent-b")
    assert second is not None and second.token > first.token and second.attempts == 2
    # agent-a's late heartbeat and result are refused; agent-b's stand.
    assert client.heartbeat("mve:007", first.token) is False
    assert client.release("mve:007", first.token, "done", {"val_loss": 1.0}) is False
    assert client.release("mve:007", second.token, "done", {"val_loss": 2.0})
    rec = ray.get(handle.get.remote("mve:007"))
    assert (rec.owner, rec.state, rec.result) == ("agent-b", LeaseState.DONE, {"val_loss": 2.0})
    assert client.claim("mve:007", "agent-c") is None  # done is never granted again


def test_lease_reports_a_lost_lease_and_refuses_to_confirm(make_tracker):
    handle = make_tracker(ttl_s=60)
    client = TrackerClient(handle)
    with client.hold("w", "agent", heartbeat_s=0.05) as lease:
        time.sleep(0.2)
        lease.check()  # still ours
        ray.get(handle.clean.remote(True))  # an operator evicts every live lease
        assert lease.lost.wait(timeout=5)
        with pytest.raises(LeaseLost):
            lease.check()
        with pytest.raises(LeaseLost):
            lease.confirm()
    assert ray.get(handle.get.remote("w")).state is LeaseState.EVICTED  # the late release changed nothing


def test_lease_is_released_as_abandoned_on_an_exception_or_ctrl_c(make_tracker):
    handle = make_tracker(ttl_s=60)
    client = TrackerClient(handle)
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with client.hold(f"w-{type(exc).__name__}", "agent"):
                raise exc
        rec = ray.get(handle.get.remote(f"w-{type(exc).__name__}"))
        assert rec.state is LeaseState.ABANDONED and type(exc).__name__ in rec.result["reason"]
    with client.hold("w-done", "agent") as lease:
        lease.confirm()
        lease.finish("done", {"val_loss": 1.5})
    assert ray.get(handle.get.remote("w-done")).result == {"val_loss": 1.5}
    with pytest.raises(LeaseRefused, match="already done"):
        client.hold("w-done", "other").acquire()


def test_lease_gets_the_work_of_a_holder_that_is_certainly_gone_and_only_then(make_tracker):
    handle = make_tracker(ttl_s=60)
    client = TrackerClient(handle)
    dead = f"old-cli@pid:{socket.gethostname()}:{_a_dead_pid()}"
    assert client.claim("w", dead) is not None
    assert client.claim("w2", f"this-test@pid:{socket.gethostname()}:{os.getpid()}") is not None
    with client.hold("w", "new-agent") as lease:  # at once, not after the TTL
        assert lease.claim.attempts == 2
    with pytest.raises(LeaseRefused, match="held by this-test@pid:"):
        client.hold("w2", "new-agent").acquire()  # that holder is alive: this test


def _a_dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_restart_reloads_state_and_refreshes_live_leases(make_tracker, tmp_path):
    from actors.tracker.actor import stop_tracker

    handle = make_tracker(ttl_s=5)
    client = TrackerClient(handle)
    held = client.claim("held", "a")
    done = client.claim("done", "a")
    client.release("done", done.token, "done")
    stop_tracker(namespace=make_tracker.namespace)
    time.sleep(1)
    handle = make_tracker(ttl_s=5)
    rec = ray.get(handle.get.remote("held"))
    assert rec.live and rec.token == held.token and rec.expires_at > held.expires_at
    assert ray.get(handle.info.remote())["loaded_from"] == "current"
    assert TrackerClient(handle).claim("done", "b") is None


def test_concurrent_connects_make_one_tracker(make_tracker):
    handles = [None] * 8

    def connect(i):
        handles[i] = make_tracker()

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({ray.get(h.info.remote())["pid"] for h in handles}) == 1


def test_connect_refuses_a_different_state_file(make_tracker, tmp_path):
    make_tracker()
    with pytest.raises(TrackerConfigError, match="keeps its state in"):
        connect_tracker(tmp_path / "other.parquet", namespace=make_tracker.namespace)


def test_corrupt_snapshot_does_not_crash_loop_the_actor(make_tracker, tmp_path):
    from actors.tracker.actor import stop_tracker

    handle = make_tracker()
    client = TrackerClient(handle)
    first = client.claim("a", "x")
    client.claim("b", "x")
    stop_tracker(namespace=make_tracker.namespace)
    time.sleep(1)
    (tmp_path / "state.parquet").write_bytes(b"torn write")
    handle = make_tracker()
    info = ray.get(handle.info.remote())
    assert info["loaded_from"] == "previous"
    assert ray.get(handle.get.remote("a")).token == first.token
    # The previous snapshot may miss the newest grants: tokens jump past them.
    assert info["next_token"] > first.token + 1_000_000
    assert TrackerClient(handle).claim("c", "y").token >= info["next_token"]
