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
    """True when `ray.init(address="auto")` would find a cluster to join."""
    if ray.is_initialized():
        return True
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(os.environ.get("RAY_ADDRESS", "auto")) is not None
    except ConnectionError:
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
