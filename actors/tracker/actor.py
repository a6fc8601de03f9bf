"""The WorkTracker: one named, detached Ray actor that leases out work.

The lease rules are in `actors.tracker.rules`; this module adds what makes them a
service: durability (every grant, release and eviction is in a Parquet snapshot
before the caller hears about it, with group commit so that many callers share
one fsync), a background sweep that evicts expired leases, race-free creation,
and a command line:

    python -m actors.work_tracker list [--state PATH] [--json]
    python -m actors.work_tracker clean [--state PATH] [--all]

Both talk to the running actor when a cluster is up, and to the Parquet file
directly when none is.

With a storage (`connect_tracker(storage=...)`, else $RAY_AUTORESEARCH_STORAGE),
every committed snapshot is also copied there, in the background and at most
every `copy_interval_s`, so a claim never waits for the network; a tracker that
starts without a local snapshot (its head node was lost) restores from that copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from actors.shared import metrics
from actors.tracker.owners import owner_is_gone
from actors.tracker.store import SnapshotCopy, SnapshotStore, StateLockedError, StatePathError, check_state_path
from actors.tracker.rules import DEFAULT_TTL_S, Claim, LeaseState, LeaseTable
from train.storage import StorageError, parse_storage, resolve_storage

logger = logging.getLogger(__name__)

NAMESPACE = "ray-autoresearch"
ACTOR_NAME = "work_tracker"
DEFAULT_SWEEP_INTERVAL_S = 60.0
# At most one upload of the snapshot to the storage this often: what a lost head
# node can take with it is the claims of the last few seconds.
DEFAULT_COPY_INTERVAL_S = 2.0
STATE_ENV = "RAY_AUTORESEARCH_STATE"


def default_state_path() -> Path:
    """Where the lease table lives unless told otherwise: on the head node, in
    the user's home, so it outlives `ray job submit` working directories."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".ray-autoresearch" / "work_tracker.parquet"


