"""The pipelined in-place loop (two connections: one writes batch N while the other reads and masks N+1)
gives exactly the values of the sequential loop, on real PostgreSQL 15, also when a unique column is so
short that fakes collide all the time (bumps decided again after the previous batch commits, clashes with
its fresh fakes handed over to the sequential loop)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engines.compliance.anonymize.inplace import anonymize_in_place
from engines.compliance.anonymize.postgres import PostgresMaskTarget
from engines.compliance.anonymize.rules import Masker, parse_rule
from engines.connectors import open_connector
from tests.conftest import db
from tests.servers import require

pytestmark = pytest.mark.integration
DB = "h17_mask_pipe"
KEY = b"h17-pipeline-key-0123456789abcdef"
RULES = {"code": "default", "email": "email", "city": "name"}


class Sequential(PostgresMaskTarget):
    """The same target without a second connection: the sequential loop."""

    def fork(self) -> None:  # type: ignore[override]
        return None


@pytest.fixture(scope="module")
def pipe_db() -> Iterator[Any]:
    require("postgresql15")
    admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        for t in ("pipe_a", "pipe_b"):
            # code: 4 digits, unique, 2000 rows: a fake has a ~1 in 5 chance to hit a taken value
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, code char(4) NOT NULL UNIQUE,"
                         f" email text UNIQUE, city text)")
            conn.execute(f"INSERT INTO {t} SELECT g, lpad((g * 7919 % 10000)::text, 4, '0'), 'u' || g ||"  # noqa: S608
                         " '@example.org', 'City ' || (g % 37) FROM generate_series(1, 2000) g")
    yield db("pipe", kind="postgresql", host="127.0.0.1", user="postgres", dbname=DB)
    admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin.close()


def _rows(table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}") as conn:
        return conn.execute(f"SELECT id, code, email, city FROM {table} ORDER BY id").fetchall()  # noqa: S608


def test_pipelined_and_sequential_loops_give_the_same_fakes_under_constant_collisions(pipe_db: Any) -> None:
    originals = _rows("pipe_a")
    with open_connector(pipe_db) as conn:
        piped = anonymize_in_place(PostgresMaskTarget(conn), "pipe", "pipe_a", RULES, Masker(KEY), batch_size=150)
    with open_connector(pipe_db) as conn:
        seq = anonymize_in_place(Sequential(conn), "pipe", "pipe_b", RULES, Masker(KEY), batch_size=150)
    assert piped["rows_masked"] == seq["rows_masked"] == 2000
    assert piped["unique_collisions_resolved"] > 50  # the short unique column really collided
    a, b = _rows("pipe_a"), _rows("pipe_b")
    assert a == b  # every value got the fake the sequential loop gives it
    assert len({r[1] for r in a}) == 2000 and all(r[1] != o[1] for r, o in zip(a, originals, strict=True))


class ChangedUnderfoot(PostgresMaskTarget):
    """A concurrent writer: right after the unlocked read of the third batch, another session changes the
    e-mail of that batch's first row (committed before the compare-and-set write)."""

    reads = 0
    changed: list[int] = []

    def batch(self, shape: Any, columns: list[str], after: list[Any] | None, n: int) -> list[tuple[Any, ...]]:
        rows = super().batch(shape, columns, after, n)
        type(self).reads += 1
        if type(self).reads == 3 and not self.locking:
            with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as other:
                other.execute("UPDATE pipe_c SET email = 'changed@example.org' WHERE id = %s", (rows[0][0],))
            type(self).changed.append(rows[0][0])
        return rows

    def fork(self) -> ChangedUnderfoot:
        return ChangedUnderfoot(type(self.connector)(self.connector.db, self.connector.password))


def test_a_row_changed_between_the_unlocked_read_and_the_write_is_masked_from_its_new_value(pipe_db: Any) -> None:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        conn.execute("CREATE TABLE pipe_c AS SELECT * FROM pipe_a WITH NO DATA")
        conn.execute("INSERT INTO pipe_c SELECT g, lpad(g::text, 4, '0'), 'c' || g || '@example.org', 'Town'"
                     " FROM generate_series(1, 900) g")
        conn.execute("ALTER TABLE pipe_c ADD PRIMARY KEY (id), ADD UNIQUE (email)")
    with open_connector(pipe_db) as conn:
        result = anonymize_in_place(ChangedUnderfoot(conn), "pipe", "pipe_c", {"email": "email"}, Masker(KEY),
                                    batch_size=100)
    assert result["rows_masked"] == 900 and len(ChangedUnderfoot.changed) == 1
    masker = Masker(KEY)
    rows = dict((r[0], r[2]) for r in _rows("pipe_c"))
    changed = ChangedUnderfoot.changed[0]
    # the compare-and-set write found the row changed: the batch was redone locked, from the new value
    assert rows[changed] == masker.apply(parse_rule("email"), "changed@example.org")
    assert all(rows[i] == masker.apply(parse_rule("email"), f"c{i}@example.org") for i in rows if i != changed)


def test_a_batch_whose_predecessor_did_not_commit_is_refused_and_writes_nothing(pipe_db: Any) -> None:
    """Batches are written two at once: each moves the checkpoint only from where the batch before left it,
    so a batch written after one that rolled back fails whole instead of skipping that batch's rows."""
    from engines.compliance.anonymize.base import Checkpoint, RowsChanged
    from engines.compliance.anonymize.inplace import check_rules, job_id

    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DB}", autocommit=True) as conn:
        conn.execute("CREATE TABLE pipe_d AS SELECT * FROM pipe_a WITH NO DATA")
        conn.execute("INSERT INTO pipe_d SELECT g, lpad(g::text, 4, '0'), 'd' || g || '@example.org', 'Town'"
                     " FROM generate_series(1, 40) g")
        conn.execute("ALTER TABLE pipe_d ADD PRIMARY KEY (id)")
    with open_connector(pipe_db) as conn:
        target = PostgresMaskTarget(conn)
        shape = target.describe("pipe_d")
        rules = check_rules(shape, {"city": "name"})
        job = job_id("pipe_d", rules, Masker(KEY).fingerprint)
        target.checkpoint(job)
        target.start(shape, job, "pipe_d", "{}")
        target.optimistic(True)
        rows = target.batch(shape, ["city"], [20], 10)  # the second batch of 20, read while the first is in flight
        with pytest.raises(RowsChanged, match="did not commit"):
            target.write(shape, ["city"], [(r[0], "Masked") for r in rows], Checkpoint(job, [30], 30), False)
        assert target.checkpoint(job) == Checkpoint(job, None, 0)
    assert {r[3] for r in _rows("pipe_d")} == {"Town"}
