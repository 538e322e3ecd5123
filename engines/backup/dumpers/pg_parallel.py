"""Restore a custom-format dump while it streams out of the repository, scheduled per TOC entry.

What ``pg_restore --jobs`` does from a seekable file, done from the chunk stream without spooling it:

- the TOC (read from the first chunks) is written to a small TOC-only archive; pg_restore itself
  picks the entries (``-l`` with the same ``--table``/``--no-owner`` options) and runs the SQL of
  every non-data entry from that file with ``-L``, so ownership, comments and ACLs are its own;
- the data blocks stream, in dump order, through one ``pg_restore -f -`` (which unframes them in C)
  into ``COPY ... FROM STDIN``; a table created in this restore is truncated and loaded with
  ``FREEZE`` in one transaction, so index builds and foreign-key checks later find frozen,
  all-visible pages instead of setting (and WAL-logging) hint bits on every page; a table of at
  least SPLIT_ROWS rows (the manifest's exact source count) is loaded over ``jobs`` COPY sessions
  at once instead, whole lines round robin (pg_restore loads one table in one worker);
- a post-data entry (index, constraint, foreign key, trigger, sequence value) starts as soon as
  everything it depends on is in, with TABLE dependencies pointed at that table's data (as
  pg_restore does), on at most ``jobs`` sessions including the loading one; entries that take an
  exclusive lock on a table never run together with another locking the same table; the largest
  tables' entries go first. ACLs, event triggers and materialized-view refreshes run last. Those
  sessions get ``maintenance_work_mem``/``work_mem`` for in-memory sorts and hashes (POST_DATA_SETTINGS).

Every chunk is authenticated (and the stream's sha256 checked at its end) before its bytes reach
the target: this runs only into a staging database the caller drops on any failure.
"""

from __future__ import annotations

import logging
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from engines.backup import tools
from engines.backup.dumpers.pg_toc import NeedMore, Toc, TocEntry, Unsupported, parse_toc
from engines.errors import IntegrityError

log = logging.getLogger("dbfleet.backup")

# pg_restore's later restore passes (pg_backup_archiver.c _tocEntryRestorePass)
ACL_PASS = {"ACL", "ACL LANGUAGE", "DEFAULT ACL"}
POST_ACL_PASS = {"EVENT TRIGGER", "MATERIALIZED VIEW DATA"}
LARGE_OBJECTS = {"BLOB", "BLOBS", "BLOB METADATA", "LARGE OBJECT"}
HEAVY = {"INDEX", "CONSTRAINT", "FK CONSTRAINT", "INDEX ATTACH"}
READ_SIZE = 1 << 20
SPLIT_ROWS = 500_000  # a table with at least this many rows (source count) loads over ``jobs`` COPY sessions
# the sessions building indexes and checking foreign keys sort and hash in memory where the server's
# defaults (64 MB / 4 MB) would spill to disk; the staging database is dropped if the restore fails,
# and the final rename commits synchronously (flushing everything before it)
POST_DATA_SETTINGS = {"maintenance_work_mem": "256MB", "work_mem": "64MB", "synchronous_commit": "off"}


class TocReady(Exception):
    """Raised by the TOC sink to stop the first fetch once the TOC is complete."""


