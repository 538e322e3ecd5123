"""`dbfleet wal stream`: pg_receivewal with a replication slot into the repository, on a real PostgreSQL 15 cluster
that has no archive_command (archive_mode = off), then a PITR to the latest streamed WAL.

The stream runs as its own long-running process (the real CLI, as the cluster's OS user, see test_pitr.py)
and is stopped with SIGTERM, as a service manager would.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import psutil
import pytest

from engines.backup.wal import names
from engines.backup.wal.archive import WalArchive
from engines.config import Thresholds, load_config
from engines.health import run_health
from tests.integration.test_pitr import PG15, RUN_AS, _new_world, _restore
from tests.servers import CANARY

pytestmark = pytest.mark.integration
DB_ID = "h18a_stream"


def _wait(what: str, ready: object, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_wal_stream_pushes_completed_segments_and_a_pitr_to_latest_recovers_from_them() -> None:
    env = _new_world(PG15, DB_ID, archive_mode="off")
    slot = names.stream_slot(DB_ID)
    stream = None
    try:
        env.sql("CREATE TABLE markers (n int PRIMARY KEY)")
        stream = subprocess.Popen([env.dbfleet, "--config", str(env.config), "wal", "stream", DB_ID], user=RUN_AS,
                                  env=env.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait("the stream's slot to be active", lambda: env.sql(
            "SELECT array_agg(slot_name) FROM pg_replication_slots WHERE active")[0][0] == [slot])
        env.run("backups", "run", DB_ID, "--physical", "--local")
        for first in range(1, 201, 20):  # a few transactions
            env.sql(f"INSERT INTO markers SELECT generate_series({first}, {first + 19})")  # noqa: S608 (ints)
        closed = env.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        archive = WalArchive(env.repo(), DB_ID)
        _wait(f"{closed} in the repository", lambda: archive.load(closed) is not None)

        db = load_config(env.config).database(DB_ID)
        context = {"wal_archive": lambda d: WalArchive(env.repo(), d.id)}
        running = {c.check: c for c in run_health(db, memory={}, context=context).checks}
        assert running["wal_stream"].status == "ok"
        assert "wal_archive_lag" not in running  # no archive_command here: the stream is the archive
        assert running["wal_archive_gaps"].status == "ok"

        # a stream that hangs (pg_receivewal stopped, its connection still open) is critical too
        receiver = next(p for p in psutil.Process(stream.pid).children(recursive=True) if p.name() == "pg_receivewal")
        touchy = db.model_copy(update={"thresholds": Thresholds(wal_stream_stall_seconds=1)})  # type: ignore[call-arg]
        receiver.suspend()
        try:
            _wait("the hung stream to be reported", lambda: "has not replied" in (
                run_health(touchy, memory={}, context=context).check("wal_stream").hint or ""), 120)  # type: ignore[union-attr]
        finally:
            receiver.resume()

        stream.send_signal(signal.SIGTERM)
        _out, err = stream.communicate(timeout=120)
        assert stream.returncode == 0, err[-2000:]
        assert f"wal stream {closed}: archived" in err
        assert all(not n.endswith(".partial") for n in archive.names())  # only completed files are pushed
        stopped = run_health(db, memory={}, context=context).check("wal_stream")
        assert stopped is not None and stopped.status == "critical" and slot in (stopped.hint or "")

        proc, port = _restore(env, "r_stream", "--latest")
        try:
            assert {n for (n,) in env.sql("SELECT n FROM markers", port)} == set(range(1, 201))
        finally:
            env.pg("-m", "fast", "stop", data=env.root / "r_stream")
        assert CANARY not in err + proc.stdout + proc.stderr
    finally:
        if stream is not None and stream.poll() is None:
            stream.kill()
            stream.wait()
        env.pg("-m", "immediate", "stop")
        shutil.rmtree(env.root, ignore_errors=True)
