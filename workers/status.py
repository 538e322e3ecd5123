"""Fleet status: workers online, queue depths, recent failures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click
from celery import Celery


def redis_queue_depths(broker_url: str, queues: Iterable[str]) -> dict[str, int]:
    """LLEN of each queue on a Redis broker (priority sub-queues included)."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
    out = {}
    for q in queues:
        keys = [q] + [f"{q}\x06\x16{p}" for p in (3, 6, 9)]
        out[q] = sum(int(client.llen(k)) for k in keys)
    return out


def amqp_queue_depths(app: Celery, queues: Iterable[str]) -> dict[str, int]:
    """Message counts through a passive queue declare (RabbitMQ)."""
    out = {}
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for q in queues:
            try:
                out[q] = int(channel.queue_declare(q, passive=True).message_count)
            except Exception:
                out[q] = 0
                channel = conn.channel()
    return out


def queue_depths(app: Celery, queues: Iterable[str]) -> dict[str, int]:
    """Depth of each queue, whichever broker."""
    url = str(app.conf.broker_url)
    if url.startswith(("redis://", "rediss://")):
        return redis_queue_depths(url, queues)
    return amqp_queue_depths(app, queues)


def workers_online(app: Celery, timeout: float = 2.0) -> dict[str, list[str]]:
    """Worker name -> queues it consumes, for every worker that answers in ``timeout``."""
    inspector = app.control.inspect(timeout=timeout)
    active = inspector.active_queues() or {}
    return {name: sorted(q["name"] for q in qs) for name, qs in active.items()}


def require_worker(app: Celery, queue: str, local_flag: bool = True, timeout: float = 3.0) -> None:
    """Fail fast, with what to do, when no online worker consumes ``queue`` (instead of waiting forever)."""
    if any(queue in queues for queues in workers_online(app, timeout).values()):
        return
    hint = " or use --local" if local_flag else ""
    raise NoWorker(f"no worker serves the {queue} queue: start `dbfleet worker --queues {queue}`{hint} "
                   "(`dbfleet status` lists the workers online)")


class NoWorker(click.ClickException):
    """No online worker consumes the queue a command needs (exit status 2)."""

    exit_code = 2


def fleet_status(app: Celery, history: Any, queues: Iterable[str]) -> dict[str, Any]:
    """Everything `dbfleet status` shows."""
    return {"workers": workers_online(app), "queues": queue_depths(app, list(queues)),
            "recent_failures": history.query(status="failed", limit=10)}