class TocSink:
    """A fetch sink that keeps the stream's first bytes until the TOC parses."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.toc: Toc | None = None

    def write(self, data: bytes) -> int:
        self.buf += data
        try:
            self.toc = parse_toc(self.buf)
        except NeedMore:
            return len(data)
        raise TocReady


def read_toc(fetch: Callable[[str, Any], int]) -> tuple[Toc, bytes]:
    """The TOC of the ``dump`` stream and its bytes, from as few chunks as it spans (each verified)."""
    sink = TocSink()
    try:
        fetch("dump", sink)
    except TocReady:
        pass
    if sink.toc is None:
        raise IntegrityError("the dump stream ends before its table of contents does")
    return sink.toc, bytes(sink.buf[:sink.toc.end])


def plan_supported(toc: Toc) -> None:
    """Raise Unsupported for archives this scheduler leaves to plain pg_restore."""
    for entry in toc.entries:
        if entry.desc in LARGE_OBJECTS:
            raise Unsupported("large objects")
        if entry.had_dumper and entry.desc != "TABLE DATA":
            raise Unsupported(f"{entry.desc} data")


def selected_ids(pg_restore_args: list[str], toc_file: Path, env: dict[str, str], section: str) -> list[int]:
    """Dump ids pg_restore itself would restore in ``section`` with these options, in TOC order."""
    out = tools.run_tool([*pg_restore_args, "-l", f"--section={section}", str(toc_file)], env=env,
                         what="pg_restore -l")
    ids = []
    for line in out.splitlines():
        head = line.split(";", 1)[0].strip()
        if head.isdigit():
            ids.append(int(head))
    return ids


def list_file(directory: Path, name: str, ids: list[int]) -> Path:
    path = directory / name
    path.write_text("".join(f"{i};\n" for i in ids))
    return path


def restore_pass(entry: TocEntry) -> int:
    if entry.desc in ACL_PASS:
        return 1
    if entry.desc in POST_ACL_PASS or (entry.desc == "COMMENT" and entry.tag.startswith("EVENT TRIGGER ")):
        return 2
    return 0


@dataclass
class Item:
    """One scheduled non-data entry."""

    entry: TocEntry
    deps: set[int]
    locks: set[int]
    weight: int = 0  # bytes of the table data it waits for: biggest first
    state: str = "waiting"  # waiting | ready | running | done


@dataclass
class Scheduler:
    """Runs post-data entries with pg_restore -L as their dependencies complete."""

    run_sql: Callable[[list[TocEntry]], None]
    jobs: int
    items: dict[int, Item] = field(default_factory=dict)
    done_ids: set[int] = field(default_factory=set)
    loading: bool = True
    running: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.cond = threading.Condition()
        self.pool = ThreadPoolExecutor(max(1, self.jobs), thread_name_prefix="dbfleet-pgrestore")
        self.batches = 0

    def finished(self, dump_id: int, weight: int = 0) -> None:
        """``dump_id`` (a data entry or a scheduled one) is in: release what waited for it."""
        with self.cond:
            self.done_ids.add(dump_id)
            if weight:
                for item in self.items.values():
                    if dump_id in item.deps:
                        item.weight = max(item.weight, weight)
            self._dispatch()

    def data_done(self) -> None:
        with self.cond:
            self.loading = False
            self._dispatch()

    def _capacity(self) -> int:
        return (self.jobs - 1 if self.loading else self.jobs) - self.running  # the loading session counts

    def _dispatch(self) -> None:
        if self.error is not None:
            return
        ready = [i for i in self.items.values() if i.state == "waiting" and i.deps <= self.done_ids]
        ready.sort(key=lambda i: -i.weight)  # stable: TOC order among equals
        held: set[int] = set().union(*(i.locks for i in self.items.values() if i.state == "running"))
        light = [i for i in ready if i.entry.desc not in HEAVY and not (i.locks & held)]
        heavy = [i for i in ready if i.entry.desc in HEAVY]
        batches: list[list[Item]] = []
        if light:
            batches.append(light)
            held |= set().union(*(i.locks for i in light))
        for item in heavy:
            if not (item.locks & held):
                batches.append([item])
                held |= item.locks
        for batch in batches:
            if self._capacity() <= 0:
                break
            for item in batch:
                item.state = "running"
            self.running += 1
            self.batches += 1
            self.pool.submit(self._run, batch)

    def _run(self, batch: list[Item]) -> None:
        try:
            self.run_sql([i.entry for i in batch])
        except BaseException as exc:
            with self.cond:
                self.error = self.error or exc
                self.running -= 1
                self.cond.notify_all()
            return
        with self.cond:
            self.running -= 1
            for item in batch:
                item.state = "done"
                self.done_ids.add(item.entry.dump_id)
            self._dispatch()
            self.cond.notify_all()

    def wait(self) -> None:
        """Until every item ran (raises the first failure)."""
        with self.cond:
            while self.error is None and (self.running or any(i.state != "done" for i in self.items.values())):
                if not self.running and not any(i.state == "waiting" and i.deps <= self.done_ids
                                                for i in self.items.values()):
                    stuck = [i.entry.dump_id for i in self.items.values() if i.state != "done"]
                    raise IntegrityError(f"restore scheduling: entries {stuck[:5]} wait for entries "
                                         "that are not in the archive")
                self.cond.wait(timeout=1.0)
                self._dispatch()
            if self.error is not None:
                raise self.error

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def build_items(toc: Toc, data_ids: list[int], scheduled_ids: list[int]) -> dict[int, Item]:
    """Scheduled entries with dependencies restricted to the restore and TABLE deps pointed at the table's data."""
    by_id = toc.by_id()
    table_data = {by_id[d].deps[0]: d for d in data_ids if by_id[d].deps}
    in_restore = set(data_ids) | set(scheduled_ids)
    items = {}
    for dump_id in scheduled_ids:
        entry = by_id[dump_id]
        deps, locks = set(), set()
        for dep in entry.deps:
            dep = table_data.get(dep, dep)
            if dep in in_restore and dep != dump_id:
                deps.add(dep)
            target = by_id.get(dep)
            if (entry.section == 4 and entry.desc != "INDEX" and target is not None
                    and target.desc in ("TABLE", "TABLE DATA")):
                locks.add(dep)
        items[dump_id] = Item(entry, deps, locks)
    return items


