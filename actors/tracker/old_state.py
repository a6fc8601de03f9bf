"""Import the old JSON tracker's state (`active_work.json`) into the lease table.

The old format: `{"active_work": {id: entry}, "history": [entry, ...]}`; an
entry has `agent_id`, `proposal_id`, `started_at`, `last_heartbeat` (ISO local
times without a zone) and `status`: `in_progress` or another heartbeat status
while active; `completed`, `failed`, `abandoned` (with `completed_at`) or
`stale` (with `staled_at`) in the history. Ids `exp-NNN-scaling` are scaling
claims; other ids are proposal slugs.

How an id becomes one lease record:

- `exp-NNN-scaling` becomes `scale:NNN`; a proposal slug becomes `proposal:SLUG`;
- a live entry heartbeated within the TTL (30 minutes) stays claimed until its
  TTL runs out; one past it is stale: evicted, claimable;
- stale, failed and abandoned become evicted, failed and abandoned: claimable;
- completed becomes done only where a scaled result exists
  (`code/NNN_scaled/results.json`); without one it is abandoned, claimable, and
  says why (a proposal's completion is kept as done, for the record);
- every imported record gets a new fencing token from this table's counter,
  `attempts` counts the entries of its id, and the older entries are kept in
  its `result` for the record, with the file it came from;
- a record the tracker already holds from its own agents is kept as it is; a
  record imported before from the same entries is left unchanged, so running
  the import twice changes nothing.

    plan = plan_import(read_old_state(path), records, next_token, code_dir=..., source=path)
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from actors.tracker.rules import DEFAULT_TTL_S, Claim, LeaseState

SCALING_ID_RE = re.compile(r"^exp[-_]?(\d{1,4})[-_]scal(?:ing|e|ed)$", re.IGNORECASE)
OLD_OWNER_SUFFIX = "@old-tracker"  # the owner cannot be checked for life: the TTL decides
_DONE = {"completed", "complete", "done", "success", "succeeded", "finished"}
_FAILED = {"failed", "failure", "error", "errored", "crashed"}
_ABANDONED = {"abandoned", "cancelled", "canceled", "killed", "dropped"}
_STALE = {"stale", "expired", "timed_out", "timeout", "evicted"}


class OldStateError(ValueError):
    """The file is not an old tracker state we can read; the message names the entry."""


@dataclass(frozen=True)
class OldEntry:
    old_id: str
    agent_id: str
    proposal_id: str | None
    status: str
    started_at: float
    last_heartbeat: float
    ended_at: float | None
    active: bool  # listed under active_work
    raw: dict


@dataclass
class ImportPlan:
    write: list[Claim] = field(default_factory=list)  # new records, and earlier imports the file has changed
    unchanged: list[Claim] = field(default_factory=list)  # imported before from the same entries
    kept: list[Claim] = field(default_factory=list)  # the tracker's own records: never replaced
    reasons: dict[str, str] = field(default_factory=dict)  # work id -> how it was mapped
    next_token: int = 1


def _time(value: Any, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()  # naive: local time
        except ValueError:
            pass
    raise OldStateError(f"{where}: {value!r} is not a time (expected ISO, e.g. 2024-06-10T09:40:00)")


def _entry(raw: Any, old_id: str | None, active: bool, where: str) -> OldEntry:
    if not isinstance(raw, dict):
        raise OldStateError(f"{where}: an entry is an object, not {type(raw).__name__}")
    old_id = old_id or raw.get("id") or raw.get("work_id") or raw.get("claim_id")
    if not isinstance(old_id, str) or not old_id.strip():
        raise OldStateError(f"{where}: no id (history entries name theirs in `id`)")
    agent = raw.get("agent_id")
    if not isinstance(agent, str) or not agent.strip():
        raise OldStateError(f"{where} ({old_id}): agent_id is missing")
    status = str(raw.get("status") or ("in_progress" if active else "")).strip().lower()
    if not status:
        raise OldStateError(f"{where} ({old_id}): status is missing")
    started = _time(raw.get("started_at"), f"{where} ({old_id}).started_at")
    beat = _time(raw.get("last_heartbeat"), f"{where} ({old_id}).last_heartbeat")
    ended = _time(raw.get("completed_at") or raw.get("staled_at") or raw.get("ended_at"), f"{where} ({old_id}) end")
    if started is None and beat is None:
        raise OldStateError(f"{where} ({old_id}): neither started_at nor last_heartbeat is given")
    proposal = raw.get("proposal_id")
    return OldEntry(old_id.strip(), agent.strip(), proposal if isinstance(proposal, str) else None, status,
                    started if started is not None else beat, beat if beat is not None else started, ended,
                    active, raw)


def read_old_state(path: str | Path) -> list[OldEntry]:
    """Every entry of an old `active_work.json`, or OldStateError saying what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OldStateError(f"{path} not found") from None
    except IsADirectoryError:
        raise OldStateError(f"{path} is a folder; give the active_work.json file") from None
    except UnicodeDecodeError:
        raise OldStateError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise OldStateError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not ({"active_work", "history"} & set(data)):
        raise OldStateError(f"{path} is not an old tracker state: expected {{\"active_work\": {{...}}, "
                            "\"history\": [...]}")
    active, history = data.get("active_work") or {}, data.get("history") or []
    if not isinstance(active, dict):
        raise OldStateError(f"{path}: active_work must be an object of id -> entry")
    if not isinstance(history, list):
        raise OldStateError(f"{path}: history must be a list of entries")
    entries = [_entry(raw, old_id, True, f"active_work[{old_id!r}]") for old_id, raw in active.items()]
    entries += [_entry(raw, None, False, f"history[{i}]") for i, raw in enumerate(history)]
    return entries


