"""`python -m actors.work_tracker` and `python -m actors.main`, run as a user would."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import ray

from actors.tracker.rules import LeaseTable
from actors.tracker.store import SnapshotStore
from actors.tracker.client import TrackerClient
from actors.tracker.actor import stop_tracker
from tests.support import pristine_examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args, env, timeout=120):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _offline_env():
    """No cluster to find: the CLI must fall back to the state file."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_ADDRESS"] = "local"  # 'local' means: do not join anything
    return env


def test_list_reads_the_running_tracker(make_tracker, ray_env, tmp_path):
    client = TrackerClient(make_tracker())
    claim = client.claim("scale:042", "scaler-1")
    done = client.claim("scale:001", "scaler-2")
    client.release("scale:001", done.token, "done", {"val_loss": 2.5})
    out = run(["-m", "actors.work_tracker", "--namespace", make_tracker.namespace, "list", "--json"], ray_env)
    assert out.returncode == 0, out.stderr
    rows = {r["work_id"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["scale:042"]["owner"] == "scaler-1" and rows["scale:042"]["token"] == claim.token
    assert rows["scale:001"]["state"] == "done" and rows["scale:001"]["result"] == {"val_loss": 2.5}
    table = run(["-m", "actors.work_tracker", "--namespace", make_tracker.namespace, "list"], ray_env)
    assert "running tracker" in table.stdout and "scale:042  scaler-1  claimed" in table.stdout


def test_list_of_another_file_reads_that_file_while_a_tracker_runs(make_tracker, ray_env, tmp_path):
    TrackerClient(make_tracker()).claim("running-tracker-item", "x")
    other = tmp_path / "other.parquet"
    _write_state(other)
    out = run(
        ["-m", "actors.work_tracker", "--namespace", make_tracker.namespace, "list", "--state", str(other)], ray_env
    )
    assert out.returncode == 0, out.stderr
    assert "finished" in out.stdout and "running-tracker-item" not in out.stdout


def _write_state(path, ttl_s=60.0):
    table = LeaseTable(ttl_s=ttl_s, clock=time.time)
    stale = table.claim("stale", "dead-agent")
    table.claim("fresh", "live-agent")
    d = table.claim("finished", "agent")
    table.release("finished", d.token, "done")
    # Make one lease look long expired, as after the cluster went down.
    records, next_token = table.snapshot()
    records = [r.model_copy(update={"expires_at": time.time() - 1}) if r.work_id == "stale" else r for r in records]
    SnapshotStore(path).write(records, next_token)
    return stale


def test_list_and_clean_work_on_the_file_when_no_cluster_is_up(tmp_path):
    state = tmp_path / "wt.parquet"
    stale = _write_state(state)
    out = run(["-m", "actors.work_tracker", "list", "--state", str(state)], _offline_env())
    assert out.returncode == 0, out.stderr
    assert str(state) in out.stdout and "stale" in out.stdout and "finished" in out.stdout
    out = run(["-m", "actors.work_tracker", "clean", "--state", str(state), "--json"], _offline_env())
    assert out.returncode == 0, out.stderr
    evicted = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(e["work_id"], e["state"], e["token"]) for e in evicted] == [("stale", "evicted", stale.token)]
    states = {r.work_id: r.state.value for r in SnapshotStore(state).load().records}
    assert states == {"stale": "evicted", "fresh": "claimed", "finished": "done"}
    out = run(["-m", "actors.work_tracker", "clean", "--all", "--state", str(state)], _offline_env())
    assert "evicted 1 lease(s)" in out.stdout


def test_cli_on_a_missing_state_file_says_so(tmp_path):
    out = run(["-m", "actors.work_tracker", "list", "--state", str(tmp_path / "nope.parquet")], _offline_env())
    assert out.returncode == 0 and "does not exist" in out.stdout
    assert not (tmp_path / "nope.parquet").exists()


def test_cli_bad_usage_is_a_message_not_a_traceback():
    out = run(["-m", "actors.work_tracker", "frobnicate"], _offline_env())
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr
    out = run(["-m", "actors.main", "--scalers", "0"], _offline_env())
    assert out.returncode == 2 and "--scalers must be at least 1" in out.stderr
    out = run(["-m", "actors.main", "--experiments", "/nonexistent/experiments"], _offline_env())
    assert out.returncode == 2 and "--experiments folder not found" in out.stderr


def test_scan_reads_live_claims_from_the_running_tracker(ray_env, tmp_path):
    from actors.tracker.actor import connect_tracker

    try:
        TrackerClient(connect_tracker(tmp_path / "state.parquet")).claim("scale:002", "scaler-elsewhere")
        ex = pristine_examples()
        out = run(["-m", "actors.scaler", "scan", "--json", "--experiments", str(ex / "experiments"),
                   "--code", str(ex / "code")], ray_env)
        assert out.returncode == 0, out.stderr
        rows = {r["id"]: r for r in map(json.loads, out.stdout.splitlines())}
        assert rows["002"]["scalable"] is False and "claimed" in rows["002"]["reason"]
        assert rows["001"]["scalable"] and rows["003"]["scalable"]
    finally:
        stop_tracker()


def test_unusable_state_path_is_one_clear_error(ray_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = run(["-m", "actors.main", "--state", str(blocker / "state.parquet")], ray_env)
    assert out.returncode == 2  # a user's mistake, refused before anything starts
    assert "error: --state: cannot keep the state in" in out.stderr and "a-file is not a folder" in out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(ValueError):  # and no tracker was left behind
        ray.get_actor("work_tracker", namespace="ray-autoresearch")


@pytest.mark.slow
def test_main_job_dry_run_starts_local_ray_on_a_laptop(tmp_path):
    """The README's main command path: nothing running, so it starts local Ray."""
    shutil.copytree(pristine_examples(), tmp_path / "examples")
    out = run(["-m", "actors.main", "--scalers", "2", "--dry-run", "--state", str(tmp_path / "s.parquet"),
               "--experiments", str(tmp_path / "examples/experiments"), "--code", str(tmp_path / "examples/code")],
              _offline_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "starting a local one" in out.stderr
    assert "planned 3" in out.stdout
    assert sorted(p.name for p in (tmp_path / "examples/code").iterdir()) == ["006_scaled"]  # a dry run writes nothing
