"""Durable Parquet snapshots of the lease table.

A write is atomic and keeps the previous snapshot: write `X.tmp`, fsync it,
hard-link the current `X` to `X.prev`, rename `X.tmp` over `X`, fsync the folder.
At every instant `X` is a complete snapshot (old or new), and `X.prev` is the one
before it.

Loading falls back from a torn or corrupt `X` to `X.prev` with a warning, and
from two bad files to an empty table, never to a crash loop. Because a fallback
may have lost the newest grants, the fencing counter then restarts from the
wall clock in microseconds: tokens are issued far slower than one per
microsecond, so that floor lies above any token ever handed out from this file.

One process at a time may write a state file: `lock()` takes an exclusive
`flock` on `X.lock`, which the kernel releases when the process dies.

With a storage (train.storage: s3://, gs://, a shared folder), the actor also
keeps a copy of the snapshot there (`SnapshotCopy`, uploaded a few seconds
behind). A store with no local snapshot at all (a new head node) loads that
copy; it may lack the last seconds of changes, so the fencing counter restarts
from the same wall-clock floor, and no token is ever handed out twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from actors.tracker.rules import Claim, LeaseState
from train.storage import Storage, read_bytes, write_bytes

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"

_SCHEMA = pa.schema(
    [
        ("work_id", pa.string()),
        ("owner", pa.string()),
        ("token", pa.int64()),
        ("state", pa.string()),
        ("claimed_at", pa.float64()),
        ("expires_at", pa.float64()),
        ("heartbeat_at", pa.float64()),
        ("released_at", pa.float64()),
        ("attempts", pa.int64()),
        ("request_id", pa.string()),
        ("result", pa.string()),  # JSON text
    ]
)


class StateLockedError(RuntimeError):
    """Another live process is writing this state file."""


class StatePathError(ValueError):
    """The state path cannot be ours: a folder, someone else's file, or not writable."""


PARQUET_MAGIC = b"PAR1"


def _is_our_snapshot(path: Path) -> bool:
    try:
        return (pq.read_schema(path).metadata or {}).get(b"ray_autoresearch.format") is not None
    except Exception:  # noqa: BLE001 - missing or unreadable
        return False


