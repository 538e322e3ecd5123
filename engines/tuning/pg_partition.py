"""Online conversion of a plain table into a range-partitioned one (``partitioning_strategy: time_based``).

Each step is resumable from its job row in ``_dbfleet_tuning.partition_jobs`` (in the database itself):

1. **prepare**, one transaction under ``lock_timeout``: the partitioned copy (partitions of one month/week from
   the oldest row to a few past the newest, and a DEFAULT one; primary key (key, time column); the table's
   plain B-tree indexes and outgoing foreign keys), a trigger on the table that applies every insert, update
   and delete to the copy, and the job row with the key range to copy. CREATE TRIGGER waits for the writers in
   flight, so every write after it goes through the trigger and the range read then is all the copy must add.
2. **copy**: key-range batches ``INSERT ... SELECT ... FOR SHARE ON CONFLICT DO NOTHING``, each committed with
   its checkpoint: a kill loses at most the batch in flight and a rerun continues after the checkpoint.
   ``FOR SHARE`` orders each batch with the writers' updates, so the trigger's newer row always wins.
3. **swap**: the two row counts and checksums compared in one REPEATABLE READ snapshot (no lock: the trigger
   writes the copy in the writer's own transaction), then a short transaction under ``lock_timeout``, retried
   with backoff: lock the table, rename the table to ``<table>_dbfleet_old`` and the copy to the table's name,
   hand the key's sequence over, and mirror writes back into the old table so that ``revert`` (a swap back)
   loses nothing. Giving up leaves the original untouched: the trigger is disarmed at once (no lock needed)
   and the copy dropped, now or by the next run when a writer still holds its lock.

Why not the migration engine's batch copier (engines/migration): it copies between two databases through
``Source``/``Target`` objects, a plan and the ``_dbfleet_migration`` checkpoint store, and its target prepares
its own (unpartitioned) DDL; here source and copy are in one database, a batch is one server-side
``INSERT ... SELECT`` (no row travels through the worker), and the concurrent writes are caught by a trigger,
not a watermark. Fitting that in would need large edits there; this copier keeps the same rule (a batch and
its checkpoint commit together).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from psycopg import errors, sql

from engines.tuning.base import CannotTune, Change, PartitionAdvice, TuningSettings
from engines.tuning.pg_partition_ddl import (
    JOBS,
    Layout,
    checks,
    create_copy,
    disarm,
    drop_mirror,
    fingerprint,
    mirror,
    move_sequence,
)

log = logging.getLogger("dbfleet.tuning")
JOB_TABLE = """
CREATE SCHEMA IF NOT EXISTS _dbfleet_tuning;
CREATE TABLE IF NOT EXISTS _dbfleet_tuning.partition_jobs (
    job_id text PRIMARY KEY, schema_name text NOT NULL, table_name text NOT NULL, column_name text NOT NULL,
    interval_name text NOT NULL, key_column text NOT NULL, state text NOT NULL, low_key bigint, high_key bigint,
    last_key bigint, copied bigint NOT NULL DEFAULT 0, reason text, started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now())"""
LIVE = ("copying", "swapped", "aborting")  # states with objects in the database


class SwapTimeout(Exception):
    """The swap could not take its lock within lock_timeout on any attempt."""


def _lock_timeout(conn: Any, settings: TuningSettings) -> None:
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(settings.lock_timeout_ms)}ms")))


class PartitionConverter:
    """Converts one table on an autocommit session; ``run`` does every step left, from where a previous run stopped."""

    def __init__(self, conn: Any, settings: TuningSettings, schema: str, table: str, column: str,
                 interval: str) -> None:
        self.conn = conn
        self.settings = settings
        self.target = (schema, table, column, interval)
        conn.execute(JOB_TABLE)

    def job(self) -> dict[str, Any] | None:
        """The table's live job, if any."""
        cur = self.conn.execute(sql.SQL("SELECT * FROM {} WHERE schema_name = %s AND table_name = %s AND state = ANY(%s)"
                                        " ORDER BY started_at DESC LIMIT 1").format(JOBS),
                                (self.target[0], self.target[1], list(LIVE)))
        row = cur.fetchone()
        return None if row is None else dict(zip([d.name for d in cur.description], row, strict=True))

    def layout(self, job: dict[str, Any]) -> Layout:
        return Layout.of(job["schema_name"], job["table_name"], job["column_name"], job["interval_name"],
                         job["key_column"])

    def set_state(self, job_id: str, state: str, reason: str | None = None) -> None:
        self.conn.execute(sql.SQL("UPDATE {} SET state = %s, reason = coalesce(%s, reason), updated_at = now()"
                                  " WHERE job_id = %s").format(JOBS), (state, reason, job_id))

    def run(self) -> dict[str, Any]:
        """Prepare (or resume), copy, swap; the evidence. CannotTune when the table cannot be converted;
        SwapTimeout after the last attempt (the conversion is then aborted, the original intact)."""
        job = self.job()
        evidence: dict[str, Any] = {}
        if job and job["state"] == "aborting":
            evidence["cleanup"] = self.finish_abort(job)
            job = self.job()
        if job and job["state"] == "swapped":
            return {"job_id": job["job_id"], "state": "swapped", "reason": "already converted"}
        started = time.perf_counter()
        if job is None:
            job, evidence["statements"] = self.prepare()
        else:
            evidence["resumed_from_key"] = job["last_key"]
        evidence |= {"job_id": job["job_id"], **self.copy(job)}
        copied = time.perf_counter()
        evidence |= self.swap(job)
        evidence |= {"copy_seconds": round(copied - started, 3), "swap_seconds": round(time.perf_counter() - copied, 3)}
        return evidence

    def prepare(self) -> tuple[dict[str, Any], list[str]]:
        """Create the copy, its partitions and the mirroring trigger, and the job row (one transaction)."""
        schema, table, column, interval = self.target
        job_id = f"part-{uuid.uuid4().hex[:12]}"
        with self.conn.transaction():
            _lock_timeout(self.conn, self.settings)
            key = checks(self.conn, schema, table, column)
            lay = Layout.of(schema, table, column, interval, key)
            statements = create_copy(self.conn, lay)
            mirror(self.conn, lay, "table", "new", "fwd")  # waits for the writers in flight (lock_timeout)
            low, high = self.conn.execute(sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(
                k=sql.Identifier(key), t=lay.ident("table"))).fetchone()
            self.conn.execute(sql.SQL("INSERT INTO {} (job_id, schema_name, table_name, column_name, interval_name,"
                                      " key_column, state, low_key, high_key, last_key) VALUES"
                                      " (%s, %s, %s, %s, %s, %s, 'copying', %s, %s, %s)").format(JOBS),
                              (job_id, schema, table, column, interval, key, low, high,
                               None if low is None else int(low) - 1))
        job = self.job()
        assert job is not None
        return job, statements

    def copy(self, job: dict[str, Any]) -> dict[str, Any]:
        """Copy the key range in batches from the checkpoint on; each batch commits with its checkpoint."""
        lay, batches = self.layout(job), 0
        key, last, high = sql.Identifier(lay.key), job["last_key"], job["high_key"]
        size = max(1, int(self.settings.partition_batch_rows))
        while last is not None and high is not None and last < high:
            upper = self.conn.execute(sql.SQL("SELECT {k} FROM {t} WHERE {k} > %s AND {k} <= %s ORDER BY {k}"
                                              " OFFSET %s LIMIT 1").format(k=key, t=lay.ident("table")),
                                      (last, high, size - 1)).fetchone()
            upper = high if upper is None else int(upper[0])
            with self.conn.transaction():
                n = self.conn.execute(sql.SQL(
                    "INSERT INTO {new} OVERRIDING SYSTEM VALUE SELECT * FROM {t} WHERE {k} > %s AND {k} <= %s"
                    " FOR SHARE ON CONFLICT DO NOTHING").format(new=lay.ident("new"), t=lay.ident("table"), k=key),
                    (last, upper)).rowcount
                self.conn.execute(sql.SQL("UPDATE {} SET last_key = %s, copied = copied + %s, updated_at = now()"
                                          " WHERE job_id = %s").format(JOBS), (upper, max(n, 0), job["job_id"]))
            last, batches = upper, batches + 1
            if self.settings.partition_batch_pause_ms:
                time.sleep(self.settings.partition_batch_pause_ms / 1000.0)  # spare the server's I/O
        return {"batches": batches}

    def verify(self, lay: Layout) -> dict[str, Any]:
        """Row count and checksum of the table and its copy, compared in one snapshot without any lock: the
        trigger writes the copy in the writer's own transaction, so every snapshot sees both alike."""
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            before, after = fingerprint(self.conn, lay, "table"), fingerprint(self.conn, lay, "new")
        if before != after:
            raise CannotTune(f"the partitioned copy of {lay.schema}.{lay.table} differs ({after[0]} rows vs "
                             f"{before[0]}): not swapped; rerun to retry, or revert the change")
        return {"rows": before[0], "checksum": str(before[1])}

    def swap(self, job: dict[str, Any]) -> dict[str, Any]:
        """Verify, then rename under a short lock, retried with backoff; after the last attempt, abort."""
        lay, pause = self.layout(job), 0.2
        checked = self.verify(lay)
        attempts = max(1, int(self.settings.partition_swap_attempts))
        for attempt in range(1, attempts + 1):
            try:
                with self.conn.transaction():
                    _lock_timeout(self.conn, self.settings)
                    self.conn.execute(sql.SQL("LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE").format(
                        lay.ident("table"), lay.ident("new")))
                    locked = time.perf_counter()
                    self._swap_locked(job, lay)
                    return checked | {"swap_attempts": attempt, "old_table": lay.old, "state": "swapped",
                                      "locked_ms": round(1000 * (time.perf_counter() - locked), 1)}
            except errors.LockNotAvailable:
                log.info("partition swap of %s.%s: lock not granted (attempt %d of %d)", lay.schema, lay.table,
                         attempt, attempts)
                if attempt < attempts:
                    time.sleep(pause)
                    pause = min(pause * 2, 10.0)
        reason = (f"the swap did not get its lock within lock_timeout {self.settings.lock_timeout_ms} ms in {attempts} "
                  "attempts (long transactions on the table): conversion aborted, the table is unchanged")
        self.abort(job, reason)
        raise SwapTimeout(reason)

    def _swap_locked(self, job: dict[str, Any], lay: Layout) -> None:
        drop_mirror(self.conn, lay, "table", "fwd")
        self.conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(lay.ident("table"), sql.Identifier(lay.old)))
        self.conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(lay.ident("new"), sql.Identifier(lay.table)))
        move_sequence(self.conn, lay, "old", "table")
        mirror(self.conn, lay, "table", "old", "rev")  # writes reach the old table too: revert loses nothing
        self.set_state(job["job_id"], "swapped")

    def abort(self, job: dict[str, Any], reason: str) -> None:
        """Stop a conversion: disarm the trigger now (no lock), then drop it and the copy when the lock comes."""
        lay = self.layout(job)
        disarm(self.conn, lay, "fwd")
        self.set_state(job["job_id"], "aborting", reason)
        self.finish_abort(job)

    def finish_abort(self, job: dict[str, Any]) -> str:
        """Drop the disarmed trigger and the copy (under lock_timeout); what is left, when a writer holds a lock."""
        lay = self.layout(job)
        try:
            with self.conn.transaction():
                _lock_timeout(self.conn, self.settings)
                drop_mirror(self.conn, lay, "table", "fwd")
                self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(lay.ident("new")))
                self.set_state(job["job_id"], "aborted")
        except errors.LockNotAvailable:
            return (f"the disarmed trigger and the copy {lay.new} are still there (a writer holds its lock): the "
                    "next tuning apply of this table drops them")
        return f"dropped the copy {lay.new} and the trigger"


