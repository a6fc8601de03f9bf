"""Attach to the Ray cluster this process belongs to, or start a local one.

Every entry point (`actors.main`, `train.run`, `tune.hw_scaling`) behaves the same
way: under `ray job submit` or with RAY_ADDRESS set it joins that cluster; on a
laptop with nothing running it starts a local Ray instance.
"""

from __future__ import annotations

import logging
import os

import ray

logger = logging.getLogger(__name__)


def cluster_is_running() -> bool:
    """True when `ray.init(address="auto")` would find a cluster to join.

    The address comes from RAY_ADDRESS or the file `ray start` leaves in
    /tmp/ray; a head that died without `ray stop` leaves that file behind, and
    joining it would retry for minutes. So the GCS port must also accept a
    connection."""
    if ray.is_initialized():
        return True
    try:
        from ray._private.services import canonicalize_bootstrap_address

        address = canonicalize_bootstrap_address(os.environ.get("RAY_ADDRESS", "auto"))
    except ConnectionError:
        return False
    if address is None:
        return False
    if not _reachable(address):
        if os.environ.get("RAY_ADDRESS"):
            return True  # named explicitly: let Ray report what is wrong with it
        logger.warning("ignoring the stale Ray address %s: nothing listens there (a head that died "
                       "without `ray stop`?)", address)
        return False
    return True


def _reachable(address: str, timeout_s: float = 2.0) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def init_ray(num_cpus: int | None = None, attach_only: bool = False, **kwargs) -> bool:
    """Join a running cluster if there is one, else start local Ray.

    Returns True when it joined an existing cluster. With `attach_only`, raises
    ConnectionError instead of starting a local instance.
    """
    if ray.is_initialized():
        return True
    kwargs.setdefault("log_to_driver", True)
    if cluster_is_running():
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), **kwargs)
        return True
    if attach_only:
        raise ConnectionError("no running Ray cluster found")
    logger.info("no Ray cluster running: starting a local one")
    ray.init(address="local", num_cpus=num_cpus, **kwargs)
    return False
