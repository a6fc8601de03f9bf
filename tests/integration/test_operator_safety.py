"""Operator safety: Ctrl-C, restarts, other Ray instances and bad input never strand work.

One test per case of the issue, named so that the list reads as the issue.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ray

from actors.tracker.client import TrackerClient
from actors.tracker.owners import process_owner
from actors.tracker.rules import LeaseState

ROOT = Path(__file__).resolve().parents[2]


def _cli(args: list[str], env: dict | None = None, timeout: float = 120, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or _no_cluster_env(), capture_output=True,
                          text=True, timeout=timeout)


def _no_cluster_env() -> dict:
    """A user's shell: no RAY_ADDRESS, so the commands follow Ray's own rule."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


# -- 2. dead owners ------------------------------------------------------------------------


@ray.remote(num_cpus=0)
class _Holder:
    """An agent that claims work and then dies (as agents did when their Ray went away)."""

    def claim(self, tracker, work_id: str, namespace: str) -> int:
        claim = TrackerClient(tracker).claim(work_id, process_owner("holder", namespace))
        return claim.token


def test_a_dead_owner_loses_its_claim_at_once_and_restoring_never_refreshes_it(make_tracker, tmp_path):
    from actors.tracker.actor import connect_tracker, stop_tracker

    state = tmp_path / "state.parquet"
    tracker = make_tracker(state, ttl_s=1800)  # the real TTL: only the owner's death can free the work
    client = TrackerClient(tracker)
    ns = make_tracker.namespace
    holders = [_Holder.options(name=f"holder-{i}", namespace=ns).remote() for i in range(3)]
    for i, h in enumerate(holders):
        ray.get(h.claim.remote(tracker, f"scale:00{i}", ns))
    assert {c.work_id for c in client.list_claims("claimed")} == {"scale:000", "scale:001", "scale:002"}

    ray.kill(holders[0])
    _wait_until(lambda: not _alive(f"holder-0", ns))
    # The next claimer gets the work at once, not after 30 minutes.
    grant = client.claim("scale:000", "scaler-b")
    assert grant is not None and grant.attempts == 2
    # Progress lines never list a dead agent as working.
    ray.kill(holders[1])
    _wait_until(lambda: not _alive("holder-1", ns))
    working = {c.work_id: c.owner for c in client.list_claims("claimed")}
    assert "scale:001" not in working and working["scale:002"].startswith("holder@actor:")
    assert client.get("scale:001").result == {"reason": "owner gone"}

    # Restart the tracker while holder-2 lives, then kill holder-2 while it is down:
    # the living owner's lease survives the first restart, the dead one's does not survive the second.
    stop_tracker(namespace=ns)
    tracker = connect_tracker(state, namespace=ns)
    assert TrackerClient(tracker).get("scale:002").live
    stop_tracker(namespace=ns)
    ray.kill(holders[2])
    _wait_until(lambda: not _alive("holder-2", ns))
    tracker = connect_tracker(state, namespace=ns)
    rec = TrackerClient(tracker).get("scale:002")
    assert rec.state is LeaseState.EVICTED and rec.result == {"reason": "owner gone"}