def revert_partition(conn: Any, reverse: dict[str, Any], settings: TuningSettings) -> str:
    """Swap back to the original table (kept current by the reverse trigger) and drop the partitioned copy."""
    converter = PartitionConverter(conn, settings, reverse["schema"], reverse["table"], "", "")
    job = converter.job()
    if job is None or job["job_id"] != reverse["job_id"]:
        return "already reverted (no live conversion of this table)"
    lay = converter.layout(job)
    if job["state"] != "swapped":
        converter.abort(job, "reverted before the swap")
        return "conversion stopped before its swap; the table was never changed"
    with conn.transaction():
        _lock_timeout(conn, settings)
        conn.execute(sql.SQL("LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE").format(lay.ident("table"), lay.ident("old")))
        drop_mirror(conn, lay, "table", "rev")
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(lay.ident("table"), sql.Identifier(lay.new)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(lay.ident("old"), sql.Identifier(lay.table)))
        move_sequence(conn, lay, "new", "table")
        conn.execute(sql.SQL("DROP TABLE {}").format(lay.ident("new")))
        converter.set_state(job["job_id"], "reverted")
    return "swapped back to the original table; the partitioned copy is dropped"


def convert(conn: Any, advice: PartitionAdvice, settings: TuningSettings, database_id: str) -> Change:
    """Apply one partitioning plan online; the change records the evidence and how to swap back."""
    target = {"schema": advice.schema, "table": advice.table, "column": advice.column, "interval": advice.interval}
    change = Change("partition_table", database_id, target, "failed", {},
                    {"action": "unpartition", "schema": advice.schema, "table": advice.table})
    converter = PartitionConverter(conn, settings, advice.schema, advice.table, advice.column, advice.interval)
    try:
        change.evidence = converter.run()
    except (CannotTune, SwapTimeout) as exc:
        change.evidence["reason"] = str(exc)
        return change
    except errors.LockNotAvailable:
        change.evidence["reason"] = (f"preparing the conversion did not get its lock within lock_timeout "
                                     f"{settings.lock_timeout_ms} ms (writers in long transactions): nothing changed")
        return change
    change.reverse["job_id"] = change.evidence["job_id"]
    change.status = "kept"
    change.statement = "; ".join(change.evidence.pop("statements", []))
    return change
