"""Which folders are ours, and moving our own failed attempts out of the way.

Every folder this system writes (`code/NNN_scaled/`) carries a marker file,
`.ray-autoresearch.json`. A folder without it belongs to the user: a scaled
experiment planned by hand or run elsewhere. It is never deleted, overwritten
or moved, and it counts as scaled by hand.

A folder of ours that did not finish (no results.json: a failed smoke test, a
stopped run) is *set aside*, never deleted: renamed to a hidden sibling
`.NNN_scaled.<reason>-<time>` that scans ignore, where its logs can still be read.

    write_marker(folder, mve_id=..., planner=...)
    is_ours(folder) -> bool
    set_aside(folder, reason) -> Path       # OwnershipError for a folder that is not ours
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

MARKER = ".ray-autoresearch.json"
WRITTEN_BY = "ray-autoresearch"


class OwnershipError(RuntimeError):
    """The folder is not ours to change."""


def write_marker(folder: Path, **facts) -> Path:
    """Mark `folder` as written by this system (call before it becomes visible)."""
    path = Path(folder) / MARKER
    record = {"written_by": WRITTEN_BY, "kind": "scaled_experiment",
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **facts}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def is_ours(folder: Path) -> bool:
    """True only when `folder` holds our marker: a JSON object saying we wrote it."""
    path = Path(folder) / MARKER
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("written_by") == WRITTEN_BY


def set_aside(folder: Path, reason: str) -> Path:
    """Move a folder of ours that did not finish to `.NAME.<reason>-<YYYYmmdd-HHMMSS>`
    beside it and return the new path. Refuses (OwnershipError) a folder without
    our marker, and a finished one (holding results.json): those are never moved."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        raise OwnershipError(f"{folder} is not a folder")
    if not is_ours(folder):
        raise OwnershipError(f"{folder} was not written by {WRITTEN_BY} (no {MARKER}): it is left as it is")
    if (folder / "results.json").exists():
        raise OwnershipError(f"{folder} is a finished experiment (results.json): it is left as it is")
    why = re.sub(r"[^A-Za-z0-9]+", "-", reason).strip("-").lower()[:40] or "set-aside"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f".{folder.name}.{why}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f".{folder.name}.{why}-{stamp}-{n}")
    folder.rename(target)  # same parent, same file system: atomic
    return target
