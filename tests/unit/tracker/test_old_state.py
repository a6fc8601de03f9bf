"""Importing the old tracker's active_work.json: the mapping of every kind of
entry, new fencing tokens, records of our own kept, twice changes nothing,
--dry-run writes nothing, bad input is one error line. Real Parquet files, no Ray."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime

import pytest

from actors.tracker.cli import main
from actors.tracker.old_state import OldStateError, plan_import, read_old_state
from actors.tracker.rules import Claim, LeaseState, LeaseTable
from actors.tracker.store import SnapshotStore

NOW = time.time()


def iso(minutes_ago: float) -> str:
    """An ISO local time without a zone, as the old tracker wrote them."""
    return datetime.fromtimestamp(NOW - minutes_ago * 60).strftime("%Y-%m-%dT%H:%M:%S")


def old_state() -> dict:
    return {
        "active_work": {
            "exp-021-scaling": {"agent_id": "agent-1", "proposal_id": "021-gated", "started_at": iso(40),
                                "last_heartbeat": iso(10), "status": "in_progress"},
            "exp-022-scaling": {"agent_id": "agent-2", "proposal_id": "022-diff-attn", "started_at": iso(300),
                                "last_heartbeat": iso(120), "status": "deploying"},
            "027-token-shift": {"agent_id": "agent-3", "proposal_id": "027-token-shift", "started_at": iso(20),
                                "last_heartbeat": iso(5), "status": "awaiting_results"},
        },
        "history": [
            {"id": "exp-023-scaling", "agent_id": "agent-1", "proposal_id": "023", "started_at": iso(3000),
             "last_heartbeat": iso(2900), "status": "completed", "completed_at": iso(2890)},
            {"id": "exp-024-scaling", "agent_id": "agent-2", "proposal_id": "024", "started_at": iso(3000),
             "last_heartbeat": iso(2950), "status": "completed", "completed_at": iso(2940)},
            {"id": "exp-025-scaling", "agent_id": "agent-2", "started_at": iso(2000), "last_heartbeat": iso(1990),
             "status": "stale", "staled_at": iso(1900)},
            {"id": "exp-025-scaling", "agent_id": "agent-3", "started_at": iso(1000), "last_heartbeat": iso(990),
             "status": "failed", "completed_at": iso(985)},
            {"id": "exp-026-scaling", "agent_id": "agent-1", "started_at": iso(500), "last_heartbeat": iso(480),
             "status": "abandoned", "completed_at": iso(479)},
            {"id": "028-rmsnorm-free", "agent_id": "agent-1", "started_at": iso(700), "last_heartbeat": iso(650),
             "status": "completed", "completed_at": iso(640)},
        ],
    }


@pytest.fixture
def research(tmp_path):
    root = tmp_path / "research"
    (root / "experiments").mkdir(parents=True)
    (root / "code" / "023_scaled").mkdir(parents=True)
    (root / "code" / "023_scaled" / "results.json").write_text('{"val_loss": 2.61}')
    path = root / "experiments" / "active_work.json"
    path.write_text(json.dumps(old_state(), indent=2))
    return path


def test_every_kind_of_entry_is_mapped(research):
    plan = plan_import(read_old_state(research), [], 1, source=research, code_dir=research.parent.parent / "code",
                       now=NOW)
    got = {c.work_id: c for c in plan.write}
    assert sorted(got) == ["proposal:027-token-shift", "proposal:028-rmsnorm-free", "scale:021", "scale:022",
                           "scale:023", "scale:024", "scale:025", "scale:026"]
    live = got["scale:021"]  # heartbeated 10 minutes ago: held until its TTL runs out
    assert live.state is LeaseState.CLAIMED and live.owner == "agent-1@old-tracker"
    assert live.expires_at == pytest.approx(NOW - 600 + 1800, abs=2)
    assert got["scale:022"].state is LeaseState.EVICTED and "stale" in plan.reasons["scale:022"]
    assert got["scale:023"].state is LeaseState.DONE  # completed, and code/023_scaled/results.json exists
    assert got["scale:024"].state is LeaseState.ABANDONED and "does not exist" in plan.reasons["scale:024"]
    assert got["scale:025"].state is LeaseState.FAILED and got["scale:025"].attempts == 2
    assert got["scale:025"].result["history"][0]["status"] == "stale"  # the older entry, kept for the record
    assert got["scale:026"].state is LeaseState.ABANDONED
    assert got["proposal:027-token-shift"].state is LeaseState.CLAIMED
    assert got["proposal:028-rmsnorm-free"].state is LeaseState.DONE
    assert sorted(c.token for c in plan.write) == list(range(1, 9)) and plan.next_token == 9
    assert all(c.result["imported_from"] == str(research.resolve()) for c in plan.write)

    # What the lease rules make of them: claimable ones are granted with a newer token, the rest refused.
    table = LeaseTable(records=plan.write, next_token=plan.next_token, clock=lambda: NOW)
    for work_id in ("scale:022", "scale:024", "scale:025", "scale:026"):
        grant = table.claim(work_id, "scaler-1")
        assert grant is not None and grant.token >= 9, work_id
    for work_id in ("scale:021", "scale:023", "proposal:028-rmsnorm-free"):
        assert table.claim(work_id, "scaler-1") is None, work_id


def _run(*argv, capsys):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_twice_changes_nothing_and_dry_run_writes_nothing(research, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "local")  # `list` below must not look for a cluster
    state = tmp_path / "state" / "tracker.parquet"
    code, out, _ = _run("import", str(research), "--state", str(state), "--dry-run", capsys=capsys)
    assert code == 0 and "would write 8 claim(s)" in out and not state.exists()

    code, out, _ = _run("import", str(research), "--state", str(state), capsys=capsys)
    assert code == 0 and "wrote 8 claim(s), 0 unchanged" in out
    first = SnapshotStore(state).load(set_aside=False)
    assert len(first.records) == 8 and first.next_token == 9
    digest = _digest(state)

    code, out, _ = _run("import", str(research), "--state", str(state), capsys=capsys)
    assert code == 0 and "wrote 0 claim(s), 8 unchanged" in out
    assert _digest(state) == digest and not state.with_name(state.name + ".prev").exists()

    # `list` shows the imported claims from the state file.
    code, out, _ = _run("list", "--state", str(state), "--json", capsys=capsys)
    listed = {json.loads(line)["work_id"]: json.loads(line) for line in out.splitlines()}
    assert listed["scale:024"]["state"] == "abandoned" and listed["scale:021"]["state"] == "claimed"


def test_records_of_our_own_are_kept_and_tokens_continue_from_the_table(research, tmp_path, capsys):
    state = tmp_path / "tracker.parquet"
    ours = Claim(work_id="scale:021", owner="scaler-0@actor:ray-autoresearch/scaler-0-abc", token=41,
                 state=LeaseState.DONE, claimed_at=NOW - 99, expires_at=NOW + 1700, heartbeat_at=NOW - 50,
                 released_at=NOW - 40, result={"val_loss": 2.5})
    SnapshotStore(state).write([ours], 42)
    code, out, _ = _run("import", str(research), "--state", str(state), capsys=capsys)
    assert code == 0 and "wrote 7 claim(s), 0 unchanged, 1 kept" in out
    loaded = SnapshotStore(state).load(set_aside=False)
    by_id = {c.work_id: c for c in loaded.records}
    assert by_id["scale:021"] == ours
    assert sorted(c.token for c in loaded.records if c.work_id != "scale:021") == list(range(42, 49))
    assert loaded.next_token == 49


def test_a_changed_file_updates_what_it_imported_before(research, tmp_path, capsys):
    state = tmp_path / "tracker.parquet"
    assert _run("import", str(research), "--state", str(state), capsys=capsys)[0] == 0
    data = json.loads(research.read_text())
    data["history"].append({"id": "exp-026-scaling", "agent_id": "agent-2", "started_at": iso(100),
                            "last_heartbeat": iso(90), "status": "failed", "completed_at": iso(89)})
    research.write_text(json.dumps(data))
    code, out, _ = _run("import", str(research), "--state", str(state), capsys=capsys)
    assert code == 0 and "wrote 1 claim(s), 7 unchanged" in out
    rec = {c.work_id: c for c in SnapshotStore(state).load(set_aside=False).records}["scale:026"]
    assert rec.state is LeaseState.FAILED and rec.attempts == 2 and rec.token == 9


@pytest.mark.parametrize("content, words", [
    ("{not json", "is not valid JSON (line 1"),
    ('{"tasks": []}', "is not an old tracker state"),
    ('{"active_work": {"exp-001-scaling": {"status": "in_progress", "started_at": "2025-01-01T00:00:00"}}}',
     "active_work['exp-001-scaling'] (exp-001-scaling): agent_id is missing"),
    ('{"history": [{"id": "x", "agent_id": "a", "status": "failed", "started_at": "yesterday"}]}',
     "history[0] (x).started_at: 'yesterday' is not a time"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, content, words):
    bad = tmp_path / "active_work.json"
    bad.write_text(content)
    state = tmp_path / "tracker.parquet"
    code, out, err = _run("import", str(bad), "--state", str(state), capsys=capsys)
    assert code == 2 and err.startswith("error: ") and words in err and len(err.strip().splitlines()) == 1
    assert out == "" and not state.exists()
    with pytest.raises(OldStateError):
        read_old_state(bad)


def test_a_state_file_in_use_is_refused(research, tmp_path, capsys):
    state = tmp_path / "tracker.parquet"
    holder = SnapshotStore(state)
    holder.lock()  # as a running tracker holds it
    try:
        code, _, err = _run("import", str(research), "--state", str(state), capsys=capsys)
    finally:
        holder.close()
    assert code == 1 and "in use by a running work tracker" in err and "import into another --state" in err
    assert not state.exists()
