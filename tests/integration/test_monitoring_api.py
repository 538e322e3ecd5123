"""The monitoring API over a real Redis cache and a real alert store: health, metrics, alerts, acknowledge,
silences, token auth, JSON 404s, the OpenAPI spec, and the realtime WebSocket."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from engines.config import parse_config
from engines.errors import ConfigError
from engines.monitoring import AlertStore, Evaluator, compile_rules
from workers import runtime
from workers.api import create_api

pytestmark = pytest.mark.integration
TOKEN = "api-token-9c2f-test"


@pytest.fixture
def api(embedded_redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("T_API_TOKEN", TOKEN)
    cfg = parse_config(f"""
fleet: {{cache_url: "{embedded_redis.url}/5", api: {{token_env: T_API_TOKEN}}}}
databases:
  music: {{kind: postgresql, host: 127.0.0.1}}
  cache: {{kind: redis, host: 127.0.0.1}}
database_scripts:
  monitoring:
    alert_channels: [log]
    alert_rules: [{{name: slow, expr: "avg_response_time > 50ms"}}]
""")
    cache = redis.Redis.from_url(f"{embedded_redis.url}/5")
    cache.flushdb()
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    report = {"database_id": "music", "kind": "postgresql", "status": "degraded", "checked_at": "2026-11-25T12:00:00+00:00",
              "checks": [{"check": "response_time", "status": "warning", "value": 80.0, "unit": "ms"},
                         {"check": "connections", "status": "ok", "value": 12.5, "unit": "%"}]}
    cache.set(runtime.HEALTH_KEY.format("music"), json.dumps(report))
    Evaluator(store, compile_rules(cfg.database_scripts.monitoring)).evaluate(report)
    client = TestClient(create_api(cfg, cache, store), headers={"Authorization": f"Bearer {TOKEN}"})
    client.cfg, client.cache, client.store = cfg, cache, store  # type: ignore[attr-defined]
    return client


def test_health_metrics_and_unknown_ids(api: Any) -> None:
    health = api.get("/api/monitoring/databases/music/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    metrics = api.get("/api/monitoring/databases/music/metrics").json()["metrics"]
    assert metrics["avg_response_time"] == {"value": 80.0, "unit": "ms"}
    assert metrics["connections"] == {"value": 12.5, "unit": "%"} and metrics["up"]["value"] == 1.0
    missing = api.get("/api/monitoring/databases/nosuch/health")
    assert missing.status_code == 404 and missing.json() == {
        "error": "unknown database id 'nosuch' (known: cache, music)"}
    not_yet = api.get("/api/monitoring/databases/cache/health")
    assert not_yet.status_code == 404 and "dbfleet run health-check cache" in not_yet.json()["error"]
    listing = {d["id"]: d["status"] for d in api.get("/api/monitoring/databases").json()}
    assert listing == {"music": "degraded", "cache": None}


def test_alerts_acknowledge_and_silences(api: Any) -> None:
    active = api.get("/api/monitoring/alerts/active").json()
    assert [(a["rule"], a["database_id"], a["state"]) for a in active] == [("slow", "music", "firing")]
    aid = active[0]["id"]
    ack = api.post(f"/api/monitoring/alerts/{aid}/acknowledge", json={"by": "ana", "comment": "on it"})
    assert ack.status_code == 200 and ack.json()["acknowledged"] and ack.json()["acknowledged_by"] == "ana"
    assert api.get("/api/monitoring/alerts/active").json()[0]["acknowledged"] is True
    assert api.post("/api/monitoring/alerts/nope/acknowledge").status_code == 404
    assert api.post("/api/monitoring/alerts/nope/acknowledge").json() == {"error": "unknown alert id 'nope'"}
    created = api.post("/api/monitoring/silences", json={"rule": "slow", "duration": "2h", "by": "ana"})
    assert created.status_code == 201
    ends = datetime.fromisoformat(created.json()["ends_at"])
    assert timedelta(hours=1, minutes=59) < ends - datetime.now(timezone.utc) <= timedelta(hours=2)
    assert [s["rule"] for s in api.get("/api/monitoring/silences").json()] == ["slow"]
    bad = api.post("/api/monitoring/silences", json={"duration": "2h"})
    assert bad.status_code == 422 and "rule or a database" in bad.json()["error"]
    assert api.post("/api/monitoring/silences", json={"rule": "slow", "duration": "later"}).status_code == 422


def test_token_is_required_and_openapi_is_served(api: Any) -> None:
    bare = TestClient(api.app)
    denied = bare.get("/api/monitoring/alerts/active")
    assert denied.status_code == 401 and "Bearer" in denied.json()["error"]
    assert bare.get("/api/monitoring/alerts/active", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert bare.get("/api/monitoring/alerts/active", headers={"Authorization": "Bearer "}).status_code == 401
    assert bare.get("/openapi.json").status_code == 401
    spec = api.get("/openapi.json").json()
    assert "/api/monitoring/alerts/{alert_id}/acknowledge" in spec["paths"]
    assert "/api/monitoring/databases/{db_id}/health" in spec["paths"]


def test_acknowledge_and_silence_need_the_token(api: Any) -> None:
    aid = api.get("/api/monitoring/alerts/active").json()[0]["id"]
    bare = TestClient(api.app)
    # a cross-site form POST carries no Authorization header and no JSON body
    assert bare.post(f"/api/monitoring/alerts/{aid}/acknowledge").status_code == 401
    assert bare.post("/api/monitoring/silences", json={"rule": "slow", "duration": "100d"}).status_code == 401
    assert api.store.get(aid)["acknowledged"] is False
    assert api.get("/api/monitoring/silences").json() == []


def test_silences_are_capped_and_absurd_durations_are_422(api: Any) -> None:
    for duration in ("99999999d", "8d", "169h", "0s", "-1h", "1" * 40):
        answer = api.post("/api/monitoring/silences", json={"rule": "slow", "duration": duration})
        assert answer.status_code == 422, (duration, answer.status_code)
    too_long = api.post("/api/monitoring/silences", json={"rule": "slow", "duration": "99999999d"}).json()["error"]
    assert too_long == ("a silence of 99999999d is longer than the maximum 7d "
                        "(database_scripts.monitoring.max_silence)")
    assert api.post("/api/monitoring/silences", json={"rule": "slow", "duration": "7d"}).status_code == 201
    assert len(api.get("/api/monitoring/silences").json()) == 1


def test_the_silence_maximum_is_configurable(api: Any) -> None:
    cfg = parse_config("database_scripts: {monitoring: {max_silence: 2h}}\n")
    client = TestClient(create_api(cfg, api.cache, api.store, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    assert client.post("/api/monitoring/silences", json={"rule": "slow", "duration": "2h"}).status_code == 201
    answer = client.post("/api/monitoring/silences", json={"rule": "slow", "duration": "3h"})
    assert answer.status_code == 422 and "longer than the maximum 2h" in answer.json()["error"]
    with pytest.raises(ConfigError, match="max_silence"):
        parse_config("database_scripts: {monitoring: {max_silence: forever}}\n")


def test_realtime_websocket_streams_published_events(api: Any, embedded_redis: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as denied:
        with TestClient(api.app).websocket_connect("/monitoring/realtime") as ws:
            ws.receive_json()
    assert denied.value.status_code == 401
    publisher = redis.Redis.from_url(f"{embedded_redis.url}/5")
    with api.websocket_connect(f"/monitoring/realtime?token={TOKEN}") as ws:
        assert ws.receive_json() == {"type": "hello", "channel": "realtime"}

        def publish() -> None:
            time.sleep(0.3)
            publisher.publish(runtime.EVENTS, json.dumps({"type": "health", "database_id": "music", "status": "up"}))
            publisher.publish(runtime.EVENTS, json.dumps({"type": "alert", "rule": "slow", "to": "resolved"}))

        threading.Thread(target=publish).start()
        assert ws.receive_json() == {"type": "health", "database_id": "music", "status": "up"}
        assert ws.receive_json() == {"type": "alert", "rule": "slow", "to": "resolved"}