class WorkTracker:
    """The actor body. Methods are async: they run one at a time on the actor's
    event loop between awaits, which is what makes check-and-grant atomic."""

    def __init__(
        self,
        state_path: str,
        ttl_s: float = DEFAULT_TTL_S,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        storage: str | None = None,
        copy_interval_s: float = DEFAULT_COPY_INTERVAL_S,
    ):
        self.store = SnapshotStore(state_path)
        self.copy = SnapshotCopy(parse_storage(storage), self.store.path.name) if storage else None
        self.copy_interval_s = float(copy_interval_s)
        self.copies = 0
        self.copied_commits = 0  # every commit up to this one is in the storage's copy
        self.copy_error: str | None = None
        # A restarted actor may briefly overlap the old process's exit.
        self.store.lock(wait_s=30.0)
        loaded = self.store.load(copy=self.copy)
        self.loaded_from = loaded.source
        self.namespace = _my_namespace()
        live_before = sum(r.live for r in loaded.records)
        self.table = LeaseTable.restore(loaded.records, loaded.next_token, ttl_s=ttl_s, owner_gone=self._owner_gone)
        dead = live_before - sum(r.live for r in self.table.list_claims(LeaseState.CLAIMED))
        self.sweep_interval_s = float(sweep_interval_s)
        if loaded.source in ("previous", "recovered", "storage") or dead:
            # Make the recovered state the current snapshot straight away, with
            # its raised token floor, before any caller is answered.
            self.store.write(*self.table.snapshot())
        self._durable_version = self.table.version
        self._flush: asyncio.Task | None = None
        self.commits = 0
        self.started_at = time.time()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        self._copy_wanted = asyncio.Event()
        self._copier = None
        if self.copy is not None:
            self._copy_wanted.set()  # the state it starts with goes to the storage at once
            self._copier = asyncio.get_running_loop().create_task(self._copy_forever())
        live = len(self.table.list_claims(LeaseState.CLAIMED))
        metrics.set_claims_held(live)
        logger.info(
            "work tracker up: %s (%s), %d records, %d live leases refreshed, %d of dead owners evicted, "
            "next token %d%s", self.store.path, loaded.source, len(self.table), live, dead, self.table.next_token,
            f"; copied to {self.copy.display}" if self.copy else "",
        )

    # -- the lease API -------------------------------------------------------

    async def claim(self, work_id: str, owner: str, request_id: str | None = None) -> Claim | None:
        before = self.table.get(work_id)
        if before is not None and before.live and before.owner != owner:
            self._evict_dead(work_id)  # a dead holder's work is free at once, not after the TTL
            before = self.table.get(work_id)
        grant = self.table.claim(work_id, owner, request_id)
        _count_eviction(before, self.table.get(work_id))
        await self._commit()
        return grant

    async def heartbeat(self, work_id: str, token: int) -> bool:
        before = self.table.get(work_id)
        ok = self.table.heartbeat(work_id, token)
        _count_eviction(before, self.table.get(work_id))
        await self._commit()  # a no-op unless the heartbeat found the lease expired
        return ok

    async def release(
        self, work_id: str, token: int, outcome: str, result: dict[str, Any] | None = None
    ) -> bool:
        before = self.table.get(work_id)
        ok = self.table.release(work_id, token, outcome, result)
        _count_eviction(before, self.table.get(work_id))
        await self._commit()
        return ok

    async def evict_stale(self) -> list[Claim]:
        expired = self.table.evict_stale()
        metrics.record_claims_evicted(len(expired))
        evicted = expired + self._evict_dead()
        await self._commit()
        for rec in expired:
            logger.warning("evicted %s from %s (token %d): lease expired", rec.work_id, rec.owner, rec.token)
        return evicted

    async def clean(self, evict_live: bool = False) -> list[Claim]:
        """Evict expired leases, or with `evict_live` every live lease."""
        if not evict_live:
            return await self.evict_stale()
        evicted = self.table.evict_all_live()
        metrics.record_claims_evicted(len(evicted))
        await self._commit()
        return evicted

    async def list_claims(self, state: str | None = None) -> list[Claim]:
        if self._evict_dead():  # progress lines never show dead agents as working
            await self._commit()
        return self.table.list_claims(state)

    # -- owners that are certainly dead ---------------------------------------

    def _owner_gone(self, owner: str) -> bool:
        try:
            return owner_is_gone(owner, namespace=self.namespace)
        except Exception:  # noqa: BLE001 - when in doubt the owner lives, and the TTL decides
            logger.exception("could not check whether %s is alive", owner)
            return False

    def _evict_dead(self, work_id: str | None = None) -> list[Claim]:
        evicted = self.table.evict_owners(self._owner_gone, work_id)
        for rec in evicted:
            logger.warning("evicted %s from %s (token %d): its owner is gone", rec.work_id, rec.owner, rec.token)
        metrics.record_claims_evicted(len(evicted))
        return evicted

    async def get(self, work_id: str) -> Claim | None:
        return self.table.get(work_id)

    async def info(self) -> dict[str, Any]:
        import ray

        counts: dict[str, int] = {}
        for rec in self.table.list_claims():
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        return {
            "state_path": str(self.store.path),
            "ttl_s": self.table.ttl_s,
            "sweep_interval_s": self.sweep_interval_s,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "next_token": self.table.next_token,
            "records": len(self.table),
            "counts": counts,
            "commits": self.commits,
            "snapshot_bytes": self.store.last_write_bytes,
            "loaded_from": self.loaded_from,
            "started_at": self.started_at,
            "storage_copy": self.copy.display if self.copy else None,
            "copies": self.copies,
            "copied_commits": self.copied_commits,
            "copy_error": self.copy_error,
        }

    # -- durability: group commit -------------------------------------------

    async def _commit(self) -> None:
        """Return once every change made so far is on disk.

        Changes that arrive while a snapshot is being written wait for the next
        one, so one fsync covers a whole batch of callers (group commit). A
        failed write raises to every caller waiting on it; their changes stay in
        memory and go out with the next successful write, and a retried claim
        finds its grant through its request id.
        """
        target = self.table.version
        while self._durable_version < target:
            if self._flush is None or self._flush.done():
                self._flush = asyncio.get_running_loop().create_task(self._write_snapshot())
            await asyncio.shield(self._flush)

    async def _write_snapshot(self) -> None:
        try:
            version = self.table.version
            records, next_token = self.table.snapshot()
            await asyncio.to_thread(self.store.write, records, next_token)
            self._durable_version = version
            self.commits += 1
            self._copy_wanted.set()
            metrics.set_claims_held(sum(r.live for r in records))
        finally:
            self._flush = None

    async def _copy_forever(self) -> None:
        """Upload the newest local snapshot whenever commits were made, at most
        every copy_interval_s, beside the callers: nobody waits for it. A failed
        upload is retried on the next turn; the local snapshot is what callers
        were promised."""
        while True:
            await self._copy_wanted.wait()
            self._copy_wanted.clear()
            commits = self.commits  # the file on disk holds at least these
            if not self.store.path.exists():  # a new state: nothing committed yet
                continue
            try:
                await asyncio.to_thread(self.copy.upload, self.store.path)
                self.copies += 1
                self.copied_commits = commits
                if self.copy_error:
                    logger.info("the snapshot's copy in %s is up to date again", self.copy.display)
                self.copy_error = None
            except Exception as exc:  # noqa: BLE001 - the network may come back
                if self.copy_error is None:
                    logger.warning("could not copy the snapshot to %s: %s: %s", self.copy.display,
                                   type(exc).__name__, exc)
                self.copy_error = f"{type(exc).__name__}: {exc}"
                self._copy_wanted.set()
            await asyncio.sleep(self.copy_interval_s)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.evict_stale()
            except Exception:  # keep sweeping: a full disk may clear up
                logger.exception("lease sweep failed")


