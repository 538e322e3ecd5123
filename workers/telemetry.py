"""Fleet telemetry for the exporter: task counts by queue/task/state, task duration histograms, workers
online. Worker processes write small counters to the cache Redis from Celery signals; the exporter reads
them. A cache outage loses counts, never a task."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.signals import heartbeat_sent, task_postrun, task_prerun, worker_ready, worker_shutdown

from workers import (
    runtime,
    tracing,  # noqa: F401 - OpenTelemetry spans in worker processes when fleet.tracing is set
)

log = logging.getLogger("dbfleet")
TASKS_KEY = "dbfleet:telemetry:tasks"  # hash "queue|task|state" -> count
DURATION_KEY = "dbfleet:telemetry:duration"  # hash "queue|task|le" -> cumulative count, "queue|task|sum"
WORKER_KEY = "dbfleet:telemetry:worker:{}"  # one key per live worker, refreshed by heartbeats
WORKER_TTL = 30
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_started: dict[str, float] = {}


@task_prerun.connect
def _prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    began = _started.pop(task_id or "", None)
    if task is None or began is None:
        return
    seconds = time.monotonic() - began
    queue = (getattr(task.request, "delivery_info", None) or {}).get("routing_key") or "unknown"
    record(queue, task.name, state or "UNKNOWN", seconds)


def record(queue: str, task: str, state: str, seconds: float) -> None:
    """Count one finished task and its duration (cumulative histogram buckets)."""
    try:
        pipe = runtime.cache().pipeline(transaction=False)
        pipe.hincrby(TASKS_KEY, f"{queue}|{task}|{state}", 1)
        for le in BUCKETS:
            if seconds <= le:
                pipe.hincrby(DURATION_KEY, f"{queue}|{task}|{le}", 1)
        pipe.hincrby(DURATION_KEY, f"{queue}|{task}|+Inf", 1)
        pipe.hincrbyfloat(DURATION_KEY, f"{queue}|{task}|sum", seconds)
        pipe.execute()
    except Exception as exc:
        log.debug("telemetry lost: %s", type(exc).__name__)


def _alive(hostname: str) -> None:
    try:
        runtime.cache().set(WORKER_KEY.format(hostname), "1", ex=WORKER_TTL)
    except Exception as exc:
        log.debug("worker heartbeat not recorded: %s", type(exc).__name__)


@worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    _alive(getattr(sender, "hostname", "worker"))


@heartbeat_sent.connect
def _heartbeat(sender: Any = None, **_: Any) -> None:
    hostname = getattr(getattr(sender, "eventer", None), "hostname", None) or getattr(sender, "hostname", None)
    if hostname:
        _alive(hostname)


@worker_shutdown.connect
def _gone(sender: Any = None, **_: Any) -> None:
    try:
        runtime.cache().delete(WORKER_KEY.format(getattr(sender, "hostname", "worker")))
    except Exception as exc:
        log.debug("worker exit not recorded: %s", type(exc).__name__)


def workers_online(cache: Any) -> int:
    """Workers whose heartbeat is fresh."""
    return sum(1 for _ in cache.scan_iter(WORKER_KEY.format("*"), count=500))
