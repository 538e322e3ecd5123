"""The TOC scheduler of the streamed PostgreSQL restore, on a hand-made TOC (no server): dependencies,
TABLE -> TABLE DATA repointing, lock exclusion, failures, the end-of-data line, and the TOC reader's
refusals (real archives are read in tests/integration/test_backup_restore_schedule.py)."""

from __future__ import annotations

import threading

import pytest

from engines.backup.dumpers.pg_parallel import Scheduler, _terminator, build_items, restore_pass
from engines.backup.dumpers.pg_toc import NeedMore, Toc, TocEntry, Unsupported, parse_toc
from engines.errors import IntegrityError


def entry(dump_id: int, desc: str, tag: str, section: int, deps: list[int]) -> TocEntry:
    return TocEntry(dump_id, desc == "TABLE DATA", tag, desc, section, "", "", "public", "postgres", deps)


# tables a (1) and b (2); their data 10, 11; a's PK 20, b's PK 21, an index on b 22, b -> a FK 23 (needs a's PK),
# a sequence value 24 (needs only the sequence 5, restored before), a comment on the index 25
TOC = Toc((1, 16, 0), 4, 8, [
    entry(1, "TABLE", "a", 2, []), entry(2, "TABLE", "b", 2, []), entry(5, "SEQUENCE", "s", 2, []),
    entry(10, "TABLE DATA", "a", 3, [1]), entry(11, "TABLE DATA", "b", 3, [2]),
    entry(24, "SEQUENCE SET", "s", 3, [5]),
    entry(20, "CONSTRAINT", "a_pkey", 4, [1]), entry(21, "CONSTRAINT", "b_pkey", 4, [2]),
    entry(22, "INDEX", "b_idx", 4, [2]), entry(25, "COMMENT", "INDEX b_idx", 1, [22]),
    entry(23, "FK CONSTRAINT", "b_a_fkey", 4, [20, 2, 1]),
], 0)


def test_dependencies_point_at_table_data_and_locking_entries_lock_their_tables() -> None:
    items = build_items(TOC, [10, 11], [24, 20, 21, 22, 25, 23])
    assert items[20].deps == {10} and items[20].locks == {10}
    assert items[22].deps == {11} and items[22].locks == set()  # CREATE INDEX does not block other entries
    assert items[23].deps == {20, 11, 10} and items[23].locks == {11, 10}
    assert items[24].deps == set()  # the sequence itself was restored with the schema
    assert items[25].deps == {22}


def test_nothing_starts_before_its_dependencies_and_lockers_of_one_table_never_overlap() -> None:
    items = build_items(TOC, [10, 11], [24, 20, 21, 22, 25, 23])
    events: list[tuple[str, int]] = []
    running: dict[int, set[int]] = {}
    overlaps: list[tuple[int, int]] = []
    guard = threading.Lock()
    gate = threading.Event()

    def run_sql(entries: list[TocEntry]) -> None:
        with guard:
            for e in entries:
                for other, locks in running.items():
                    if locks & items[e.dump_id].locks:
                        overlaps.append((other, e.dump_id))
                running[e.dump_id] = items[e.dump_id].locks
                events.append(("start", e.dump_id))
        gate.wait(0.05)  # let a second worker try to start meanwhile
        with guard:
            for e in entries:
                del running[e.dump_id]
                events.append(("end", e.dump_id))

    sched = Scheduler(run_sql, jobs=3)
    sched.items = items
    with sched.cond:
        sched._dispatch()
    sched.finished(11, weight=5000)  # b's rows are in (the bigger table)
    started_before_a = {i for kind, i in events if kind == "start"}
    sched.finished(10, weight=10)
    sched.data_done()
    sched.wait()
    sched.close()
    order = [i for kind, i in events if kind == "start"]
    ended = {i: n for n, (kind, i) in enumerate(events) if kind == "end"}
    started = {i: n for n, (kind, i) in enumerate(events) if kind == "start"}
    assert sorted(order) == [20, 21, 22, 23, 24, 25]
    assert 20 not in started_before_a and 23 not in started_before_a  # they need a's rows
    assert started[23] > ended[20] and started[25] > ended[22]
    assert overlaps == []


def test_a_failing_entry_stops_the_schedule_with_its_error() -> None:
    def run_sql(entries: list[TocEntry]) -> None:
        if any(e.desc == "CONSTRAINT" for e in entries):
            raise IntegrityError("pg_restore (constraint a_pkey) exited with status 1: duplicate key")

    sched = Scheduler(run_sql, jobs=2)
    sched.items = build_items(TOC, [10, 11], [24, 20, 21, 22, 25, 23])
    sched.finished(10)
    sched.finished(11)
    sched.data_done()
    with pytest.raises(IntegrityError, match="duplicate key"):
        sched.wait()
    sched.close()


def test_acls_event_triggers_and_matview_refreshes_run_last() -> None:
    assert restore_pass(entry(1, "ACL", "TABLE a", 1, [])) == 1
    assert restore_pass(entry(2, "MATERIALIZED VIEW DATA", "mv", 4, [])) == 2
    assert restore_pass(entry(3, "COMMENT", "EVENT TRIGGER et", 1, [])) == 2
    assert restore_pass(entry(4, "INDEX", "i", 4, [])) == 0


def test_the_end_of_copy_data_is_a_line_of_its_own() -> None:
    assert _terminator(True, b"\\.\n") == 0
    assert _terminator(False, b"\\.\n") is None  # the end of a row that ends in backslash-dot
    assert _terminator(False, b"x\\\\.\n\\.\n") == 5
    assert _terminator(True, b"1\ta\n2\tb\n\\.\n\n") == 8
    assert _terminator(True, b"1\t\\\\.\n") is None


def test_the_toc_reader_needs_the_whole_toc_and_refuses_what_it_does_not_schedule() -> None:
    header = b"PGDMP" + bytes([1, 16, 0, 4, 8, 1, 0])  # version 1.16, int 4, offset 8, custom, no compression
    with pytest.raises(NeedMore):
        parse_toc(header)
    with pytest.raises(IntegrityError, match="not a pg_dump custom archive"):
        parse_toc(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(Unsupported, match="compressed"):
        parse_toc(b"PGDMP" + bytes([1, 16, 0, 4, 8, 1, 1]))
    with pytest.raises(Unsupported, match="version"):
        parse_toc(b"PGDMP" + bytes([1, 12, 0, 4, 8, 1]))