class CopyLoader:
    """Reads the ``pg_restore -f -`` script of the data entries and sends each table's rows with COPY."""

    def __init__(self, conn: psycopg.Connection[Any], entries: list[TocEntry], script: IO[bytes],
                 on_table: Callable[[TocEntry, int], None], *, toc: Toc | None = None,
                 connect: Callable[[], AbstractContextManager[Any]] | None = None, sessions: int = 1,
                 rows: dict[str, int] | None = None) -> None:
        self.conn = conn
        self.entries = entries
        self.script = script
        self.on_table = on_table
        self.toc = toc
        self.connect = connect
        self.sessions = sessions if connect is not None else 1
        self.rows = rows or {}
        self.buf = b""
        self.frozen = 0
        self.split = 0

    def _more(self) -> bool:
        data = self.script.read1(READ_SIZE)  # type: ignore[attr-defined]
        if not data:
            return False
        self.buf = self.buf + data if self.buf else data
        return True

    def run(self) -> None:
        for entry in self.entries:
            marker = entry.copy_stmt.encode("utf-8", errors="surrogateescape")
            if not marker.startswith(b"COPY ") or not marker.endswith(b" FROM stdin;\n"):
                raise IntegrityError(f"TABLE DATA {entry.namespace}.{entry.tag}: unexpected COPY statement")
            while (at := self.buf.find(marker)) < 0 or (at > 0 and self.buf[at - 1:at] != b"\n"):
                if not self._more():
                    raise IntegrityError(f"pg_restore did not produce the data of {entry.namespace}.{entry.tag}")
            self.buf = self.buf[at + len(marker):]
            self.on_table(entry, self._copy(entry, marker.decode("utf-8", errors="surrogateescape")))
        while self._more():  # the script's tail
            self.buf = b""

    def _freezable(self, entry: TocEntry, stmt: str) -> bool:
        row = self.conn.execute(
            "SELECT c.relkind = 'r' AND has_table_privilege(c.oid, 'TRUNCATE'), quote_ident(n.nspname) || '.' || "
            "quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", (entry.namespace, entry.tag)).fetchone()
        return bool(row and row[0] and stmt.startswith(f"COPY {row[1]} "))

    def _copy(self, entry: TocEntry, stmt: str) -> int:
        if self.sessions > 1 and self.rows.get(f"{entry.namespace}.{entry.tag}", 0) >= SPLIT_ROWS:
            return self._copy_split(entry, stmt)
        freeze = self._freezable(entry, stmt)
        body = stmt[:-len(";\n")] + (" WITH (FREEZE)" if freeze else "")
        with self.conn.transaction():
            if freeze:  # the table is new and empty: truncating it in this transaction allows FREEZE
                self.conn.execute(sql.SQL("TRUNCATE ONLY {}.{}").format(sql.Identifier(entry.namespace),
                                                                        sql.Identifier(entry.tag)))
            with self.conn.cursor().copy(body) as copy:  # type: ignore[arg-type]  # the archive's own COPY
                sent = self._pump(entry, copy.write)
        self.frozen += freeze
        return sent

    def _copy_split(self, entry: TocEntry, stmt: str) -> int:
        """A big table's rows over ``sessions`` COPY sessions at once (whole lines each, round robin): the
        server parses and inserts them in parallel, where one pg_restore worker loads a table alone. No
        FREEZE here: it needs the one transaction that truncated the table."""
        body = stmt[:-len(";\n")]
        queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=4) for _ in range(self.sessions)]
        errors: list[BaseException] = []

        def worker(q: queue.Queue[bytes | None]) -> None:
            try:
                assert self.connect is not None
                with self.connect() as connector:
                    conn = connector.conn
                    if self.toc is not None:
                        _session(conn, self.toc)
                    with conn.transaction(), conn.cursor().copy(body) as copy:  # type: ignore[arg-type]
                        while (item := q.get()) is not None:
                            copy.write(item)
            except BaseException as exc:
                errors.append(exc)
                while q.get() is not None:  # keep the producer from blocking on a dead session
                    pass

        threads = [threading.Thread(target=worker, args=(q,), name="dbfleet-copy-split", daemon=True)
                   for q in queues]
        for t in threads:
            t.start()
        carry = [b""]
        turn = [0]

        def put(data: bytes | memoryview) -> None:
            if errors:
                raise errors[0]
            block = carry[0] + bytes(data)
            cut = block.rfind(b"\n") + 1
            carry[0] = block[cut:]
            if cut:
                queues[turn[0] % len(queues)].put(block[:cut])
                turn[0] += 1

        try:
            sent = self._pump(entry, put)
            if carry[0]:
                raise IntegrityError(f"the data of {entry.namespace}.{entry.tag} ends inside a row")
        finally:
            for q in queues:
                q.put(None)
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        self.split += 1
        return sent

    def _pump(self, entry: TocEntry, write: Callable[[bytes], Any]) -> int:
        """Pass the rows of the current table to ``write`` up to its end-of-data line; returns the bytes."""
        sent = 0
        at_line_start = True  # the COPY line's newline: a table without rows ends at once
        while True:
            end = _terminator(at_line_start, self.buf)
            if end is not None:
                if end:
                    write(self.buf[:end])
                    sent += end
                self.buf = self.buf[end + 3:]
                return sent
            # all but the last 3 bytes (which may begin the end-of-data line) are rows
            cut = len(self.buf) - 3
            if cut > 0:
                write(self.buf[:cut])
                sent += cut
                at_line_start = self.buf[cut - 1:cut] == b"\n"
                self.buf = self.buf[cut:]
            if not self._more():
                raise IntegrityError(f"the data of {entry.namespace}.{entry.tag} ends without its end-of-data line")