def _my_namespace() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().namespace
    except Exception:  # noqa: BLE001 - constructed outside Ray (tests of the body)
        return None


def _count_eviction(before: Claim | None, after: Claim | None) -> None:
    """A call that finds a lease expired before the sweep did evicts it (and a
    claim then re-grants the work): count it like the sweep's evictions."""
    if before is not None and before.live and after is not None and (
        after.state is LeaseState.EVICTED or after.token != before.token
    ):
        metrics.record_claims_evicted(1)


class TrackerConfigError(RuntimeError):
    """A tracker is running with settings that contradict the caller's."""


class TrackerStartError(RuntimeError):
    """The tracker actor failed while starting."""


def connect_tracker(
    state_path: str | os.PathLike | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
    create: bool = True,
    namespace: str = NAMESPACE,
    name: str = ACTOR_NAME,
    address: str | None = None,
    storage: str | None = None,
    copy_interval_s: float = DEFAULT_COPY_INTERVAL_S,
):
    """Return the handle of the cluster's WorkTracker, creating it if needed.

    Creation is race-free: Ray's `get_if_exists` makes the GCS the arbiter, so
    any number of processes calling this at once end up with one actor. Joins
    the running Ray cluster, or starts a local one, if Ray is not initialised.
    A tracker that is already running keeps the TTL and sweep interval it was
    started with; a different `state_path` is refused. `storage` (default
    $RAY_AUTORESEARCH_STORAGE): where a copy of the state is kept.
    """
    import ray

    from train.ray_session import init_ray

    path = Path(state_path).expanduser().resolve() if state_path else default_state_path()
    if create:
        _check_state_folder(path)  # before Ray starts: a user's mistake costs no start-up
        try:
            copy_to = resolve_storage(storage)
        except StorageError as exc:
            raise TrackerStartError(str(exc)) from None
    init_ray(address=address)
    if not create:
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:
            raise LookupError(f"no work tracker {namespace}/{name} is running") from None
    else:
        handle = (
            ray.remote(WorkTracker)
            .options(
                name=name,
                namespace=namespace,
                get_if_exists=True,
                lifetime="detached",
                num_cpus=0,
                # Pinned to the head node: it holds the state file, and it is the
                # one node the autoscaler never takes away.
                resources={"node:__internal_head__": 0.001},
                # Out of any placement group the caller runs in.
                scheduling_strategy="DEFAULT",
                max_restarts=-1,
                # A retried mutation could be applied twice: callers retry
                # themselves, with request ids, through TrackerClient.
                max_task_retries=0,
                max_concurrency=1000,
            )
            .remote(str(path), ttl_s, sweep_interval_s, copy_to.uri if copy_to else None, copy_interval_s)
        )
    try:
        info = ray.get(handle.info.remote())
    except ray.exceptions.RayActorError as exc:
        # It failed in __init__ (unwritable path, state locked by another
        # tracker): stop it, or Ray would restart it forever.
        ray.kill(handle, no_restart=True)
        raise TrackerStartError(f"the work tracker could not start on {path}: {_root_cause(exc)}") from None
    if state_path is not None and Path(info["state_path"]) != path:
        raise TrackerConfigError(
            f"the running work tracker keeps its state in {info['state_path']}, not {path}; "
            "pass that path, or stop it with `ray.kill` first"
        )
    return handle


def _check_state_folder(path: Path) -> None:
    """Fail before starting an actor when the state path cannot be ours or cannot
    be written. (Drivers, `ray job submit` ones included, run on the head node,
    where the tracker keeps its state.)"""
    try:
        check_state_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    except (StatePathError, OSError) as exc:
        raise TrackerStartError(f"the work tracker cannot keep its state at {path}: {exc}") from None


def _root_cause(exc: BaseException) -> str:
    """The `SomeError: message` line of a Ray error, without its tracebacks."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    causes = re.findall(r"^(\w+(?:Error|Exception)\b.*)$", text, flags=re.MULTILINE)
    return causes[-1] if causes else text.strip().splitlines()[0]


def stop_tracker(namespace: str = NAMESPACE, name: str = ACTOR_NAME) -> bool:
    """Kill the tracker for good (its state file stays). True if one was running."""
    import ray

    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    ray.kill(handle, no_restart=True)
    return True


def running_tracker(namespace: str = NAMESPACE, address: str | None = None):
    """The tracker's handle when a cluster with a tracker is up, else None.
    Joins a running cluster but never starts one: read-only commands must not
    bring up Ray as a side effect."""
    import ray

    from train.ray_session import init_ray

    try:
        init_ray(attach_only=True, address=address, log_to_driver=False, logging_level="ERROR")
    except ConnectionError:
        return None
    try:
        return ray.get_actor(ACTOR_NAME, namespace=namespace)
    except ValueError:
        return None
