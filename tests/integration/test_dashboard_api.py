"""The dashboard's data and its browser session over a real Redis cache and a real alert store: /api/dashboard
is dashboard_data() (the facade's function), a cookie session acknowledges with the page's CSRF header, and the
realtime WebSocket takes the cookie."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from engines.config import parse_config
from engines.monitoring import AlertStore, Evaluator, compile_rules
from workers import api_session, runtime
from workers.api import create_api
from workers.monitoring import dashboard_data

pytestmark = pytest.mark.integration
TOKEN = "h15a-dashboard-token-81d3"


@pytest.fixture
def dash(embedded_redis: Any, tmp_path: Path) -> Any:
    cfg = parse_config(f"""
fleet: {{cache_url: "{embedded_redis.url}/13"}}
databases:
  h15a_music: {{kind: postgresql, host: 127.0.0.1}}
  h15a_cache: {{kind: redis, host: 127.0.0.1}}
database_scripts:
  monitoring:
    alert_channels: [log]
    alert_rules: [{{name: h15a_down, expr: "up == 0", severity: critical}}]
""")
    cache = redis.Redis.from_url(f"{embedded_redis.url}/13")
    cache.flushdb()
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.db'}")
    report = {"database_id": "h15a_music", "kind": "postgresql", "status": "down",
              "checked_at": "2026-11-29T12:00:00+00:00", "error": "connection refused",
              "checks": [{"check": "connect", "status": "critical", "value": None}]}
    cache.set(runtime.HEALTH_KEY.format("h15a_music"), json.dumps(report))
    cache.set(runtime.BACKUP_KEY.format("h15a_cache"), json.dumps({"finished_at": time.time() - 3600, "kind": "redis",
                                                                  "duration_seconds": 1.5, "total_bytes": 2048}))
    cache.set(runtime.DRILL_KEY.format("h15a_cache"), json.dumps({"ok": True, "rto_seconds": 4.2, "rpo_seconds": 3600,
                                                                 "kind": "redis", "at": time.time() - 60}))
    Evaluator(store, compile_rules(cfg.database_scripts.monitoring)).evaluate(report)
    client = TestClient(create_api(cfg, cache, store, token=TOKEN), follow_redirects=False)
    client.cfg, client.cache, client.store = cfg, cache, store  # type: ignore[attr-defined]
    return client


def _stable(data: dict[str, Any]) -> dict[str, Any]:
    """Without the moving parts (generation time, ages)."""
    text = re.sub(r'"(generated_at|age_seconds)": [^,}]+', r'"\1": 0', json.dumps(data, sort_keys=True))
    return dict(json.loads(text))


def test_api_dashboard_is_the_facades_dashboard_data(dash: Any) -> None:
    served = dash.get("/api/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served.status_code == 200
    built = dashboard_data(["h15a_music", "h15a_cache"], cfg=dash.cfg, cache=dash.cache, store=dash.store)
    assert _stable(served.json()) == _stable(built)
    data = served.json()
    assert data["summary"] == {"databases": 2, "down": 1, "firing": 1}
    music, cache = data["databases"]
    assert music["health"]["status"] == "down" and music["health"]["problems"] == ["connect"]
    assert cache["last_backup"]["total_bytes"] == 2048 and 3590 < cache["last_backup"]["age_seconds"] < 4000
    assert cache["last_drill"]["rto_seconds"] == 4.2 and cache["last_drill"]["age_seconds"] >= 60
    assert [(a["rule"], a["database_id"], a["state"]) for a in data["alerts"]] == [("h15a_down", "h15a_music", "firing")]


def test_a_cookie_session_acknowledges_with_the_pages_csrf_token(dash: Any) -> None:
    assert dash.post("/login", data={"token": TOKEN}).status_code == 303
    page = dash.get("/")
    csrf = re.search(r'name="dbfleet-csrf" content="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    aid = dash.get("/api/dashboard").json()["alerts"][0]["id"]
    refused = dash.post(f"/api/monitoring/alerts/{aid}/acknowledge", json={"by": "no-csrf"})
    assert refused.status_code == 403 and dash.store.get(aid)["acknowledged"] is False
    done = dash.post(f"/api/monitoring/alerts/{aid}/acknowledge", json={"by": "ana"},
                     headers={"X-Dbfleet-CSRF": csrf, "Origin": "http://testserver"})
    assert done.status_code == 200 and dash.store.get(aid)["acknowledged_by"] == "ana"
    shown = dash.get("/api/dashboard").json()["alerts"][0]
    assert shown["acknowledged"] is True and shown["acknowledged_by"] == "ana"


def test_the_realtime_websocket_takes_the_session_cookie(dash: Any, embedded_redis: Any) -> None:
    dash.post("/login", data={"token": TOKEN})
    assert api_session.valid(TOKEN, dash.cookies[api_session.COOKIE])
    with dash.websocket_connect("/monitoring/realtime", headers={"Origin": "http://testserver"}) as ws:
        assert ws.receive_json() == {"type": "hello", "channel": "realtime"}