def _terminator(at_line_start: bool, buf: bytes) -> int | None:
    """Where the ``\\.`` line ending COPY data starts in ``buf`` (``at_line_start``: the byte before
    ``buf`` was a newline), or None when ``buf`` does not hold it (yet)."""
    if at_line_start and buf.startswith(b"\\.\n"):
        return 0
    pos = buf.find(b"\n\\.\n")
    return pos + 1 if pos >= 0 else None


class StreamedRestore:
    """One streamed, TOC-scheduled restore into ``dbname`` (a staging database)."""

    def __init__(self, *, pg_restore: Path, base_args: list[str], select_args: list[str], env: dict[str, str],
                 connect: Callable[[], AbstractContextManager[Any]], workdir: Path, jobs: int,
                 rows: dict[str, int] | None = None) -> None:
        self.pg_restore = pg_restore
        self.base_args = base_args  # pg_restore --exit-on-error -d DB with the owner options
        self.select_args = select_args  # pg_restore with the options that select entries (tables, owner)
        self.env = env
        self.connect = connect  # a connector to the database being restored (``.conn``: autocommit)
        self.workdir = workdir
        self.jobs = max(1, jobs)
        self.rows = dict(rows or {})  # the source's exact row counts (the manifest's), to split big tables
        self.timings: dict[str, float] = {}

    def _run_entries(self, entries: list[TocEntry], name: str) -> None:
        listing = list_file(self.workdir, f"{name}.list", [e.dump_id for e in entries])
        options = " ".join(f"-c {k}={v}" for k, v in POST_DATA_SETTINGS.items())
        env = {**self.env, "PGOPTIONS": f"{self.env.get('PGOPTIONS', '')} {options}".strip()}
        tools.run_tool([*self.base_args, "-L", str(listing), str(self.toc_file)], env=env,
                       what=f"pg_restore ({entries[0].desc.lower()} {entries[0].tag}"
                            f"{f' and {len(entries) - 1} more' if len(entries) > 1 else ''})")

    def run(self, fetch: Callable[[str, Any], int], toc: Toc, toc_bytes: bytes) -> dict[str, Any]:
        t0 = time.monotonic()
        self.toc_file = self.workdir / "toc.dump"
        self.toc_file.write_bytes(toc_bytes)
        select = self.select_args
        pre = selected_ids(select, self.toc_file, self.env, "pre-data")
        data = selected_ids(select, self.toc_file, self.env, "data")
        post = selected_ids(select, self.toc_file, self.env, "post-data")
        by_id = toc.by_id()
        data_entries = [by_id[i] for i in data if by_id[i].desc == "TABLE DATA"]
        later = [i for i in pre + data + post if restore_pass(by_id[i])]
        scheduled = [i for i in data + post if by_id[i].desc != "TABLE DATA" and not restore_pass(by_id[i])]
        first = [by_id[i] for i in pre if not restore_pass(by_id[i])]
        if first:
            self._run_entries(first, "pre-data")
        t1 = time.monotonic()
        sched = Scheduler(self._run_post, self.jobs)
        sched.items = build_items(toc, [e.dump_id for e in data_entries], scheduled)
        counter = [0]
        self._post_lock = threading.Lock()
        try:
            with sched.cond:
                sched._dispatch()
            loaded = self._load(fetch, toc, data_entries, sched, counter)
            t2 = time.monotonic()
            sched.data_done()
            sched.wait()
        finally:
            sched.close()
        t3 = time.monotonic()
        if later:
            self._run_entries([by_id[i] for i in sorted(later, key=lambda i: restore_pass(by_id[i]))], "last")
        self.timings = {"schema_seconds": round(t1 - t0, 3), "load_seconds": round(t2 - t1, 3),
                        "index_seconds": round(t3 - t2, 3), "final_seconds": round(time.monotonic() - t3, 3)}
        return {"tables_loaded": len(data_entries), "tables_frozen": loaded,
                "tables_split": getattr(self, "split", 0), "post_data_entries": len(scheduled),
                "pg_restore_calls": sched.batches + 4 + bool(first) + bool(later), **self.timings}

    def _run_post(self, entries: list[TocEntry]) -> None:
        with self._post_lock:
            self._calls = getattr(self, "_calls", 0) + 1
            name = f"post-{self._calls}"
        self._run_entries(entries, name)

    def _load(self, fetch: Callable[[str, Any], int], toc: Toc, entries: list[TocEntry], sched: Scheduler,
              counter: list[int]) -> int:
        """Stream the dump through pg_restore -f - into COPY, one table after another; returns the frozen count."""
        if not entries:
            fetch("dump", _Discard())  # still verify the whole stream
            return 0
        listing = list_file(self.workdir, "data.list", [e.dump_id for e in entries])
        args = [str(self.pg_restore), "-f", "-", "-L", str(listing)]
        errors: list[BaseException] = []
        with self.connect() as connector, \
                tools.ToolStream(args, env=self.env, stdin=subprocess.PIPE, what="pg_restore (data)") as unframe:
            conn = connector.conn
            _session(conn, toc)

            def table_done(entry: TocEntry, size: int) -> None:
                sched.finished(entry.dump_id, size)

            loader = CopyLoader(conn, entries, unframe.stdout, table_done, toc=toc, connect=self.connect,
                                sessions=self.jobs, rows=self.rows)

            def load() -> None:
                try:
                    loader.run()
                except BaseException as exc:
                    errors.append(exc)
                    unframe.kill()  # the feeding side gets a broken pipe

            thread = threading.Thread(target=load, name="dbfleet-copy", daemon=True)
            thread.start()
            feed = _Feed(unframe.proc.stdin, sched, errors)  # type: ignore[arg-type]
            try:
                fetch("dump", feed)  # every chunk verified, the stream's sha256 checked at its end
                feed.close()
            except BaseException:  # a damaged chunk, a failed load or entry (what the loader sees next follows)
                unframe.kill()
                thread.join()
                raise
            thread.join()
            if errors:
                unframe.finish()  # pg_restore's own error first, when it failed
                raise errors[0]
            unframe.finish()
        self.split = loader.split
        return loader.frozen


