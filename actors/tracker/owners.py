"""Who holds a lease, and whether they are certainly dead.

An owner name says who holds the work and how to check on them:

    scaler-1@actor:NAMESPACE/NAME     a named Ray actor (the agents, the research loop)
    cli@pid:HOST:PID                  a process (a driver, a command line)
    agent-a                           a plain label: nobody can tell, the TTL decides

The tracker evicts the claims of an owner that is *certainly* dead at once (its
named actor no longer exists; its process on the tracker's host has exited),
instead of after the TTL; anything it cannot check stays alive until the TTL.
"""

from __future__ import annotations

import os
import socket


def process_owner(label: str | None = None, namespace: str | None = None) -> str:
    """This process's owner name: `LABEL@actor:NS/NAME` inside a named Ray actor,
    else `LABEL@pid:HOST:PID`.

    Ray tells an actor its name but not the namespace it was created in (only its
    job's): an actor created with `.options(namespace=...)` passes that namespace."""
    import ray

    name = None
    try:
        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            name = ctx.get_actor_name()
            namespace = namespace or ctx.namespace
    except Exception:  # noqa: BLE001 - outside any Ray worker: a plain process
        name = None
    if name:
        where = f"actor:{namespace}/{name}"
    else:
        where = f"pid:{socket.gethostname()}:{os.getpid()}"
    return f"{label}@{where}" if label else where


def display_name(owner: str) -> str:
    """The label part, for progress lines: 'scaler-1@actor:ns/x' -> 'scaler-1'."""
    label, sep, _ = owner.partition("@")
    return label if sep and label else owner


def owner_is_gone(owner: str, namespace: str | None = None) -> bool:
    """True only when the owner is certainly dead. `namespace` is used for an
    `actor:NAME` written without one (older owner names)."""
    where = owner.partition("@")[2] or owner
    kind, _, rest = where.partition(":")
    if kind == "actor":
        import ray

        ns, slash, name = rest.rpartition("/")
        if not slash:
            ns, name = namespace, rest
        try:
            ray.get_actor(name, namespace=ns or None)
            return False
        except ValueError:
            return True
    if kind == "pid":
        host, _, pid = rest.rpartition(":")
        if host != socket.gethostname():
            return False  # another machine's process: cannot tell from here
        try:
            os.kill(int(pid), 0)
            return False
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
    return False