def work_id_of(old_id: str) -> str:
    m = SCALING_ID_RE.match(old_id)
    if m:
        return f"scale:{int(m.group(1)):03d}"
    return f"proposal:{old_id}"


def _fingerprint(entries: list[OldEntry]) -> str:
    return hashlib.sha256(json.dumps([e.raw for e in entries], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _state(latest: OldEntry, work_id: str, now: float, ttl_s: float, code_dir: Path | None) -> tuple[LeaseState, str]:
    status = latest.status
    if latest.active and status not in _DONE | _FAILED | _ABANDONED | _STALE:
        age = now - latest.last_heartbeat
        if age <= ttl_s:
            return LeaseState.CLAIMED, f"live ({status}), last heartbeat {age / 60:.0f} min ago: held until its TTL"
        old = f"{age / 86400:.0f} days" if age >= 2 * 86400 else f"{age / 3600:.1f} h"
        return LeaseState.EVICTED, (f"stale: {status} but its last heartbeat ({_iso(latest.last_heartbeat)}) is "
                                    f"{old} old: claimable")
    if status in _DONE:
        if not work_id.startswith("scale:"):
            return LeaseState.DONE, "completed (a proposal: kept as done, for the record)"
        scaled = code_dir / f"{work_id.split(':', 1)[1]}_scaled" / "results.json" if code_dir else None
        if scaled is not None and scaled.is_file():
            return LeaseState.DONE, f"completed, and {scaled} exists"
        return LeaseState.ABANDONED, (f"completed in the old tracker, but {scaled or 'code/NNN_scaled/results.json'} "
                                      "does not exist: claimable")
    if status in _FAILED:
        return LeaseState.FAILED, f"{status}: claimable"
    if status in _ABANDONED:
        return LeaseState.ABANDONED, f"{status}: claimable"
    if status in _STALE:
        return LeaseState.EVICTED, f"{status}: claimable"
    return LeaseState.ABANDONED, f"old status {status!r} (not one this import knows): claimable"


def plan_import(entries: list[OldEntry], records: list[Claim], next_token: int, *, source: str | Path,
                code_dir: Path | None, now: float | None = None, ttl_s: float = DEFAULT_TTL_S) -> ImportPlan:
    """What the import writes into a table holding `records`; pure (no I/O but
    the check for a scaled result)."""
    now = time.time() if now is None else now
    existing = {r.work_id: r for r in records}
    by_id: dict[str, list[OldEntry]] = {}
    for e in entries:
        by_id.setdefault(work_id_of(e.old_id), []).append(e)
    plan = ImportPlan(next_token=next_token)
    for work_id in sorted(by_id):
        group = sorted(by_id[work_id], key=lambda e: (e.active, e.ended_at or e.last_heartbeat))
        latest = group[-1]  # the active entry, else the one that ended last
        state, reason = _state(latest, work_id, now, ttl_s, code_dir)
        fingerprint = _fingerprint(group)
        have = existing.get(work_id)
        imported_before = have is not None and isinstance(have.result, dict) and "imported_from" in have.result
        if have is not None and not imported_before:
            plan.kept.append(have)
            plan.reasons[work_id] = f"already in the tracker ({have.state.value} by {have.owner}): kept as it is"
            continue
        if imported_before and have.result.get("fingerprint") == fingerprint:
            plan.unchanged.append(have)
            plan.reasons[work_id] = "imported before from the same entries: unchanged"
            continue
        if imported_before and not have.owner.endswith(OLD_OWNER_SUFFIX):
            plan.kept.append(have)  # claimed by one of ours since the last import
            plan.reasons[work_id] = f"claimed since the last import ({have.state.value} by {have.owner}): kept"
            continue
        live = state is LeaseState.CLAIMED
        result = {
            "imported_from": str(Path(source).resolve()), "fingerprint": fingerprint, "reason": reason,
            "old": {"id": latest.old_id, "status": latest.status, "proposal_id": latest.proposal_id,
                    "agent_id": latest.agent_id, "started_at": _iso(latest.started_at),
                    "last_heartbeat": _iso(latest.last_heartbeat), "ended_at": _iso(latest.ended_at)},
            "history": [{"agent_id": e.agent_id, "status": e.status, "started_at": _iso(e.started_at),
                         "ended_at": _iso(e.ended_at or e.last_heartbeat)} for e in group[:-1]],
        }
        plan.write.append(Claim(
            work_id=work_id, owner=f"{latest.agent_id}{OLD_OWNER_SUFFIX}", token=plan.next_token, state=state,
            claimed_at=latest.started_at, heartbeat_at=latest.last_heartbeat,
            expires_at=latest.last_heartbeat + ttl_s,
            released_at=None if live else (latest.ended_at or latest.last_heartbeat),
            attempts=len(group), result=result))
        plan.reasons[work_id] = reason
        plan.next_token += 1
    return plan
