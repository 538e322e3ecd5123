"""One contract test for the history store, on SQLite and on PostgreSQL 15."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from engines.history import FAILED, SUCCEEDED, HistoryStore
from engines.secrets import remember
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql15"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    else:
        require("postgresql15")
        s = HistoryStore("postgresql://postgres@127.0.0.1:5432/test")
    yield s
    s.close()


def test_record_query_and_redelivery(store: HistoryStore) -> None:
    db_id = f"db-{uuid.uuid4().hex[:8]}"
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    store.start(a, "health_check", db_id, {"x": 1}, queue="health", worker="w1@h")
    store.finish(a, SUCCEEDED, summary={"status": "up"})
    store.start(b, "health_check", db_id, {}, queue="health", worker="w1@h")
    store.start(b, "health_check", db_id, {}, queue="health", worker="w2@h")  # redelivered
    store.finish(b, FAILED, error="ConnectionFailed: boom")
    rows = store.query(database_id=db_id)
    assert [r["id"] for r in rows] == [b, a]  # newest first
    assert rows[0]["attempts"] == 2 and rows[0]["worker"] == "w2@h" and rows[0]["status"] == FAILED
    assert rows[1]["summary"] == {"status": "up"} and rows[1]["options"] == {"x": 1}
    assert store.query(database_id=db_id, status=FAILED)[0]["error"] == "ConnectionFailed: boom"
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert store.query(database_id=db_id, since=future) == []
    assert store.counts()[("health_check", SUCCEEDED)] >= 1


def test_secrets_are_scrubbed_before_storage(store: HistoryStore) -> None:
    remember(CANARY)
    run = str(uuid.uuid4())
    store.start(run, "health_check", "x", {"note": f"has {CANARY}"})
    store.finish(run, FAILED, summary={"echo": CANARY}, error=f"auth failed with {CANARY}")
    assert CANARY not in str(store.get(run))