def _alive(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
        return True
    except ValueError:
        return False


def _wait_until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# -- 3. which Ray ----------------------------------------------------------------------------


PRIVATE_PROGRAM = textwrap.dedent("""
    import sys, time, ray
    from actors.tracker.actor import connect_tracker
    ray.init(address="local", num_cpus=1, include_dashboard=False)   # a private instance, not `ray start`
    tracker = connect_tracker(sys.argv[1])
    ray.get(tracker.claim.remote("private:work", "someone-else", "r1"))
    print("ready", flush=True)
    time.sleep(120)
""")


@pytest.mark.slow
def test_commands_never_join_another_programs_private_ray(tmp_path):
    program = subprocess.Popen([sys.executable, "-c", PRIVATE_PROGRAM, str(tmp_path / "private.parquet")],
                               cwd=ROOT, env=_no_cluster_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        assert program.stdout.readline().strip() == "ready"
        mine = tmp_path / "mine.parquet"
        out = _cli(["-m", "actors.work_tracker", "list", "--state", str(mine)])
        assert out.returncode == 0, out.stderr
        # It read the user's state file, not the other program's tracker.
        assert "private:work" not in out.stdout and str(mine) in out.stdout
        out = _cli(["-m", "actors.work_tracker", "clean", "--all"], env={**_no_cluster_env(),
                                                                          "RAY_AUTORESEARCH_STATE": str(mine)})
        assert out.returncode == 0 and "does not exist" in out.stdout
        # ... and the other program's lease is untouched: `clean --all` never reached its tracker.
        from actors.tracker.store import SnapshotStore

        theirs = SnapshotStore(tmp_path / "private.parquet").load(set_aside=False).records
        assert [(c.work_id, c.state) for c in theirs] == [("private:work", LeaseState.CLAIMED)]
    finally:
        program.kill()
        program.wait()


# -- 4. validate before starting Ray ----------------------------------------------------------


def _repo_state(root: Path) -> dict:
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout  # noqa: E731
    exclude = root / ".git" / "info" / "exclude"
    return {"branches": git("branch", "--list"), "head": git("rev-parse", "HEAD"), "status": git("status", "--short"),
            "exclude": exclude.read_text() if exclude.exists() else None,
            "files": sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".git" not in p.parts)}


def test_autoresearch_refuses_user_mistakes_before_ray_and_leaves_the_repo_as_it_was(tmp_path):
    from tests.support import make_golf_repo

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train_gpt.py").write_text("print('hi')\n")
    repo = make_golf_repo(tmp_path / "repo")
    root = Path(repo.working_tree_dir)
    before = _repo_state(root)
    cases = [
        (["--repo", str(plain)], "is not a git repository"),
        (["--repo", str(root), "--file", "missing.py"], "missing.py is not in"),
        (["--repo", str(root / "nope")], "is not a folder"),
    ]
    for args, message in cases:
        out = _cli(["-m", "actors.autoresearch", "run", *args, "--iterations", "1", "--tag", "t1"], timeout=60)
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and "\x1b[" not in out.stderr
        assert "Ray instance" not in out.stderr  # refused before Ray started
        assert len(out.stderr.strip().splitlines()) == 1
    assert _repo_state(root) == before  # no branch, no .autoresearch/, no edited exclude file
    (root / "train_gpt.py").write_text((root / "train_gpt.py").read_text() + "\n# an edit in progress\n")
    dirty = _repo_state(root)
    out = _cli(["-m", "actors.autoresearch", "run", "--repo", str(root), "--iterations", "1"], timeout=60)
    assert out.returncode == 2 and "uncommitted changes" in out.stderr and "Ray instance" not in out.stderr
    assert _repo_state(root) == dirty


# -- 5. --state ----------------------------------------------------------------------------------


def test_state_that_is_a_folder_or_not_our_parquet_is_refused_and_never_renamed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "my_results"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    foreign = tmp_path / "table.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
                for p in (folder, folder / "keep.txt", notes, foreign)}
    for state, says in ((folder, "is a folder"), (notes, "not Parquet"), (foreign, "not a work-tracker state")):
        for args in (["-m", "actors.main", "--no-autoresearch", "--state", str(state)],
                     ["-m", "actors.work_tracker", "clean", "--state", str(state)],
                     ["-m", "actors.work_tracker", "list", "--state", str(state)]):
            out = _cli(args, timeout=60)
            assert out.returncode == 2 and says in out.stderr, (args, out.stderr)
            assert "Traceback" not in out.stderr and "Ray instance" not in out.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in snapshot} == snapshot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_results", "notes.txt", "table.parquet"]  # no *.corrupt-*


def test_a_state_we_cannot_write_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = _cli(["-m", "actors.main", "--no-autoresearch", "--state", str(blocker / "sub" / "s.parquet")], timeout=60)
    assert out.returncode == 2 and "is not a folder" in out.stderr and "Traceback" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if "error" in line]) == 1


# -- 1. Ctrl-C and SIGTERM -----------------------------------------------------------------------


def _start_main(examples: Path, state: Path, namespace: str, ray_env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "actors.main", "--scalers", "2", "--no-autoresearch", "--experiments",
         str(examples / "experiments"), "--code", str(examples / "code"), "--state", str(state),
         "--namespace", namespace, *extra],
        cwd=ROOT, env=ray_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(code: Path, timeout: float = 240) -> None:
    """Until an agent's training job has started (its run folder exists)."""
    _wait_until(lambda: any(code.glob("*_scaled/run")), timeout)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_releases_every_claim_and_sets_half_written_folders_aside(sig, ray_env, tmp_path):
    import shutil
    import signal as signals
    import uuid

    from actors.tracker.actor import stop_tracker
    from tests.support import pristine_examples

    examples = tmp_path / "examples"
    shutil.copytree(pristine_examples(), examples)
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state.parquet"
    try:
        proc = _start_main(examples, state, namespace, ray_env)
        _wait_for_training(examples / "code")
        t0 = time.monotonic()
        proc.send_signal(getattr(signals, sig))
        out, err = proc.communicate(timeout=120)
        stopped_in = time.monotonic() - t0
        assert proc.returncode == 128 + getattr(signals, sig), err[-3000:]
        assert "Traceback" not in err and f"stopped by {sig}" in err
        tracker = ray.get_actor("work_tracker", namespace=namespace)
        claims = ray.get(tracker.list_claims.remote())
        assert not [c.work_id for c in claims if c.live]  # nothing held for a TTL
        abandoned = [c for c in claims if c.state is LeaseState.ABANDONED]
        assert abandoned and all("stopped by the operator" in c.result["reason"] for c in abandoned)
        # Our unfinished folders are set aside, never left half-written in place nor deleted.
        for c in abandoned:
            mve = c.work_id.split(":")[1]
            assert not (examples / f"code/{mve}_scaled").exists()
        # at least the one that was training had written its folder: it is set aside, with its logs
        aside = list((examples / "code").glob(".*_scaled.stopped-*"))
        assert aside and all((a / "run").is_dir() or (a / "train.py").is_file() for a in aside)
        print(f"{sig}: stopped in {stopped_in:.1f}s")  # for the record (-s); not asserted
        # The next run takes everything up: nothing is claimed, so every scalable MVE is planned again.
        rerun = _cli(["-m", "actors.main", "--scalers", "2", "--no-autoresearch", "--dry-run", "--experiments",
                      str(examples / "experiments"), "--code", str(examples / "code"), "--state", str(state),
                      "--namespace", namespace], env=ray_env, timeout=240)
        assert rerun.returncode == 0 and "planned 3" in rerun.stdout, rerun.stderr[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_tracker(namespace=namespace)
