"""DR on real PostgreSQL 15 clusters made here (initdb + pg_basebackup on free loopback ports).

Redis :6379, db 9, keys under a per-run ``h9:dr:<uuid>:`` prefix. The replication role's password is
the canary; every event, history row, log line and written file is checked for it at teardown.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engines.config import DatabaseConfig
from engines.dr.auto import observe_and_act
from engines.dr.context import DRContext
from engines.dr.coord import Coordinator
from engines.dr.drill import drill
from engines.dr.failover import failover
from engines.dr.models import DRConfiguration
from engines.dr.observe import metrics, observe
from engines.dr.rejoin import rejoin
from engines.dr.setup import setup
from engines.dr.switchover import switchover
from engines.embedded.redis import free_port
from engines.history import HistoryStore
from tests.servers import CANARY, require

BIN = Path("/usr/lib/postgresql/15/bin")
REPL_USER = "h9_replicator"
PASSWORD_ENV = "H9_DR_REPLICATION_PASSWORD"
OWNER = "postgres"  # server binaries refuse root; the clusters belong to the postgres OS user


def _as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", OWNER, "--", *args] if os.geteuid() == 0 else args


@functools.lru_cache(maxsize=2)
def _template(bindir: Path = BIN) -> Path:
    """initdb (checksums on), DR settings, the canary-password replication role and the marker table."""
    root = Path(tempfile.mkdtemp(prefix="h9_dr_template_"))
    atexit.register(shutil.rmtree, root, True)
    if os.geteuid() == 0:
        shutil.chown(root, OWNER, OWNER)
    data = root / "data"
    subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                              "-k", "--no-sync", "-N"]), check=True, capture_output=True)
    conf = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''",
            "wal_level": "replica", "max_wal_senders": 10, "max_replication_slots": 10,
            "wal_log_hints": "on", "shared_buffers": "16MB", "fsync": "off", "max_connections": 40,
            "wal_keep_size": "64MB", "hot_standby_feedback": "on"}
    with open(data / "postgresql.conf", "a") as fh:
        fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
    (data / "pg_hba.conf").write_text(
        f"host all {REPL_USER} 127.0.0.1/32 scram-sha-256\n"
        f"host replication {REPL_USER} 127.0.0.1/32 scram-sha-256\n"
        "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")
    port = free_port()
    pg_ctl = str(bindir / "pg_ctl")
    subprocess.run(_as_owner([pg_ctl, "start", "-w", "-D", str(data), "-o", f"-p {port}", "-l",
                              str(root / "template.log")]), check=True, capture_output=True)
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {REPL_USER} LOGIN REPLICATION PASSWORD '{CANARY}'")
            conn.execute("CREATE TABLE h9_markers (seq bigint PRIMARY KEY, at timestamptz DEFAULT now())")
    finally:
        subprocess.run(_as_owner([pg_ctl, "stop", "-w", "-m", "fast", "-D", str(data)]), check=True,
                       capture_output=True)
    return data


class Cluster:
    """One PostgreSQL 15 cluster in ``root/name`` on a free loopback port."""

    def __init__(self, root: Path, name: str, bindir: Path = BIN) -> None:
        self.name, self.data, self.port, self.bindir = name, root / name, free_port(), bindir

    @property
    def db(self) -> DatabaseConfig:
        return DatabaseConfig(id=self.name, kind="postgresql", host="127.0.0.1", port=self.port,
                              dbname="postgres", user="postgres", connect_timeout=2, query_timeout=30)

    def init(self, **conf: str) -> Cluster:
        """A copy of the session's template cluster (initdb once: it is the slow part) on its own port."""
        subprocess.run(_as_owner(["cp", "-a", str(_template(self.bindir)), str(self.data)]), check=True,
                       capture_output=True)
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write(f"port = {self.port}\n")
            fh.writelines(f"{k} = '{v}'\n" for k, v in conf.items())
        self.start()
        return self

    def start(self) -> None:
        pid = getattr(self, "killed_pid", None)
        if pid:  # a kill -9'd postmaster must be reaped (this container's init is slow) before its lock file frees
            wait_for(lambda: not Path(f"/proc/{pid}").exists())
        subprocess.run(_as_owner([str(self.bindir / "pg_ctl"), "start", "-w", "-D", str(self.data), "-l",
                                  str(self.data.parent / f"{self.name}.log")]), check=True, capture_output=True)

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill9(self) -> None:
        """kill -9 the postmaster and its children; nothing restarts it."""
        pid = self.killed_pid = self.postmaster_pid()
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid, *map(int, children)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(_as_owner([str(self.bindir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data)]),
                           capture_output=True)

    def sql(self, text: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=3) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []


