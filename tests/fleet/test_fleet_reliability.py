"""Delivery guarantees, beat, Flower, the exporter, RabbitMQ, and the canary password."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import urllib.error
import urllib.request
import uuid

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from engines.embedded import EmbeddedRedis
from tests.fleet.conftest import FLOWER_PW
from tests.fleet.procs import Proc, child_env, wait_for, write_config
from tests.servers import CANARY, CANARY_WRONG, require

pytestmark = pytest.mark.fleet


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


@pytest.fixture(scope="module")
def flower(fleet):
    fc = fleet.config.fleet.flower
    fleet.start("flower", "flower")
    base = f"http://127.0.0.1:{fc.port}"
    wait_for(lambda: _get(base + "/api/workers")[0] == 401, 60, "flower listening")

    def events_flowing() -> bool:
        # HTTP comes up before Flower's event consumer; events sent before it connects are lost for good
        run = fleet.manager().execute_script("health_check", "lite")
        run.wait(timeout=60)
        time.sleep(0.5)
        status, body = _get(base + "/api/tasks", ("admin", FLOWER_PW))
        return status == 200 and bool((json.loads(body).get(run.task_id) or {}).get("name"))

    wait_for(events_flowing, 90, "flower receiving task events", poll=0.5)
    return base


@pytest.fixture(scope="module")
def exporter(fleet):
    ec = fleet.config.fleet.exporter
    fleet.start("exporter", "exporter")
    url = f"http://127.0.0.1:{ec.port}/metrics"
    wait_for(lambda: _get(url)[0] == 200, 60, "exporter listening")
    return url


def test_flower_requires_auth_and_shows_finished_tasks(fleet, flower) -> None:
    assert _get(flower + "/")[0] == 401
    assert _get(flower + "/api/tasks")[0] == 401
    assert _get(flower + "/api/tasks", ("admin", "wrong"))[0] == 401
    run = fleet.manager().execute_script("health_check", "pg18")
    run.wait(timeout=60)

    def shown() -> dict | None:
        status, body = _get(flower + "/api/tasks", ("admin", FLOWER_PW))
        tasks = json.loads(body) if status == 200 else {}
        task = tasks.get(run.task_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_for(shown, 30, "flower to show the finished task")
    assert task["name"] == "health.check" and task["args"] == "['pg18']"


def test_exporter_reports_cached_health(fleet, exporter) -> None:
    manager = fleet.manager()
    for db_id in ("pg18", "ghost"):
        manager.execute_script("health_check", db_id).wait(timeout=60)
    status, body = _get(exporter)
    assert status == 200
    samples = {(s.name, s.labels.get("database", s.labels.get("queue"))): s.value
               for fam in text_string_to_metric_families(body) for s in fam.samples}
    assert samples[("dbfleet_database_up", "pg18")] == 1.0
    assert samples[("dbfleet_database_up", "ghost")] == 0.0
    assert samples[("dbfleet_database_response_seconds", "pg18")] > 0
    assert ("dbfleet_queue_depth", "health") in samples
    assert any(name == "dbfleet_script_runs_total" for name, _ in samples)


def test_sigkill_mid_task_redelivers_and_completes_once(fleet) -> None:
    token = uuid.uuid4().hex
    cache = redis.Redis.from_url(fleet.config.fleet.resolved_cache())
    victim = fleet.start_worker("victim", "dr", concurrency=1)
    res = fleet.app.send_task("fleet.probe", args=[token, 3.0], queue="dr")
    wait_for(lambda: cache.get(f"dbfleet:probe:{token}:started") == b"1", 60, "probe started on victim")
    victim.kill9()
    assert cache.get(f"dbfleet:probe:{token}:finished") is None
    fleet.start_worker("rescuer", "dr", concurrency=1)
    result = res.get(timeout=90)
    assert result["worker"].startswith("rescuer@") and result["completions"] == 1
    time.sleep(fleet.config.fleet.visibility_timeout + 2)  # room for a wrong second redelivery
    assert cache.get(f"dbfleet:probe:{token}:finished") == b"1"
    assert cache.get(f"dbfleet:probe:{token}:started") == b"2"


def test_canary_password_appears_nowhere(fleet, flower, exporter) -> None:
    manager = fleet.manager()
    broker = redis.Redis.from_url(fleet.config.fleet.broker_url)
    # 1. the message on the broker: 'tuning' has no consumer, so the raw message stays to be read
    fleet.app.send_task("health.check", args=["pg18"], kwargs={"options": {}}, queue="tuning")
    raw = b"".join(broker.lrange("tuning", 0, -1)).decode()
    broker.delete("tuning")
    assert "pg18" in raw
    # 2. runs that use the canary: right password, wrong password (an auth error), MariaDB
    results = [manager.execute_script("health_check", d).wait(timeout=60) for d in ("pg18", "pg18_badpw", "maria")]
    assert results[1]["status"] == "down" and "password authentication failed" in results[1]["error"]
    haystack = {"broker message": raw, "results": json.dumps(results)}
    backend = redis.Redis.from_url(fleet.config.fleet.resolved_backend())
    cache = redis.Redis.from_url(fleet.config.fleet.resolved_cache())
    for name, client in (("result backend", backend), ("cache", cache)):
        haystack[name] = "".join(str(client.dump(k)) for k in client.keys("*"))
    with sqlite3.connect(fleet.root / "history.db") as conn:
        haystack["history"] = "\n".join(conn.iterdump())
    haystack["logs"] = "".join(p.text() for p in fleet.procs.values())
    haystack["flower"] = _get(flower + "/api/tasks", ("admin", FLOWER_PW))[1]
    haystack["exporter"] = _get(exporter)[1]
    for where, text in haystack.items():
        assert CANARY not in text, f"canary password leaked into {where}"
        assert CANARY_WRONG not in text, f"wrong-password canary leaked into {where}"
    assert "pg18_badpw" in haystack["history"] and "pg18_badpw" in haystack["flower"]


def test_beat_runs_config_schedules_and_only_one_beat_is_active(fleet, tmp_path) -> None:
    data = yaml.safe_load(fleet.config_path.read_text())
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        data["fleet"].update(broker_url=f"{server.url}/0", result_backend=f"{server.url}/1",
                             cache_url=f"{server.url}/2", history_url=f"sqlite:///{tmp_path / 'h.db'}")
        data["database_scripts"] = {"monitoring": {"enabled": True, "interval_seconds": 1}}
        data["databases"] = {"lite": data["databases"]["lite"]}
        path = write_config(tmp_path / "beat.yaml", data)
        env = child_env(path)
        procs = [Proc(n, a, env, tmp_path / "logs") for n, a in (
            ("beat1", ["beat"]), ("beat2", ["beat"]),
            ("w", ["worker", "--queues", "health", "--concurrency", "1", "--name", "beatw@%h"]))]
        try:
            from engines.history import HistoryStore

            store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
            wait_for(lambda: len(store.query("health_check", "lite")) >= 3, 60, "three beat-driven checks")
            sent = [p for p in procs[:2] if "Sending due task health_check:lite" in p.text()]
            assert len(sent) == 1, "exactly one beat holds the redbeat lock and sends"
            _runtime_schedule(path, server)
        finally:
            for p in procs:
                p.stop()
    finally:
        server.stop()


def _runtime_schedule(path, server) -> None:
    from engines.config import load_config
    from engines.errors import ConfigError
    from workers.app import create_app
    from workers.manager import DatabaseScriptManager

    manager = DatabaseScriptManager(create_app(load_config(path)))
    entry = manager.schedule_script("health_check", "*/5 * * * *", "lite", name="every5")
    assert entry["name"] == "user:every5" and entry["queue"] == "health"
    listed = {r["name"]: r for r in manager.list_schedules()}
    assert listed["user:every5"]["origin"] == "runtime"
    assert listed["health_check:lite"]["origin"] == "config"
    manager.unschedule("every5")
    assert "user:every5" not in {r["name"] for r in manager.list_schedules()}
    with pytest.raises(ConfigError, match="no runtime schedule"):
        manager.unschedule("every5")


def test_rabbitmq_broker(fleet, tmp_path) -> None:
    host, port = require("rabbitmq")
    data = yaml.safe_load(fleet.config_path.read_text())
    data["fleet"].update(broker_url=f"amqp://guest:guest@{host}:{port}//",
                         result_backend=f"{fleet.redis.url}/3", cache_url=f"{fleet.redis.url}/4")
    path = write_config(tmp_path / "amqp.yaml", data)
    from engines.config import load_config
    from workers.app import create_app

    app = create_app(load_config(path))
    with app.connection_for_write() as conn:  # a clean 'audits' queue, declared as the fleet declares it
        conn.default_channel.queue_delete("audits")
        app.amqp.queues["audits"](conn.default_channel).declare()
    worker = Proc("rmq", ["worker", "--queues", "audits", "--concurrency", "1", "--name", "rmq@%h"],
                  child_env(path, DBFLEET_TEST_CANARY=CANARY), tmp_path / "logs")
    try:
        res = app.send_task("health.check", args=["pg18"], queue="audits")
        result = res.get(timeout=90)
        assert result["status"] in ("up", "degraded") and result["server"]["version"].startswith("18.")
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def limited(fleet):
    """A worker on its own broker with a 2 s soft / 8 s hard limit on health, max 3 deliveries, the test-only
    self-killing task, and a database whose server accepts TCP and never answers (a socket this test holds)."""
    import socket

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)  # the kernel completes connections; nobody ever reads or answers
    variant = fleet.variant("limited", 8, {
        "time_limits": {"health": 8}, "soft_time_limits": {"health": 2}, "max_deliveries": 3,
        "extra_task_modules": ["tests.fleet.selfkill_tasks"]}, {
        "hang": {"kind": "postgresql", "host": "127.0.0.1", "port": hang.getsockname()[1], "user": "x",
                 "dbname": "x", "connect_timeout": 600}})
    proc = variant.start_worker("limited", "health,dr", concurrency=1)
    yield variant, proc
    proc.stop()
    hang.close()


def test_a_hung_health_check_is_ended_by_its_soft_limit_and_the_worker_goes_on(limited) -> None:
    from engines.history import HistoryStore

    variant, proc = limited
    res = variant.app.send_task("health.check", args=["hang"], queue="health")
    with pytest.raises(Exception) as err:  # with no time limit (before), this waited forever
        res.get(timeout=60)
    assert type(err.value).__name__ == "ScriptFailed"
    assert "stopped by its soft time limit of 2 s (queue health)" in str(err.value)
    assert "fleet.time_limits.health" in str(err.value)
    run = HistoryStore(variant.config.fleet.resolved_history()).get(res.id)
    assert run["status"] == "failed" and run["error"] == str(err.value)
    follow = variant.app.send_task("health.check", args=["lite"], queue="health").get(timeout=60)
    assert follow["status"] == "up"  # the same single-process worker took the next task
    assert "Hard time limit" not in proc.text()  # the soft limit ended it: no process was killed


def test_a_task_that_kills_its_worker_is_failed_after_three_deliveries(limited) -> None:
    from engines.history import HistoryStore

    variant, proc = limited
    cache = redis.Redis.from_url(variant.config.fleet.resolved_cache())
    feed = cache.pubsub(ignore_subscribe_messages=True)
    feed.subscribe("dbfleet:events")  # the realtime feed the API's WebSocket relays
    res = variant.app.send_task("dr.selfkill", args=["lite"], queue="dr")
    with pytest.raises(Exception) as err:
        res.get(timeout=120)  # before: redelivered (and killing the pool process) forever
    assert "dr.selfkill killed its worker 3 times" in str(err.value) and "not run again" in str(err.value)
    run = HistoryStore(variant.config.fleet.resolved_history()).get(res.id)
    assert run["status"] == "failed" and run["attempts"] == 3 and "killed its worker 3 times" in run["error"]
    assert proc.text().count("WorkerLostError") >= 3 and "killed its worker 3 times" in proc.text()
    assert proc.proc.poll() is None  # the worker itself lives on and takes the next task
    done = variant.app.send_task("fleet.probe", args=["after-selfkill", 0], queue="dr").get(timeout=60)
    assert done["worker"].startswith("limited@")
    assert cache.get(f"dbfleet:deliveries:{res.id}") is not None  # kept: a fourth copy would be refused too
    events: list[dict] = []

    def killed_events() -> list[dict]:
        msg = feed.get_message(timeout=0.2)  # None also for the (ignored) subscribe confirmation
        if msg:
            events.append(json.loads(msg["data"]))
        return [e for e in events if e["type"] == "task_killed_worker"]

    assert wait_for(killed_events, 10, "the task_killed_worker event", poll=0) == [{
        "type": "task_killed_worker", "task": "dr.selfkill", "task_id": res.id, "queue": "dr",
        "database_id": "lite", "deliveries": 3, "message": str(err.value)}]


def test_a_task_that_ignores_its_soft_limit_is_killed_at_the_hard_one_and_recorded(limited) -> None:
    from engines.history import HistoryStore

    variant, proc = limited
    res = variant.app.send_task("health.outstay", args=["lite"], queue="health")
    with pytest.raises(Exception) as err:
        res.get(timeout=60)
    assert type(err.value).__name__ == "TimeLimitExceeded"
    run = HistoryStore(variant.config.fleet.resolved_history()).get(res.id)
    assert run["status"] == "failed"  # was left 'running' by the killed process
    assert run["error"] == ("time limit exceeded: health.outstay was killed by its hard time limit of 8 s "
                            "(queue health); if it needs longer, raise fleet.time_limits.health")
    cache = redis.Redis.from_url(variant.config.fleet.resolved_cache())
    assert cache.get(f"dbfleet:deliveries:{res.id}") is None  # acked, never back: no count left behind
    assert variant.app.send_task("health.check", args=["lite"], queue="health").get(timeout=60)["status"] == "up"