class _Feed:
    """The fetch sink: the whole archive, as verified chunks arrive, to pg_restore's stdin. Stops the fetch
    when loading or a post-data entry failed. pg_restore exits once the last selected table is out (a
    ``tables`` subset): the rest of the stream is still read, to verify it, and dropped."""

    def __init__(self, pipe: IO[bytes], sched: Scheduler, errors: list[BaseException]) -> None:
        self.pipe = pipe
        self.sched = sched
        self.errors = errors
        self.open = True

    def write(self, data: bytes) -> int:
        if self.errors:
            raise self.errors[0]
        if self.sched.error is not None:
            raise self.sched.error
        if self.open:
            try:
                self.pipe.write(data)
            except BrokenPipeError:  # pg_restore is done (or failed: its status says so after the fetch)
                self.open = False
        return len(data)

    def close(self) -> None:
        try:
            self.pipe.close()
        except BrokenPipeError:
            pass


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


ENCODING_RE = re.compile(r"SET client_encoding = '([A-Za-z0-9_]+)';")
STDSTRINGS_RE = re.compile(r"SET standard_conforming_strings = '?(on|off)'?;")


def _session(conn: psycopg.Connection[Any], toc: Toc) -> None:
    """pg_restore's session settings for loading data (pg_backup_archiver.c _doSetFixedOutputState)."""
    settings = {"statement_timeout": "0", "lock_timeout": "0", "idle_in_transaction_session_timeout": "0",
                "client_min_messages": "warning", "row_security": "off", "search_path": "",
                "synchronous_commit": "off"}  # the staging database is dropped if the restore does not finish
    for entry in toc.entries:
        if entry.desc == "ENCODING" and (m := ENCODING_RE.search(entry.defn)):
            settings["client_encoding"] = m.group(1)
        if entry.desc == "STDSTRINGS" and (m := STDSTRINGS_RE.search(entry.defn)):
            settings["standard_conforming_strings"] = m.group(1)
    for name, value in settings.items():
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
