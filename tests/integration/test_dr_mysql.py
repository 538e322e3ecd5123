"""MariaDB DR on three real MariaDB servers made here (``mariadb-install-db`` once, copied per server, each on
a free loopback port with its own server_id, binlog and GTID replication). The admin and replication
passwords are the canary: they travel through a defaults file and a driver parameter, never a command line,
and appear in no event or status."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import redis

from engines.config import DatabaseConfig
from engines.dr.auto import observe_and_act
from engines.dr.context import DRContext
from engines.dr.coord import Coordinator
from engines.dr.dispatch import engine_for
from engines.dr.drill import drill
from engines.dr.models import DRConfiguration
from engines.dr.mysql_replica import behind, gtid_seq
from engines.embedded.redis import free_port
from tests.servers import CANARY, require

pytestmark = pytest.mark.integration
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db")
OWNER = "mysql"
PASSWORD_ENV = "H19_DR_MYSQL_PASSWORD"
ADMIN, REPL = "h19_admin", "h19_repl"


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, OWNER, OWNER)


@functools.lru_cache(maxsize=1)
def _template() -> Path:
    """One ``mariadb-install-db`` (the slow part) for every server of the session."""
    root = Path(tempfile.mkdtemp(prefix="h19_mariadb_template_"))
    _own(root)
    data = root / "data"
    subprocess.run([INSTALL_DB or "mariadb-install-db", f"--datadir={data}", f"--user={OWNER}",
                    "--auth-root-authentication-method=normal", "--skip-test-db", "--no-defaults"],
                   check=True, capture_output=True)
    return data


class Server:
    """One MariaDB server: a copy of the template, binlog + GTID, read by the canary-password admin."""

    def __init__(self, root: Path, name: str, server_id: int) -> None:
        self.name, self.server_id, self.port = name, server_id, free_port()
        self.dir = root / name
        self.data, self.sock = self.dir / "data", self.dir / "mysqld.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def init(self) -> Server:
        self.dir.mkdir()
        _own(self.dir)
        subprocess.run(["cp", "-a", str(_template()), str(self.data)], check=True)
        self.start()
        root = pymysql.connect(unix_socket=str(self.sock), user="root", autocommit=True)
        with root.cursor() as cur:
            cur.execute("SET sql_log_bin = 0")  # users exist on every server already; not replicated
            for user in (ADMIN, REPL):
                cur.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s", (CANARY,))
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'127.0.0.1' WITH GRANT OPTION")
            cur.execute(f"GRANT REPLICATION SLAVE ON *.* TO '{REPL}'@'127.0.0.1'")
        root.close()
        return self

    def start(self) -> None:
        args = [MARIADBD, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.sock}", f"--pid-file={self.dir / 'mysqld.pid'}",
                f"--server-id={self.server_id}", f"--log-bin={self.dir / 'binlog'}", "--log-slave-updates",
                "--binlog-format=ROW", "--skip-name-resolve", "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=16M", f"--user={OWNER}",
                f"--log-error={self.dir / 'error.log'}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.sock.exists():
                try:
                    pymysql.connect(unix_socket=str(self.sock), user="root").close()
                    return
                except pymysql.err.OperationalError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"mariadbd {self.name} did not start: {(self.dir / 'error.log').read_text()[-2000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    @property
    def db(self) -> DatabaseConfig:
        return DatabaseConfig(id=self.name, kind="mariadb", host="127.0.0.1", port=self.port, user=ADMIN,
                              password_env=PASSWORD_ENV, connect_timeout=2, query_timeout=10)

    def sql(self, text: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user=ADMIN, password=CANARY, autocommit=True,
                               connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute(text, params)
                return list(cur.fetchall() or [])
        finally:
            conn.close()


@pytest.fixture()
def trio(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[dict[str, Server], DRContext]]:
    require("redis")
    if not INSTALL_DB or not Path(MARIADBD).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must not skip: mariadb-install-db / mariadbd are missing")
        pytest.skip("mariadb-install-db and mariadbd (Debian mariadb-server) are not installed")
    monkeypatch.setenv(PASSWORD_ENV, CANARY)
    root = Path(tempfile.mkdtemp(prefix="h19_dr_mysql_"))
    _own(root)
    servers = {n: Server(root, n, i + 1) for i, n in enumerate(("m1", "m2", "m3"))}
    try:
        for s in servers.values():
            s.init()
        servers["m1"].sql("CREATE DATABASE h19_app")
        servers["m1"].sql("CREATE TABLE h19_app.markers (seq bigint PRIMARY KEY)")
        servers["m1"].sql("INSERT INTO h19_app.markers VALUES (1), (2), (3)")
        cfg = DRConfiguration(dr_id=f"h19-my-{uuid.uuid4().hex[:6]}", primary_site="m1", secondary_sites=["m2", "m3"],
                              replication_user=REPL, replication_password_env=PASSWORD_ENV, rpo_minutes=1,
                              auto_failover_enabled=True, failover_after=0.5)
        coord = Coordinator(redis.Redis(db=9), f"h19:drm:{uuid.uuid4().hex[:8]}:")
        ctx = DRContext(cfg=cfg, resolve=lambda i: servers[i].db, coord=coord, state_dir=root / "state",
                        observer="w1")
        yield servers, ctx
        blob = json.dumps(coord.events(cfg.dr_id, 100)) + json.dumps(coord.last_status(cfg.dr_id))
        coord.forget(cfg.dr_id)
        assert CANARY not in blob
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_gtid_positions_compare_per_domain() -> None:
    assert gtid_seq("0-1-100,1-2-5,0-2-90") == {0: 100, 1: 5}
    assert behind("0-1-100,1-2-5", "0-1-97") == 8 and behind("0-1-5", "0-2-7") == 0


def test_mariadb_replicas_setup_observe_failover_and_rejoin(trio: tuple[dict[str, Server], DRContext],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    servers, ctx = trio
    m1, m2, m3 = servers["m1"], servers["m2"], servers["m3"]
    engine = engine_for(ctx)
    event = engine.setup(ctx)
    assert event.status == "done", event.detail
    assert m2.sql("SELECT count(*) FROM h19_app.markers") == [(3,)]  # cloned with the dump
    m1.sql("INSERT INTO h19_app.markers VALUES (4)")
    status = engine.observe(ctx)
    assert status.primary_reachable and not status.problems, status.problems
    for name in ("m2", "m3"):
        node = status.node(name)
        assert node is not None and node.role == "standby" and node.streaming and node.read_only
        assert node.lag_seconds is not None and node.rpo_budget_ratio is not None
    with pytest.raises(pymysql.err.MySQLError, match="read-only"):  # replicas refuse ordinary writes
        _as_app_user(m2)

    refused = engine.failover(ctx, reason="primary healthy")
    assert refused.status == "refused" and m2.sql("SELECT @@read_only") == [(1,)]

    for seq in range(5, 31):
        m1.sql("INSERT INTO h19_app.markers VALUES (%s)", [seq])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(engine.observe(ctx).node(n).lag_bytes for n in ("m2", "m3")):  # type: ignore[union-attr]
        time.sleep(0.2)
    w2 = DRContext(cfg=ctx.cfg, resolve=ctx.resolve, coord=ctx.coord, state_dir=ctx.state_dir, observer="w2")
    engine.observe(w2)
    m1.kill9()  # nothing restarts it
    moved = None
    deadline = time.monotonic() + 60
    while moved is None and time.monotonic() < deadline:
        for obs in (ctx, w2):
            _status, moved = observe_and_act(obs)
            if moved is not None:
                break
        time.sleep(0.2)
    assert moved is not None and moved.status == "promoted", moved and moved.detail
    new = servers[moved.new_primary or ""]
    other = m3 if new is m2 else m2
    assert moved.measures["transactions_lost"] == 0
    new.sql("INSERT INTO h19_app.markers VALUES (31)")  # writes succeed on the new primary
    assert new.sql("SELECT count(*) FROM h19_app.markers") == [(31,)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and other.sql("SELECT count(*) FROM h19_app.markers") != [(31,)]:
        time.sleep(0.2)
    assert other.sql("SELECT count(*) FROM h19_app.markers") == [(31,)]  # the third server follows the new one

    m1.start()  # the old primary comes back writable on its own...
    back = engine.rejoin(ctx, "m1")
    assert back.status == "done", back.detail  # ...and rejoins as a read-only replica of the new primary
    new.sql("INSERT INTO h19_app.markers VALUES (32)")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and m1.sql("SELECT count(*) FROM h19_app.markers") != [(32,)]:
        time.sleep(0.2)
    assert m1.sql("SELECT count(*) FROM h19_app.markers") == [(32,)] and m1.sql("SELECT @@read_only") == [(1,)]
    final = engine.observe(ctx)
    assert final.primary == new.name and final.node("m1").streaming  # type: ignore[union-attr]
    practice = drill(ctx)
    assert practice.status == "failed" and "PostgreSQL" in practice.detail  # said, not attempted
    assert CANARY not in caplog.text


def _as_app_user(server: Server) -> None:
    """A non-SUPER user's write on a read_only replica fails (SUPER bypasses read_only in MariaDB)."""
    name = f"h19_app_{server.name}"
    conn = pymysql.connect(unix_socket=str(server.sock), user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET sql_log_bin = 0")
        cur.execute(f"CREATE USER IF NOT EXISTS '{name}'@'127.0.0.1' IDENTIFIED BY 'app'")
        cur.execute(f"GRANT INSERT, SELECT ON h19_app.* TO '{name}'@'127.0.0.1'")
    conn.close()
    app = pymysql.connect(host="127.0.0.1", port=server.port, user=name, password="app", autocommit=True)
    try:
        with app.cursor() as cur:
            cur.execute("INSERT INTO h19_app.markers VALUES (99)")
    finally:
        app.close()
