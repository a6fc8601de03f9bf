"""Application metrics, in one place: what the cluster is doing, in Prometheus.

Every metric is a `ray.util.metrics` Gauge or Counter named `autoresearch_*`.
Ray's metrics agent on each node exports them, with a `ray_` prefix (and a
`_total` suffix on counters), on the node's metrics export port
(`ray start --metrics-export-port`), where Prometheus scrapes them and where the
dashboard's Metrics view and `monitoring/grafana_dashboard.json` read them:

    ray_autoresearch_claims_held                 gauge    live leases in the WorkTracker
    ray_autoresearch_claims_evicted_total        counter  leases evicted (expired, or `clean --all`)
    ray_autoresearch_mves_total{status}          counter  MVEs finished by a ScalerAgent: scaled,
                                                          failed, skipped, lost, planned, scaffolded
    ray_autoresearch_training_jobs_running{agent} gauge   training jobs a ScalerAgent is running now
    ray_autoresearch_gpu_hours_total             counter  GPU-hours spent by training jobs
    ray_autoresearch_training_cost_usd_total     counter  dollars spent by training jobs
    ray_autoresearch_llm_tokens_total{model,kind} counter LLM tokens billed (input, output,
                                                          cache_write, cache_read)
    ray_autoresearch_llm_cost_usd_total{model}   counter  dollars spent on LLM calls
    ray_autoresearch_best_val_bpb{branch}        gauge    AutoResearch's best val_bpb so far

Every series also carries Ray's own labels (SessionName, NodeAddress, WorkerId,
...): sum over them in queries, e.g. `sum(ray_autoresearch_claims_held)`.

The record functions never raise and never need Ray: outside a Ray process
(unit tests, `python -m train.run` before `ray.init`) they do nothing. Metric
objects are created lazily, once per process, on first use.

Ray's agent forgets a gauge value that its process has not re-reported within
two report intervals, so this module re-records the gauges it has set from a
daemon thread while the process lives; when the process dies its gauges age
out, which is the right answer for "jobs running".
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Iterator

log = logging.getLogger(__name__)

PREFIX = "autoresearch_"
DEFAULT_REPORT_INTERVAL_MS = 10_000.0  # Ray's metrics_report_interval_ms default

# name (without PREFIX) -> (kind, description, tag keys)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "claims_held": ("gauge", "Live leases in the WorkTracker: work being done right now.", ()),
    "claims_evicted": ("counter", "Leases the WorkTracker evicted: expired, or `work_tracker clean --all`.", ()),
    "mves": ("counter", "MVEs a ScalerAgent finished, by outcome (scaled, failed, skipped, lost, planned, "
             "scaffolded).", ("status",)),
    "training_jobs_running": ("gauge", "Training jobs a ScalerAgent is running right now.", ("agent",)),
    "gpu_hours": ("counter", "GPU-hours spent by finished training jobs.", ()),
    "training_cost_usd": ("counter", "Dollars spent on GPUs by finished training jobs.", ()),
    "llm_tokens": ("counter", "LLM tokens billed, by model and kind (input, output, cache_write, cache_read).",
                   ("model", "kind")),
    "llm_cost_usd": ("counter", "Dollars spent on LLM calls, by model.", ("model",)),
    "best_val_bpb": ("gauge", "AutoResearch: the best val_bpb kept so far on a branch.", ("branch",)),
}

_lock = threading.Lock()
_objects: dict[str, object] = {}
_gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_refresher: threading.Thread | None = None
_warned = False


def prometheus_name(name: str) -> str:
    """What Prometheus calls a metric: 'claims_evicted' -> 'ray_autoresearch_claims_evicted_total'."""
    kind = METRICS[name][0]
    return f"ray_{PREFIX}{name}" + ("_total" if kind == "counter" else "")


def _metric(name: str):
    """The metric object for `name` in this process, or None outside Ray."""
    obj = _objects.get(name)
    if obj is not None:
        return obj
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.util.metrics import Counter, Gauge

        kind, description, tags = METRICS[name]
        with _lock:
            obj = _objects.get(name)
            if obj is None:
                cls = Gauge if kind == "gauge" else Counter
                obj = _objects[name] = cls(PREFIX + name, description=description, tag_keys=tags)
        return obj
    except Exception as exc:  # metrics must never break the work
        _warn(exc)
        return None


def _warn(exc: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning("metrics disabled in this process: %s: %s", type(exc).__name__, exc)


def _inc(name: str, value: float | int | None, **tags: str) -> None:
    if value is None or not value > 0:  # a Counter only goes up
        return
    counter = _metric(name)
    if counter is None:
        return
    try:
        counter.inc(float(value), tags=tags or None)
    except Exception as exc:
        _warn(exc)


def _set(name: str, value: float | int | None, **tags: str) -> None:
    if value is None:
        return
    gauge = _metric(name)
    if gauge is None:
        return
    try:
        gauge.set(float(value), tags=tags or None)
    except Exception as exc:
        _warn(exc)
        return
    with _lock:
        _gauges[(name, tuple(sorted(tags.items())))] = float(value)
    _start_refresher()


def _start_refresher() -> None:
    global _refresher
    with _lock:
        if _refresher is not None and _refresher.is_alive():
            return
        _refresher = threading.Thread(target=_refresh_forever, name="autoresearch-metrics", daemon=True)
        _refresher.start()


def _refresh_interval_s() -> float:
    # Ray's export interval is a system config with no public getter; it is set
    # through the RAY_metrics_report_interval_ms variable (default 10 s).
    try:
        report_ms = float(os.environ.get("RAY_metrics_report_interval_ms", DEFAULT_REPORT_INTERVAL_MS))
    except ValueError:
        report_ms = DEFAULT_REPORT_INTERVAL_MS
    # Twice per export interval (which Ray floors at 1 s): never a gap.
    return max(report_ms, 1000.0) / 2000.0


def _refresh_forever() -> None:
    import time

    interval = _refresh_interval_s()
    while True:
        time.sleep(interval)
        with _lock:
            values = list(_gauges.items())
        for (name, tags), value in values:
            gauge = _objects.get(name)
            try:
                if gauge is not None:
                    gauge.set(value, tags=dict(tags) or None)
            except Exception as exc:
                _warn(exc)


# -- what the rest of the code calls ---------------------------------------------


def set_claims_held(n: int) -> None:
    """WorkTracker: the number of live leases, after every durable change."""
    _set("claims_held", n)


def record_claims_evicted(n: int = 1) -> None:
    """WorkTracker: `n` leases were evicted."""
    _inc("claims_evicted", n)


def record_mve_outcome(status: str) -> None:
    """ScalerAgent: one MVE finished with `status` (scaled, failed, skipped, ...)."""
    _inc("mves", 1, status=str(status))


@contextlib.contextmanager
def training_job_running(agent: str) -> Iterator[None]:
    """ScalerAgent: around a training job; the gauge reads 1 while it runs."""
    _set("training_jobs_running", 1, agent=str(agent))
    try:
        yield
    finally:
        _set("training_jobs_running", 0, agent=str(agent))


def record_training_spend(gpu_hours: float | None, cost_usd: float | None) -> None:
    """ScalerAgent: what a finished training job spent."""
    _inc("gpu_hours", gpu_hours)
    _inc("training_cost_usd", cost_usd)


def record_llm_usage(model: str, usage) -> None:
    """LLM clients: one billed response (`usage` is an `actors.shared.pricing.Usage`)."""
    model = str(model)
    for kind, attr in (("input", "input_tokens"), ("output", "output_tokens"),
                       ("cache_write", "cache_creation_input_tokens"), ("cache_read", "cache_read_input_tokens")):
        _inc("llm_tokens", getattr(usage, attr, 0), model=model, kind=kind)
    _inc("llm_cost_usd", getattr(usage, "cost_usd", 0.0), model=model)


def record_autoresearch_best(branch: str, val_bpb: float | None) -> None:
    """AutoResearch: the best val_bpb kept so far on `branch` (call it on every keep)."""
    _set("best_val_bpb", val_bpb, branch=str(branch))


__all__ = [
    "METRICS",
    "PREFIX",
    "prometheus_name",
    "record_autoresearch_best",
    "record_claims_evicted",
    "record_llm_usage",
    "record_mve_outcome",
    "record_training_spend",
    "set_claims_held",
    "training_job_running",
]
