"""Startup warning for a Redis broker that may evict messages."""

from __future__ import annotations

import pytest
import redis

from workers.app import broker_eviction_warning

pytestmark = pytest.mark.integration


def test_noeviction_is_quiet_and_lru_warns(embedded_redis) -> None:
    client = redis.Redis.from_url(embedded_redis.url)
    assert broker_eviction_warning(embedded_redis.url + "/0") is None
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        warning = broker_eviction_warning(embedded_redis.url + "/0")
        assert warning and "allkeys-lru" in warning and "noeviction" in warning
    finally:
        client.config_set("maxmemory-policy", "noeviction")


def test_non_redis_broker_is_not_probed() -> None:
    assert broker_eviction_warning("amqp://guest@127.0.0.1:5672//") is None
