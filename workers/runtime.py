"""Per-process singletons: the loaded config, the history store, the cache client."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from engines.config import Config, load_config
from engines.history import HistoryStore
from engines.secrets import ensure_private_dir

HEALTH_KEY = "dbfleet:health:{}"
HEALTH_TTL = 3600
BACKUP_KEY = "dbfleet:backup:{}"  # the last successful backup's summary, for the exporter
DRILL_KEY = "dbfleet:drill:{}"  # the last restore drill's result
AUDIT_KEY = "dbfleet:audit:{}"  # the last security audit's summary
HEALTH_MEMORY_KEY = "dbfleet:health-memory:{}"  # counters and query baselines carried between health checks
EVENTS = "dbfleet:events"  # pub/sub channel: health updates and alert transitions (the API's WebSocket)
RESULT_TTL = 90 * 86400


@functools.lru_cache(maxsize=1)
def config() -> Config:
    """The config named by DBFLEET_CONFIG (or ./dbfleet.yaml, or defaults)."""
    cfg = load_config(os.environ.get("DBFLEET_CONFIG") or None)
    _loaded[id(cfg)] = _mtime(cfg.source)
    return cfg


_loaded: dict[int, float | None] = {}  # id of a loaded config -> its file's mtime when it was read


def _mtime(source: str) -> float | None:
    try:
        return Path(source).stat().st_mtime
    except OSError:  # "defaults", or a file gone since
        return None


def reload_if_changed() -> bool:
    """Load the config file again when it changed on disk since this process read it (an operator edited
    the registry while a worker runs); True when it was reloaded. Callers retry a failed id lookup then."""
    cfg = config()
    if _mtime(cfg.source) == _loaded.get(id(cfg)):
        return False
    config.cache_clear()
    config()
    return True


def state_dir() -> Path:
    """The state directory (fleet.state_dir), created 0700."""
    return ensure_private_dir(config().fleet.state_path())


@functools.lru_cache(maxsize=1)
def history() -> HistoryStore:
    """The history store of this process (by default history.db, 0600, in the 0700 state directory)."""
    fleet = config().fleet
    if not fleet.history_url:
        state_dir()
    from engines.compliance.trail import history_recorder

    return HistoryStore(fleet.resolved_history(), recorder=history_recorder(config()))  # every row -> the trail


@functools.lru_cache(maxsize=1)
def cache() -> Any:
    """A Redis client for cached results (health for the exporter) and redbeat."""
    import redis

    return redis.Redis.from_url(config().fleet.resolved_cache(), socket_timeout=5,
                                socket_connect_timeout=5)


@functools.lru_cache(maxsize=1)
def alert_store() -> Any:
    """Alert and silence state, in the history database."""
    from engines.monitoring.store import AlertStore

    return AlertStore(config().fleet.resolved_history())


@functools.lru_cache(maxsize=1)
def evaluator() -> Any:
    """The alert rule evaluator of this process, delivering through the configured channels."""
    from engines.monitoring.alerts import Evaluator, compile_rules
    from engines.monitoring.channels import deliver_all

    section = config().database_scripts.monitoring
    return Evaluator(alert_store(), compile_rules(section), notify=lambda out: deliver_all(section, out))


def remember(key: str, database_id: str, data: dict[str, Any], ttl: int = RESULT_TTL) -> None:
    """Cache a small result for the exporter and the API; a cache outage must not fail the run."""
    import json
    import logging

    try:
        cache().set(key.format(database_id), json.dumps(data), ex=ttl)
    except Exception as exc:
        logging.getLogger("dbfleet").warning("cannot cache %s of %s: %s", key.split(":")[1], database_id,
                                             type(exc).__name__)


def publish(event: dict[str, Any]) -> None:
    """Send an event to the realtime feed; a cache outage only loses the event."""
    import json
    import logging

    try:
        cache().publish(EVENTS, json.dumps(event, default=str))
    except Exception as exc:
        logging.getLogger("dbfleet").warning("cannot publish a %s event: %s", event.get("type"), type(exc).__name__)


def reset() -> None:
    """Forget the cached singletons (tests, or after DBFLEET_CONFIG changes)."""
    for fn in (config, history, cache, alert_store, evaluator):
        fn.cache_clear()
