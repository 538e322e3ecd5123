"""The Celery app: queues, routes and reliability settings, all from dbfleet.yaml.

``celery -A workers.app worker -Q health`` and ``dbfleet worker`` both use this module. Importing it reads no
config: the app loads dbfleet.yaml on first use, so task modules and the CLI import it freely.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_ready
from kombu import Exchange, Queue

from beat_schedule import build_beat_schedule
from engines.config import Config
from workers import runtime

log = logging.getLogger("dbfleet")

QUEUES = ("backups", "health", "audits", "migrations", "tuning", "compliance", "dr")
LONG_QUEUES = frozenset({"backups", "migrations", "dr"})
# hard time limit in seconds per queue, overridable with fleet.time_limits.<queue>; the soft limit is 90 %
TIME_LIMITS = {"backups": 6 * 3600, "health": 120, "audits": 1800, "migrations": 12 * 3600,
               "tuning": 1800, "compliance": 3 * 3600, "dr": 4 * 3600}
TASK_MODULES = ["workers.health", "workers.backups", "workers.physical", "workers.audits", "workers.migrations",
                "workers.fleet", "workers.tuning", "workers.compliance", "workers.dr"]


def time_limit(cfg: Config, queue: str) -> int:
    """The hard time limit of ``queue`` in seconds."""
    return int(cfg.fleet.time_limits.get(queue, TIME_LIMITS[queue]))


def soft_time_limit(cfg: Config, queue: str) -> int:
    """The soft limit of ``queue``: fleet.soft_time_limits.<queue>, else 90 % of the hard one."""
    hard = time_limit(cfg, queue)
    soft = cfg.fleet.soft_time_limits.get(queue, int(hard * 0.9))
    return max(1, min(int(soft), hard - 1))


class QueueTimeLimits:
    """A Celery annotation giving each task ``<queue>.<verb>`` the soft and hard limits of its queue.

    Celery matches a mapping in ``task_annotations`` by exact task name or ``"*"`` only, so ``"backups.*"``
    keys never applied; an object with ``annotate(task)`` is asked about every task as it is bound.
    """

    def __init__(self, limits: dict[str, tuple[int, int]]) -> None:
        self.limits = dict(limits)  # queue -> (soft, hard)

    def annotate(self, task: Any) -> dict[str, int] | None:
        """The limits of the queue named by the task's prefix; None for other tasks."""
        limits = self.limits.get(str(task.name).partition(".")[0])
        if limits is None:
            return None
        return {"soft_time_limit": limits[0], "time_limit": limits[1]}

    def __repr__(self) -> str:
        return f"QueueTimeLimits({self.limits!r})"


def celery_settings(cfg: Config) -> dict[str, Any]:
    """Every Celery setting dbfleet relies on, derived from the config."""
    longest = max(time_limit(cfg, q) for q in QUEUES)
    visibility = cfg.fleet.visibility_timeout or longest + 3600
    transport = {"visibility_timeout": visibility}
    if cfg.fleet.broker_url.startswith(("redis://", "rediss://")):
        transport |= {"socket_timeout": 30, "socket_connect_timeout": 10}
    transport |= cfg.fleet.broker_transport_options
    return {
        "broker_url": cfg.fleet.broker_url,
        "result_backend": cfg.fleet.resolved_backend(),
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json", "result_serializer": "json", "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True, "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True, "task_send_sent_event": True, "worker_send_task_events": True,
        "result_extended": True, "result_expires": 7 * 86400,
        "task_default_queue": "health",
        "task_queues": [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        "task_routes": {f"{q}.*": {"queue": q} for q in QUEUES},
        "task_annotations": [QueueTimeLimits({q: (soft_time_limit(cfg, q), time_limit(cfg, q)) for q in QUEUES})],
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": cfg.fleet.resolved_cache(),
        "redbeat_key_prefix": "dbfleet:redbeat:",
        "redbeat_lock_timeout": 300,
        "redbeat_redis_options": {"socket_timeout": 30, "socket_connect_timeout": 10},
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
    }


def app_settings(cfg: Config) -> dict[str, Any]:
    """The app's whole configuration from ``cfg``: Celery settings, task modules, beat schedule."""
    return {**celery_settings(cfg), "include": TASK_MODULES + cfg.fleet.extra_task_modules,
            "beat_schedule": build_beat_schedule(cfg)}


def create_app(cfg: Config | None = None) -> Celery:
    """The Celery app of ``cfg``; without one, of the process config, read when the app is first used
    (``app.conf``, sending, a worker starting), not when this module is imported: task modules register
    on it at import, and the CLI reads ``--config`` first."""
    celery_app = Celery("dbfleet", task_cls="workers.common:FleetTask")
    if cfg is None:
        celery_app.add_defaults(lambda: app_settings(runtime.config()))  # a promise: read on first use
    else:
        celery_app.conf.update(app_settings(cfg))
    return celery_app


def broker_eviction_warning(broker_url: str) -> str | None:
    """A warning when a Redis broker may evict task messages (maxmemory-policy != noeviction)."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
        policy = client.info("memory").get("maxmemory_policy")
    except Exception as exc:  # the broker itself will report unreachability
        log.debug("cannot read maxmemory-policy: %s", type(exc).__name__)
        return None
    if policy != "noeviction":
        return (f"Redis broker maxmemory-policy is {policy!r}: Redis may evict queued tasks under "
                "memory pressure; set maxmemory-policy noeviction")
    return None


@worker_ready.connect
def _warn_on_eviction(sender: Any = None, **_: Any) -> None:
    warning = broker_eviction_warning(runtime.config().fleet.broker_url)
    if warning:
        log.warning(warning)


app = create_app()  # no config is read here (see create_app)
from workers import telemetry  # noqa: E402,F401 - connects the telemetry signals in every process
