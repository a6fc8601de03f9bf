"""Which Ray a command uses: Ray's own rule, never a stranger's private instance.

1. an explicit address (an `--address` flag) or `RAY_ADDRESS` (what `ray job
   submit` sets for its drivers): that cluster;
2. else a cluster started with `ray start` on this machine: `ray start` (and
   only it) records its address in `<ray temp dir>/ray_current_cluster`;
3. else a new local Ray instance of our own.

Ray's `address="auto"` would also join any Ray instance it finds by scanning
the process table, including one another program started privately with
`ray.init()`: our commands then ran their actors inside that program's Ray and
lost them when it exited. So "auto" is never used. A `ray_current_cluster` file
left behind by a head that died without `ray stop` names an address nobody
listens on; joining it would retry for minutes, so the GCS port must answer.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import ray

logger = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"
# Where `ray start` writes the address of the cluster it started: the Ray temp
# dir, which RAY_TMPDIR (or the system temp dir) decides, /tmp/ray by default.
CURRENT_CLUSTER_FILE = "ray_current_cluster"


def _ray_temp_dir() -> Path:
    """Ray's default temp dir, by the rule Ray uses: RAY_TMPDIR, else TMPDIR (Linux), else /tmp."""
    if os.environ.get("RAY_TMPDIR"):
        base = os.environ["RAY_TMPDIR"]
    elif sys.platform.startswith("linux") and os.environ.get("TMPDIR"):
        base = os.environ["TMPDIR"]
    elif sys.platform.startswith(("linux", "darwin")):
        base = "/tmp"
    else:
        base = tempfile.gettempdir()
    return Path(base) / "ray"


def started_cluster_address() -> str | None:
    """The address of a live cluster started with `ray start` on this machine, or None."""
    path = _ray_temp_dir() / CURRENT_CLUSTER_FILE
    try:
        address = path.read_text().strip()
    except OSError:
        return None
    if not address:
        return None
    if not _reachable(address):
        logger.warning("ignoring %s: nothing listens at %s (a head that died without `ray stop`?)",
                       path, address)
        return None
    return address


def resolve_address(address: str | None = None) -> str | None:
    """The cluster this process should join (None: start a local instance)."""
    explicit = address or os.environ.get(ADDRESS_ENV) or None
    if explicit:
        if explicit == "local":  # Ray's word for "start a new instance, join nothing"
            return None
        if explicit == "auto":
            # "auto" would scan the process table for any Ray instance: use `ray start`'s record instead.
            return started_cluster_address()
        return explicit
    return started_cluster_address()


def _reachable(address: str, timeout_s: float = 2.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def cluster_is_running(address: str | None = None) -> bool:
    """True when there is a cluster this process would join (or Ray is already up here)."""
    return ray.is_initialized() or resolve_address(address) is not None


def init_ray(num_cpus: int | None = None, attach_only: bool = False, address: str | None = None,
             **kwargs) -> bool:
    """Join the cluster Ray's rule names, else start local Ray.

    Returns True when it joined an existing cluster. With `attach_only`, raises
    ConnectionError instead of starting a local instance.
    """
    if ray.is_initialized():
        return True
    kwargs.setdefault("log_to_driver", True)
    target = resolve_address(address)
    if target is not None:
        ray.init(address=target, **kwargs)
        return True
    if attach_only:
        raise ConnectionError("no running Ray cluster found (RAY_ADDRESS is unset and no `ray start` cluster "
                              "is up on this machine)")
    logger.info("no Ray cluster running: starting a local one")
    ray.init(address="local", num_cpus=num_cpus, **kwargs)
    return False