class Group:
    """A DR group of clusters with its context (coordinator, history, state dir)."""

    def __init__(self, root: Path, coord: Coordinator, history: HistoryStore, n_standbys: int = 1,
                 conf: dict[str, str] | None = None, repo_factory: object = None, bindir: Path = BIN,
                 **cfg: object) -> None:
        self.repository = repo_factory  # opens the backup repository (warm standby, backup_restore)
        self.primary = Cluster(root, "p", bindir).init(**(conf or {}))
        self.standbys = [Cluster(root, f"s{i}", bindir) for i in range(1, n_standbys + 1)]
        self.clusters = {c.name: c for c in [self.primary, *self.standbys]}
        dr = DRConfiguration(dr_id=f"h9-{uuid.uuid4().hex[:8]}", replication_user=REPL_USER,
                             replication_password_env=PASSWORD_ENV,
                             primary_site={"database": "p", "data_dir": str(self.primary.data)},
                             secondary_sites=[{"database": s.name, "data_dir": str(s.data)} for s in self.standbys],
                             **cfg)
        self.ctx = self.context(dr, coord, history, root, "w1")

    def context(self, dr: DRConfiguration, coord: Coordinator, history: HistoryStore, root: Path,
                observer: str) -> DRContext:
        return DRContext(cfg=dr, resolve=lambda i: self.clusters[i].db, coord=coord, state_dir=root / "state",
                         observer=observer, history=history, repository=self.repository)  # type: ignore[arg-type]

    def observer(self, name: str) -> DRContext:
        return self.context(self.ctx.cfg, self.ctx.coord, self.ctx.history, self.primary.data.parent, name)

    def stop(self) -> None:
        for c in self.clusters.values():
            c.stop()


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, object]]:
    """Redis coordinator (db 9, unique prefix), a history store, a postgres-owned scratch root; canary check."""
    yield from dr_world(monkeypatch, caplog)


def dr_world(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, object]]:
    """The body of the ``env`` fixture (the other DR test modules build theirs from it)."""
    require("redis")
    if not (BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries are not installed in /usr/lib/postgresql/15/bin")
    import redis

    monkeypatch.setenv(PASSWORD_ENV, CANARY)
    caplog.set_level(logging.DEBUG, logger="dbfleet")
    client = redis.Redis(host="127.0.0.1", port=6379, db=9)
    prefix = f"h9:dr:{uuid.uuid4().hex[:8]}:"
    root = Path(tempfile.mkdtemp(prefix="h9_dr_"))
    if os.geteuid() == 0:
        shutil.chown(root, OWNER, OWNER)
    history = HistoryStore(f"sqlite:///{root / 'state' / 'history.db'}")
    state: dict[str, object] = {"coord": Coordinator(client, prefix), "history": history, "root": root, "groups": []}
    try:
        yield state
        _assert_no_canary(client, prefix, history, root, caplog.text)
    finally:
        for group in state["groups"]:  # type: ignore[attr-defined]
            group.stop()
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        shutil.rmtree(root, ignore_errors=True)


def _assert_no_canary(client: object, prefix: str, history: HistoryStore, root: Path, log_text: str) -> None:
    blobs = [log_text, json.dumps(history.query(limit=1000), default=str)]
    for key in client.scan_iter(match=f"{prefix}*"):  # type: ignore[attr-defined]
        kind = client.type(key).decode()  # type: ignore[attr-defined]
        if kind == "string":
            blobs.append(client.get(key).decode())  # type: ignore[attr-defined]
        elif kind == "list":
            blobs += [v.decode() for v in client.lrange(key, 0, -1)]  # type: ignore[attr-defined]
        elif kind == "hash":
            blobs += [v.decode() for v in client.hgetall(key).values()]  # type: ignore[attr-defined]
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".conf", ".log", ".json") and path.stat().st_size < 5_000_000:
            blobs.append(path.read_text(errors="replace"))
    assert not [b for b in blobs if CANARY in b], "the replication password leaked"


