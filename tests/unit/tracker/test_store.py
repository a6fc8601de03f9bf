"""Parquet snapshots: atomic writes, fallback from corruption, the writer lock."""

import logging

import pyarrow.parquet as pq
import pytest

from actors.tracker.store import SnapshotStore, StateLockedError, token_floor_now
from actors.tracker.rules import LeaseTable
from tests.support import FakeClock


def _table_with(n: int) -> LeaseTable:
    t = LeaseTable(ttl_s=60, clock=FakeClock())
    for i in range(n):
        t.claim(f"w{i}", f"agent{i % 3}", request_id=f"r{i}")
    return t


def test_round_trip_keeps_every_field(tmp_path):
    t = _table_with(3)
    c = t.get("w1")
    t.release("w1", c.token, "failed", {"reason": "nan loss", "step": 12})
    store = SnapshotStore(tmp_path / "s.parquet")
    store.write(*t.snapshot())
    loaded = store.load()
    assert loaded.source == "current"
    assert sorted(loaded.records, key=lambda r: r.work_id) == t.list_claims()
    assert loaded.next_token == t.next_token
    # It is a real Parquet file any tool can read.
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 3


def test_each_write_keeps_the_previous_snapshot(tmp_path):
    store = SnapshotStore(tmp_path / "s.parquet")
    t = _table_with(1)
    store.write(*t.snapshot())
    t.claim("second", "b")
    store.write(*t.snapshot())
    assert pq.read_table(store.prev_path).column("work_id").to_pylist() == ["w0"]
    assert sorted(pq.read_table(store.path).column("work_id").to_pylist()) == ["second", "w0"]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_snapshot_falls_back_to_previous_with_warning(tmp_path, caplog, damage):
    store = SnapshotStore(tmp_path / "s.parquet")
    t = _table_with(2)
    store.write(*t.snapshot())
    t.claim("newest", "c")
    store.write(*t.snapshot())
    data = store.path.read_bytes()
    store.path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 50, "empty": b""}[damage])
    with caplog.at_level(logging.WARNING):
        loaded = SnapshotStore(store.path).load()
    assert loaded.source == "previous"
    assert {r.work_id for r in loaded.records} == {"w0", "w1"}
    assert any("unreadable" in m for m in caplog.messages)
    # The previous snapshot may lack the newest grants, so tokens jump past them.
    assert loaded.next_token >= token_floor_now() - 10_000_000 > t.next_token
    assert list(tmp_path.glob("s.parquet.corrupt-*")), "the bad file is kept as evidence"


def test_both_snapshots_corrupt_starts_empty_with_a_token_floor(tmp_path):
    store = SnapshotStore(tmp_path / "s.parquet")
    store.path.write_bytes(b"not parquet")
    store.prev_path.write_bytes(b"not parquet either")
    before = token_floor_now()
    loaded = store.load()
    assert loaded.source == "recovered" and loaded.records == []
    assert loaded.next_token >= before


def test_a_foreign_parquet_file_is_not_taken_for_state(tmp_path):
    import pyarrow as pa

    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    assert SnapshotStore(path).load().source == "recovered"


def test_readers_can_load_without_moving_files(tmp_path):
    store = SnapshotStore(tmp_path / "s.parquet")
    store.path.write_bytes(b"garbage")
    SnapshotStore(store.path).load(set_aside=False)
    assert store.path.read_bytes() == b"garbage"


def test_one_writer_per_state_file(tmp_path):
    a = SnapshotStore(tmp_path / "s.parquet")
    a.lock()
    with pytest.raises(StateLockedError, match="in use by a running work tracker"):
        SnapshotStore(tmp_path / "s.parquet").lock()
    a.close()
    b = SnapshotStore(tmp_path / "s.parquet")
    b.lock()
    b.close()


# -- the copy in the shared storage -------------------------------------------------------------


def _copy(tmp_path, name="s.parquet"):
    from actors.tracker.store import SnapshotCopy
    from train.storage import parse_storage

    return SnapshotCopy(parse_storage(tmp_path / "bucket"), name)


def test_a_store_without_local_state_starts_from_the_copy_with_tokens_above_any_issued(tmp_path):
    t = _table_with(3)
    store = SnapshotStore(tmp_path / "head/s.parquet")
    store.write(*t.snapshot())
    copy = _copy(tmp_path)
    copy.upload(store.path)
    t.claim("lost", "agent9")  # granted after the last copy: lost with the head node
    store.write(*t.snapshot())
    (tmp_path / "head/s.parquet").unlink()
    (tmp_path / "head/s.parquet.prev").unlink()

    loaded = SnapshotStore(tmp_path / "head/s.parquet").load(copy=copy)
    assert loaded.source == "storage"
    assert sorted(r.work_id for r in loaded.records) == ["w0", "w1", "w2"]
    assert loaded.next_token > t.next_token and loaded.next_token >= token_floor_now() - 10_000_000
    assert any("restored from the copy" in w for w in loaded.warnings)


def test_local_state_wins_over_the_copy(tmp_path):
    store = SnapshotStore(tmp_path / "s.parquet")
    store.write(*_table_with(1).snapshot())
    copy = _copy(tmp_path)
    copy.upload(store.path)
    store.write(*_table_with(2).snapshot())
    loaded = store.load(copy=copy)
    assert loaded.source == "current" and len(loaded.records) == 2


def test_no_state_anywhere_or_an_unreadable_copy_starts_empty_at_the_token_floor(tmp_path):
    floor = token_floor_now()
    empty = SnapshotStore(tmp_path / "s.parquet").load(copy=_copy(tmp_path))
    assert empty.source == "empty" and empty.records == [] and empty.next_token >= floor
    copy = _copy(tmp_path)
    (tmp_path / "bucket/tracker").mkdir(parents=True)
    (tmp_path / "bucket/tracker/s.parquet").write_bytes(b"PAR1 torn")
    broken = SnapshotStore(tmp_path / "s.parquet").load(copy=copy)
    assert broken.source == "recovered" and broken.next_token >= floor
    assert any("could not be read" in w for w in broken.warnings)
