"""The exporter shows each DR group's last observation (lag, RPO budget, streaming) from the coordination store."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from engines.config import parse_config
from engines.dr.coord import Coordinator
from engines.dr.models import DRStatus, NodeStatus

pytestmark = pytest.mark.integration
CFG = """
databases:
  p: {kind: postgresql, host: 127.0.0.1, port: 5432}
  s: {kind: postgresql, host: 127.0.0.1, port: 5433}
database_scripts:
  disaster_recovery: {dr_id: main, primary_site: p, secondary_sites: [s], rpo_minutes: 1}
"""


def _samples(families: Any) -> dict[tuple[str, str, str], float]:
    return {(s.name, s.labels["dr_group"], s.labels["database"]): s.value for f in families for s in f.samples}


def test_the_last_dr_observation_becomes_metrics(embedded_redis: Any) -> None:
    from workers.exporter import FleetCollector

    client = redis.Redis.from_url(f"{embedded_redis.url}/3")
    cfg = parse_config(CFG, environ={})
    collector = FleetCollector(cfg, client, history=None)
    assert _samples(collector._dr()) == {}  # no observation yet: no made-up values
    status = DRStatus(dr_id="main", observed_at=time.time(), observer="w1", primary="p", primary_reachable=True,
                      rpo_seconds=60.0, ok=False, problems=["lag over RPO"],
                      nodes=[NodeStatus(database="p", reachable=True, role="primary"),
                             NodeStatus(database="s", reachable=True, role="standby", streaming=True, lag_seconds=90.0,
                                        lag_bytes=4096, rpo_budget_ratio=1.5, slot_retained_bytes=8192),
                             NodeStatus(database="w", reachable=True, role="standby", archive_lag_seconds=42.0)])
    Coordinator(client).save_status("main", status.model_dump())
    got = _samples(collector._dr())
    assert got[("dbfleet_dr_primary_up", "main", "p")] == 1.0
    assert got[("dbfleet_dr_rpo_budget_ratio", "main", "s")] == 1.5
    assert got[("dbfleet_dr_replay_lag_seconds", "main", "s")] == 90.0
    assert got[("dbfleet_dr_standby_streaming", "main", "s")] == 1.0
    assert got[("dbfleet_dr_slot_retained_bytes", "main", "s")] == 8192.0
    assert got[("dbfleet_dr_archive_replay_lag_seconds", "main", "w")] == 42.0  # a warm standby's archive lag
    assert ("dbfleet_dr_standby_streaming", "main", "w") not in got  # it does not stream: no false alert
    client.set("dbfleet:dr:main:status", b"{not json")  # a damaged observation is skipped, not a scrape error
    assert _samples(collector._dr()) == {}