def make_group(env: dict[str, object], n_standbys: int = 1, **cfg: object) -> Group:
    group = Group(env["root"], env["coord"], env["history"], n_standbys, **cfg)  # type: ignore[arg-type]
    env["groups"].append(group)  # type: ignore[attr-defined]
    event = setup(group.ctx)
    assert event.status == "done", event.detail
    return group


def write_marker(cluster: Cluster, seq: int) -> None:
    cluster.sql("INSERT INTO h9_markers (seq) VALUES (%s)", [seq])


def wait_for(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return True
        except Exception:
            pass
        time.sleep(0.1)
    return False


def test_setup_streams_with_a_passfile_and_observe_measures_lag_under_load(
        env: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.dr_archive import Archive

    archive = Archive(env["root"], "p")  # type: ignore[arg-type]
    archive.use(monkeypatch)
    group = make_group(env, repository="repo", repo_factory=archive.open)  # the archive as restore_command fallback
    standby = group.standbys[0]
    auto_conf = (standby.data / "postgresql.auto.conf").read_text()
    assert "passfile=" in auto_conf and CANARY not in auto_conf and "password" not in auto_conf
    assert "wal fetch --db p --storage repo %f %p" in auto_conf
    pfile = next(standby.data.parent.glob(".dbfleet-*.pgpass"))
    assert oct(pfile.stat().st_mode & 0o777) == "0o600"
    standby.sql("SELECT pg_wal_replay_pause()")
    subprocess.run(_as_owner([str(BIN / "pgbench"), "-i", "-s", "1", "-q", "-h", "127.0.0.1",
                              "-p", str(group.primary.port), "-U", "postgres", "postgres"]), check=True,
                   capture_output=True)
    time.sleep(1.1)  # a second of commits the paused standby has not replayed
    write_marker(group.primary, 1)
    paused = observe(group.ctx)
    node = paused.node("s1")
    assert node is not None and node.streaming and node.lag_bytes and node.lag_bytes > 0
    assert node.lag_seconds is not None and node.lag_seconds > 0 and node.rpo_budget_ratio is not None
    assert node.slot == group.ctx.cfg.slot_name("s1") and node.slot_active
    assert node.timeline == 1 and paused.primary_reachable
    samples = {name for name, _labels, _v in metrics(paused)}
    assert {"dbfleet_dr_rpo_budget_ratio", "dbfleet_dr_replay_lag_seconds", "dbfleet_dr_replay_lag_bytes"} <= samples
    standby.sql("SELECT pg_wal_replay_resume()")
    assert wait_for(lambda: observe(group.ctx).node("s1").lag_bytes == 0)  # type: ignore[union-attr]
    assert standby.sql("SELECT count(*) FROM h9_markers") == [(1,)]


def test_a_restore_command_fallback_to_a_repository_that_does_not_open_is_refused_before_cloning(
        env: dict[str, object]) -> None:
    group = Group(env["root"], env["coord"], env["history"], 1, repository="h19_missing")  # type: ignore[arg-type]
    env["groups"].append(group)  # type: ignore[attr-defined]
    event = setup(group.ctx)
    assert event.status == "failed" and "repository" in event.detail
    assert not (group.standbys[0].data / "PG_VERSION").exists()


def test_kill9_primary_automatic_failover_fences_and_rejoins_with_pg_rewind(env: dict[str, object]) -> None:
    group = make_group(env, auto_failover_enabled=True, failover_after=1.0, rpo_minutes=1, restart_in_place=False)
    w1, w2 = group.observer("w1"), group.observer("w2")
    for seq in range(1, 51):
        write_marker(group.primary, seq)
    assert wait_for(lambda: observe(w1).node("s1").lag_bytes == 0)  # type: ignore[union-attr]
    observe(w2)
    group.primary.kill9()  # and nobody restarts it
    event = None
    deadline = time.monotonic() + 60
    while event is None and time.monotonic() < deadline:
        for obs in (w1, w2):
            _status, event = observe_and_act(obs)
            if event is not None:
                break
        time.sleep(0.2)
    assert event is not None and event.status == "promoted", event and event.detail
    assert event.new_primary == "s1" and event.old_primary == "p" and event.data_loss_bytes == 0
    assert event.downtime_seconds is not None and event.downtime_seconds >= 1.0  # failover_after, at least
    new = group.standbys[0]
    write_marker(new, 51)  # writes succeed on the new primary
    assert new.sql("SELECT count(*) FROM h9_markers") == [(51,)]
    # the old primary, restarted by someone, comes up fenced: in recovery and read-only
    group.primary.start()
    assert group.primary.sql("SELECT pg_is_in_recovery()") == [(True,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        write_marker(group.primary, 999)
    back = rejoin(group.ctx, "p")
    assert back.status == "done", back.detail
    write_marker(new, 52)
    assert wait_for(lambda: group.primary.sql("SELECT max(seq) FROM h9_markers") == [(52,)])
    status = observe(group.ctx)
    assert status.primary == "s1" and status.node("p").role == "standby"  # type: ignore[union-attr]
    assert status.node("p").streaming and status.node("s1").timeline == 2  # type: ignore[union-attr]
    history = env["history"].query(script_type="dr_failover")  # type: ignore[attr-defined]
    assert history and history[0]["summary"]["new_primary"] == "s1"


def test_failover_is_refused_when_lag_exceeds_rpo_and_forced_with_force(env: dict[str, object]) -> None:
    group = make_group(env, rpo_minutes=0.01)  # 0.6 s
    standby = group.standbys[0]
    write_marker(group.primary, 0)  # one commit the standby replays before it is cut off
    assert wait_for(lambda: standby.sql("SELECT count(*) FROM h9_markers") == [(1,)])
    standby.sql("ALTER SYSTEM SET primary_conninfo = ''")  # the standby stops receiving WAL
    standby.sql("SELECT pg_reload_conf()")
    assert wait_for(lambda: standby.sql("SELECT count(*) FROM pg_stat_wal_receiver") == [(0,)])
    time.sleep(1.0)
    for seq in range(1, 11):
        write_marker(group.primary, seq)
    seen = observe(group.ctx)
    assert seen.node("s1").lag_seconds > 0.6  # type: ignore[union-attr,operator]
    group.primary.kill9()
    refused = failover(group.ctx, reason="test")
    assert refused.status == "refused" and "exceeds RPO" in refused.detail
    assert standby.sql("SELECT pg_is_in_recovery()") == [(True,)]
    forced = failover(group.ctx, reason="test", force=True)
    assert forced.status == "promoted" and forced.forced and forced.data_loss_bytes and forced.data_loss_bytes > 0
    assert standby.sql("SELECT count(*) FROM h9_markers") == [(1,)]  # the loss the estimate announced
    group.primary.start()  # its history diverged (10 markers the new primary never got): pg_rewind drops them
    back = rejoin(group.ctx, "p")
    assert back.status == "done", (back.detail, back.steps)
    write_marker(standby, 11)
    assert wait_for(lambda: group.primary.sql("SELECT array_agg(seq ORDER BY seq) FROM h9_markers") == [([0, 11],)])


def test_racing_failovers_promote_exactly_once_and_a_stale_token_cannot_promote(env: dict[str, object]) -> None:
    group = make_group(env, n_standbys=2, lease_ttl=1.0)
    observe(group.ctx)
    group.primary.kill9()
    fence_log = env["root"] / "fenced.txt"  # type: ignore[operator]
    group.ctx.cfg.fence_command = ["sh", "-c", f'echo "$DBFLEET_DR_TOKEN" >> {fence_log}']
    barrier = threading.Barrier(4)
    events = []

    def race(name: str) -> None:
        barrier.wait()
        events.append(failover(group.observer(name), reason="race"))

    threads = [threading.Thread(target=race, args=(f"racer{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(events) == 4  # every racer came back with an event (none died recording its refusal)
    promoted = [e for e in events if e.status == "promoted"]
    assert len(promoted) == 1, [(e.status, e.detail) for e in events]
    primaries = [c.name for c in group.standbys if c.sql("SELECT pg_is_in_recovery()") == [(False,)]]
    assert primaries == [promoted[0].new_primary]
    assert all(e.status in ("skipped", "refused") for e in events if e is not promoted[0])
    assert fence_log.read_text().split() == [str(promoted[0].token)]  # the fence command ran, recorded


def test_a_stale_observer_cannot_promote_after_its_lease_expired(env: dict[str, object]) -> None:
    group = make_group(env, lease_ttl=0.5)
    observe(group.ctx)
    group.primary.kill9()
    slow, fast = group.observer("slow"), group.observer("fast")
    taken: list[object] = []

    def pause_past_lease() -> None:  # a GC pause / partition right before promotion
        time.sleep(0.8)
        taken.append(fast.coord.acquire(fast.dr_id, "fast", 30))

    stale = failover(slow, reason="stale", before_claim=pause_past_lease)
    assert stale.status == "stale" and taken and taken[0] is not None
    assert group.standbys[0].sql("SELECT pg_is_in_recovery()") == [(True,)]


def test_no_automatic_promotion_while_the_primary_is_reachable(env: dict[str, object]) -> None:
    group = make_group(env, auto_failover_enabled=True, failover_after=0.5)
    standby = group.standbys[0]
    standby.sql("ALTER SYSTEM SET primary_conninfo = ''")  # a partition between standby and primary
    standby.sql("SELECT pg_reload_conf()")
    assert wait_for(lambda: standby.sql("SELECT count(*) FROM pg_stat_wal_receiver") == [(0,)])
    w1, w2 = group.observer("w1"), group.observer("w2")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for obs in (w1, w2):
            status, event = observe_and_act(obs)
            assert event is None and status.primary_reachable
            assert "standby s1 is not streaming" in status.problems
        time.sleep(0.2)
    assert standby.sql("SELECT pg_is_in_recovery()") == [(True,)]
    refused = failover(group.ctx, reason="manual while healthy")
    assert refused.status == "refused" and standby.sql("SELECT pg_is_in_recovery()") == [(True,)]


def test_switchover_and_back_loses_no_marker(env: dict[str, object]) -> None:
    group = make_group(env)
    stop, acked = threading.Event(), []

    def writer() -> None:
        seq = 0
        while not stop.is_set():
            current = group.clusters[group.ctx.current_primary()]
            try:
                write_marker(current, seq + 1)
                seq += 1
                acked.append(seq)
            except psycopg.errors.UniqueViolation:  # committed before the connection broke: not lost
                seq += 1
            except Exception:
                time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert wait_for(lambda: len(acked) > 20)
        there = switchover(group.ctx)
        assert there.status == "done", there.detail
        assert wait_for(lambda: len(acked) > 40)
        back = switchover(group.ctx, "p")
        assert back.status == "done", back.detail
        assert wait_for(lambda: len(acked) > 60)
    finally:
        stop.set()
        thread.join()
    assert there.new_primary == "s1" and back.new_primary == "p" and there.data_loss_bytes == 0
    rows = {r[0] for r in group.primary.sql("SELECT seq FROM h9_markers")}
    assert set(acked) <= rows
    assert wait_for(lambda: group.standbys[0].sql("SELECT count(*) FROM h9_markers") == [(len(rows),)])


def test_a_drill_on_a_throwaway_copy_measures_rto_and_rpo_and_fails_over_target(env: dict[str, object]) -> None:
    group = make_group(env, failover_after=0.5, rto_minutes=0.0001)  # 6 ms: no failover can meet it
    event = drill(group.ctx, rate=20.0, warmup=1.0)
    m = event.measures
    assert event.kind == "drill" and m["markers_acknowledged"] > 5, event.detail
    assert m["rto_seconds"] > 0 and m["fault_to_write_seconds"] >= 0.5  # failover_after is part of it
    assert isinstance(m["rpo_markers"], int) and m["rpo_seconds"] >= 0
    assert event.status == "failed" and "RTO" in event.detail  # the target was missed, and says so
    assert group.primary.sql("SELECT pg_is_in_recovery()") == [(False,)]  # the real group is untouched
    assert group.standbys[0].sql("SELECT pg_is_in_recovery()") == [(True,)]
    assert not list(group.primary.data.parent.glob("dbfleet-drill-*"))  # scratch clusters removed
    runs = env["history"].query(script_type="dr_drill")  # type: ignore[attr-defined]
    assert runs and runs[0]["status"] == "failed" and runs[0]["summary"]["measures"]["rto_seconds"] == m["rto_seconds"]


def test_a_crashed_primary_on_this_host_is_restarted_in_place_not_failed_over(env: dict[str, object]) -> None:
    group = make_group(env, auto_failover_enabled=True, failover_after=0.5)
    write_marker(group.primary, 1)
    observe(group.ctx)
    pid = group.primary.postmaster_pid()
    group.primary.kill9()
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists())  # gone, and reaped by init (not a zombie)
    _status, event = observe_and_act(group.observer("w2"))
    assert event is not None and event.kind == "restart" and event.status == "done", event and event.detail
    write_marker(group.primary, 2)  # the same primary accepts writes again
    assert group.standbys[0].sql("SELECT pg_is_in_recovery()") == [(True,)]
    assert wait_for(lambda: group.standbys[0].sql("SELECT count(*) FROM h9_markers") == [(2,)])
    assert env["coord"].events(group.ctx.dr_id)[0]["kind"] == "restart"  # type: ignore[attr-defined]



def test_a_coordinator_that_lost_its_state_never_fences_the_real_primary(env: dict[str, object]) -> None:
    group = make_group(env)
    moved = failover(group.ctx, reason="forced while healthy", force=True)
    assert moved.status == "promoted" and moved.fenced_sql
    env["coord"].forget(group.ctx.dr_id)  # type: ignore[attr-defined]  # Redis flushed: back to the configured primary
    status = observe(group.ctx)
    assert any("check dbfleet dr status" in p for p in status.problems)
    write_marker(group.standbys[0], 7)  # the real primary still takes writes
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        write_marker(group.primary, 8)


def test_synchronous_mode_kill9_under_a_writer_loses_no_acknowledged_marker(env: dict[str, object]) -> None:
    group = make_group(env, n_standbys=2, synchronous=True, rpo_minutes=0)  # lag would be refused without sync
    primary = group.primary
    names = [group.ctx.cfg.slot_name(s) for s in ("s1", "s2")]
    assert primary.sql("SHOW synchronous_standby_names") == [(f'ANY 1 ("{names[0]}", "{names[1]}")',)]
    assert primary.sql("SHOW synchronous_commit") == [("on",)]
    stop, acked = threading.Event(), []

    def writer() -> None:  # one connection per marker; a marker counts only once its COMMIT returned
        seq = 0
        while not stop.is_set():
            seq += 1
            try:
                write_marker(primary, seq)
                acked.append(seq)
            except Exception:
                return

    thread = threading.Thread(target=writer)
    thread.start()
    assert wait_for(lambda: len(acked) > 30)
    status = observe(group.ctx)
    assert {status.node(s).sync_state for s in ("s1", "s2")} == {"quorum"}  # type: ignore[union-attr]
    for standby in group.standbys:  # replay falls behind; flushed (acknowledged) WAL does not
        standby.sql("SELECT pg_wal_replay_pause()")
    assert wait_for(lambda: len(acked) > 60)
    primary.kill9()
    thread.join(10)
    for standby in group.standbys:
        standby.sql("SELECT pg_wal_replay_resume()")
    event = failover(group.ctx, reason="sync test")
    assert event.status == "promoted", event.detail
    assert event.data_loss_bytes == 0 and not event.forced
    assert any("every acknowledged commit" in s for s in event.steps), event.steps
    new = group.clusters[event.new_primary or ""]
    have = {r[0] for r in new.sql("SELECT seq FROM h9_markers")}
    assert set(acked) <= have, sorted(set(acked) - have)[:10]
    write_marker(new, 10_000)  # never blocks: the new primary waits only for standbys that already stream
    others = [group.ctx.cfg.slot_name(s) for s in ("p", "s1", "s2") if s != new.name]
    full = "ANY 1 (" + ", ".join(f'"{n}"' for n in others) + ")"
    assert wait_for(lambda: (observe(group.ctx), new.sql("SHOW synchronous_standby_names"))[1] == [(full,)])
    write_marker(new, 10_001)  # acknowledged by the other standby, which follows the new primary
    group.primary.start()
    back = rejoin(group.ctx, "p")
    assert back.status == "done", back.detail
    assert new.sql("SHOW synchronous_standby_names") == [(full,)]
    write_marker(new, 10_002)


def _embedded_bin() -> Path:
    try:
        from engines.embedded.postgres import bin_dir

        return bin_dir()
    except ImportError:
        return Path("/nonexistent/embedded-postgres")


def test_postgresql_18_failover_and_rejoin_with_pg_rewind_18(env: dict[str, object]) -> None:
    bindir = _embedded_bin()
    if not (bindir / "pg_rewind").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must not skip: no PostgreSQL 18 binaries in {bindir}")
        pytest.skip(f"no embedded PostgreSQL 18 binaries (pg_rewind) in {bindir}")
    group = make_group(env, bindir=bindir, rpo_minutes=1)
    primary, standby = group.primary, group.standbys[0]
    assert primary.sql("SHOW server_version_num")[0][0].startswith("18")
    for seq in range(1, 21):
        write_marker(primary, seq)
    assert wait_for(lambda: observe(group.ctx).node("s1").lag_bytes == 0)  # type: ignore[union-attr]
    primary.kill9()
    event = failover(group.ctx, reason="pg18")
    assert event.status == "promoted" and event.new_primary == "s1", event.detail
    write_marker(standby, 21)
    primary.start()  # fenced by the failover: comes up in recovery
    assert primary.sql("SELECT pg_is_in_recovery()") == [(True,)]
    back = rejoin(group.ctx, "p")
    assert back.status == "done", back.detail
    assert any("pg_rewind" in s for s in back.steps), back.steps
    write_marker(standby, 22)
    assert wait_for(lambda: primary.sql("SELECT max(seq) FROM h9_markers") == [(22,)])
    assert observe(group.ctx).node("p").streaming  # type: ignore[union-attr]