def check_state_path(path: str | os.PathLike, writable: bool = True) -> Path:
    """Refuse a state path that is not (and cannot become) our snapshot, touching nothing.

    A folder, a file that is not Parquet, or a Parquet file without our format
    marker belongs to the user: it is never renamed or overwritten. A Parquet
    file of ours that cannot be read is a damaged snapshot, which `load` falls
    back from (keeping it aside as evidence). With `writable`, the folder must be
    creatable and writable, and an existing file writable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise StatePathError(f"{path} is a folder; the state is one file, e.g. {path / 'work_tracker.parquet'}")
    if path.exists():
        if not path.is_file():
            raise StatePathError(f"{path} is not a regular file")
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as exc:
            raise StatePathError(f"cannot read {path}: {exc.strerror or exc}") from None
        # A damaged snapshot of ours sits beside our previous one, which load() falls back to.
        ours_before = head != PARQUET_MAGIC and _is_our_snapshot(Path(f"{path}.prev"))
        if head != PARQUET_MAGIC and not ours_before:
            raise StatePathError(f"{path} is not a work-tracker state file (not Parquet); it is left as it is: "
                                 "pass another --state")
        if head == PARQUET_MAGIC:
            try:
                meta = pq.read_schema(path).metadata or {}
            except Exception:  # noqa: BLE001 - a damaged snapshot: load() falls back from it
                meta = None
            if meta is not None and meta.get(b"ray_autoresearch.format") is None:
                raise StatePathError(f"{path} is a Parquet file but not a work-tracker state file; it is left "
                                     "as it is: pass another --state")
        if writable and not os.access(path, os.W_OK):
            raise StatePathError(f"{path} is not writable")
    if writable:
        folder = path.parent
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise StatePathError(f"cannot keep the state in {folder}: {existing} is not a folder")
        if not os.access(existing, os.W_OK):
            raise StatePathError(f"cannot keep the state in {folder}: {existing} is not writable")
    return path.resolve()


@dataclass
class LoadedState:
    records: list[Claim]
    next_token: int
    source: str  # "current", "previous", "storage" (the copy), "empty" (no file yet) or "recovered"
    warnings: list[str] = field(default_factory=list)


def token_floor_now() -> int:
    return int(time.time() * 1_000_000)


def to_table(records: list[Claim], next_token: int) -> pa.Table:
    cols = {name: [] for name in _SCHEMA.names}
    for r in records:
        cols["work_id"].append(r.work_id)
        cols["owner"].append(r.owner)
        cols["token"].append(r.token)
        cols["state"].append(r.state.value)
        cols["claimed_at"].append(r.claimed_at)
        cols["expires_at"].append(r.expires_at)
        cols["heartbeat_at"].append(r.heartbeat_at)
        cols["released_at"].append(r.released_at)
        cols["attempts"].append(r.attempts)
        cols["request_id"].append(r.request_id)
        cols["result"].append(None if r.result is None else json.dumps(r.result))
    return pa.table(cols, schema=_SCHEMA.with_metadata(_metadata(next_token)))


def _metadata(next_token: int) -> dict[bytes, bytes]:
    return {
        b"ray_autoresearch.format": FORMAT_VERSION.encode(),
        b"ray_autoresearch.next_token": str(next_token).encode(),
    }


def from_table(table: pa.Table) -> tuple[list[Claim], int]:
    meta = table.schema.metadata or {}
    if meta.get(b"ray_autoresearch.format") != FORMAT_VERSION.encode():
        raise ValueError("not a work-tracker snapshot (format marker missing)")
    next_token = int(meta[b"ray_autoresearch.next_token"])
    records = []
    for row in table.to_pylist():
        row["result"] = None if row["result"] is None else json.loads(row["result"])
        records.append(Claim(**row))
    return records, next_token


def read_snapshot(path: Path) -> tuple[list[Claim], int]:
    return from_table(pq.read_table(path))


class SnapshotCopy:
    """The copy of a state file in the storage: STORAGE/tracker/<state file name>.
    One object, replaced whole on each upload (an object store's PUT; a temporary
    file renamed on a shared folder), so a reader sees one complete snapshot."""

    def __init__(self, storage: Storage, name: str):
        self.location = storage.join("tracker", name)

    @property
    def display(self) -> str:
        return self.location.display

    def upload(self, path: Path) -> int:
        data = path.read_bytes()  # the file is replaced by rename, never rewritten: this is one snapshot
        write_bytes(self.location, data)
        return len(data)

    def download(self) -> tuple[list[Claim], int] | None:
        data = read_bytes(self.location)
        return None if data is None else from_table(pq.read_table(pa.BufferReader(data)))


class SnapshotStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self.prev_path = self.path.with_name(self.path.name + ".prev")
        self._tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._lock_fd: int | None = None
        self.last_write_bytes = 0
        # `done` is terminal, so a done record never changes again: keep those
        # rows converted, and turn only the others into Arrow on each write.
        self._sealed = to_table([], 0)
        self._sealed_ids: set[str] = set()

    # -- single-writer lock --------------------------------------------------

    def lock(self, wait_s: float = 0.0) -> None:
        """Take the writer lock, waiting up to `wait_s` for a dying holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock_fd = fd
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StateLockedError(
                        f"{self.path} is in use by a running work tracker; "
                        "talk to it through Ray or stop it first"
                    ) from None
                time.sleep(0.1)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    # -- write ---------------------------------------------------------------

    def write(self, records: list[Claim], next_token: int) -> int:
        """Write one snapshot durably; return its size in bytes."""
        table = self._assemble(records, next_token)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._tmp_path, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        if self.path.exists():
            prev_tmp = self.path.with_name(self.path.name + ".prev.tmp")
            prev_tmp.unlink(missing_ok=True)
            os.link(self.path, prev_tmp)
            os.replace(prev_tmp, self.prev_path)
        os.replace(self._tmp_path, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.last_write_bytes = size
        return size

    def _assemble(self, records: list[Claim], next_token: int) -> pa.Table:
        newly_done = [r for r in records if r.state is LeaseState.DONE and r.work_id not in self._sealed_ids]
        if newly_done:
            self._sealed = pa.concat_tables([self._sealed, to_table(newly_done, 0)])
            self._sealed_ids.update(r.work_id for r in newly_done)
            if self._sealed.column(0).num_chunks > 32:  # many tiny chunks write slowly
                self._sealed = self._sealed.combine_chunks()
        rest = [r for r in records if r.work_id not in self._sealed_ids]
        if len(self._sealed_ids) + len(rest) != len(records):  # a record left the table
            self._sealed, self._sealed_ids = to_table([], 0), set()
            return to_table(records, next_token)
        table = pa.concat_tables([self._sealed, to_table(rest, 0)])
        return table.replace_schema_metadata(_metadata(next_token))

    # -- load ----------------------------------------------------------------

    def load(self, set_aside: bool = True, copy: SnapshotCopy | None = None) -> LoadedState:
        """Read the newest good snapshot. With `set_aside`, a bad file is renamed
        to `*.corrupt-<time>` so that the next write does not destroy evidence;
        readers that must not change anything pass False. With `copy`, the copy
        in the storage is what a store without any local snapshot starts from,
        and what it falls back to when both local files are unreadable."""
        warnings: list[str] = []
        if not self.path.exists() and not self.prev_path.exists():
            if copy is None:
                return LoadedState([], 1, "empty")
            restored = self._from_copy(copy, [f"no snapshot at {self.path}"])
            if restored is not None:
                return restored
            # Nothing here and nothing there: a first start, or a state lost before its
            # first copy was made. The floor lies above any token such a state issued.
            return LoadedState([], token_floor_now(), "empty")
        if self.path.exists():
            try:
                records, next_token = read_snapshot(self.path)
                return LoadedState(records, next_token, "current")
            except Exception as exc:  # torn write, bit rot, a stranger's file
                warnings.append(f"snapshot {self.path} is unreadable ({exc})")
                if set_aside:
                    self._quarantine(self.path)
        else:
            warnings.append(f"snapshot {self.path} is missing; trying {self.prev_path}")
        if self.prev_path.exists():
            try:
                records, next_token = read_snapshot(self.prev_path)
                warnings.append(f"restored from the previous snapshot {self.prev_path}")
                return self._recovered(records, next_token, "previous", warnings)
            except Exception as exc:
                warnings.append(f"previous snapshot {self.prev_path} is unreadable too ({exc})")
                if set_aside:
                    self._quarantine(self.prev_path)
        if copy is not None:
            restored = self._from_copy(copy, warnings)
            if restored is not None:
                return restored
        warnings.append("starting with an empty lease table")
        return self._recovered([], 1, "recovered", warnings)

    def _from_copy(self, copy: SnapshotCopy, warnings: list[str]) -> LoadedState | None:
        try:
            got = copy.download()
        except Exception as exc:  # noqa: BLE001 - unreachable or unreadable: start without it
            # The copy may hold tokens up to any value: only the floor keeps new ones unique.
            warnings += [f"the copy in {copy.display} could not be read ({type(exc).__name__}: {exc})",
                         "starting with an empty lease table"]
            return self._recovered([], 1, "recovered", warnings)
        if got is None:
            warnings.append(f"no copy in {copy.display} either")
            return None
        warnings.append(f"restored from the copy in {copy.display} (it may lack the last seconds of changes)")
        return self._recovered(*got, "storage", warnings)

    def _recovered(self, records, next_token, source, warnings) -> LoadedState:
        floor = token_floor_now()
        if next_token < floor:
            warnings.append(f"fencing tokens continue from {floor} (wall-clock floor)")
        state = LoadedState(records, max(next_token, floor), source, warnings)
        for w in warnings:
            logger.warning(w)
        return state

    def _quarantine(self, path: Path) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(path, aside)
        except OSError:  # read-only folder: leave it, the loader moves on anyway
            pass
