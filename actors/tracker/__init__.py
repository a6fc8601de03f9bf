"""The WorkTracker: leases on work items, with fencing tokens, kept in Parquet.

- `rules`: the lease table as a pure state machine (no Ray, no I/O);
- `store`: durable Parquet snapshots of it;
- `actor`: the named, detached Ray actor that serves it, and how to connect;
- `client`: calls that survive tracker restarts, and `Lease`, how agents hold work;
- `cli`: `python -m actors.work_tracker list|clean`.
"""
