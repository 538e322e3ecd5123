"""The documented example (docs/migration.md): play_events, user_interactions and song_features from PostgreSQL 15
into the real ClickHouse server (Debian's 18.16), incrementally by updated_at. Run 1 copies everything; rows
updated, inserted and soft-deleted at the source; run 2 copies only those; re-running is idempotent; counts and
row-hash checksums match the source after every run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engines.connectors.clickhouse import quote_ident
from engines.errors import ConfigError
from engines.migration import engine
from engines.migration.model import MigrationPlan, MigrationType
from tests.conftest import db
from tests.integration.backup_cases import pg_admin
from tests.servers import ClickHouseServer, require

pytestmark = pytest.mark.integration

SOURCE_SQL = [
    """CREATE TABLE play_events (id bigint PRIMARY KEY, user_id bigint NOT NULL, track_id bigint NOT NULL,
       played_at timestamptz NOT NULL, ms_played integer NOT NULL, device text NOT NULL, country_code char(2),
       skipped boolean NOT NULL, updated_at timestamptz NOT NULL)""",
    """INSERT INTO play_events SELECT g, 1 + g % 17, 1 + g % 31, timestamptz '2026-01-01 00:00:00.5+00' + g * interval '7 s',
       g * 13 % 300000, (ARRAY['ios','web','car'])[1 + g % 3], CASE WHEN g % 9 = 0 THEN NULL ELSE 'SE' END, g % 4 = 0,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 ms' FROM generate_series(1, 400) g""",
    """CREATE TABLE user_interactions (user_id bigint, song_id bigint, kind text NOT NULL, weight real,
       deleted boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL, PRIMARY KEY (user_id, song_id))""",
    """INSERT INTO user_interactions SELECT u, s, CASE WHEN (u + s) % 2 = 0 THEN 'like' ELSE 'skip' END, (u * s) / 7.0,
       false, timestamptz '2026-01-01 00:00:00+00' + (u * 10 + s) * interval '1 s'
       FROM generate_series(1, 10) u, generate_series(1, 10) s""",
    """CREATE TABLE song_features (song_id bigint PRIMARY KEY, tempo double precision, energy real, "key" smallint,
       tags text[], embedding real[], updated_at timestamptz NOT NULL)""",
    """INSERT INTO song_features SELECT g, 60 + g / 3.0, g / 90.0, g % 12, ARRAY['genre ' || g % 5, 'it''s'],
       ARRAY[g / 3.0, -g / 7.0]::real[], timestamptz '2026-01-01 00:00:00+00' + g * interval '1 min'
       FROM generate_series(1, 80) g""",
]
CHANGES = [  # at the source between run 1 and run 2: 30 + 5 + 2 + 10 rows changed
    "UPDATE play_events SET ms_played = ms_played + 1, updated_at = timestamptz '2030-01-01 00:00:00.000001+00' + id"
    " * interval '1 us' WHERE id % 40 = 0",
    "INSERT INTO play_events SELECT g, 1, 2, timestamptz '2030-01-02+00', 5, 'web', 'DE', false,"
    " timestamptz '2030-01-02+00' + g * interval '1 ms' FROM generate_series(401, 420) g",
    "UPDATE user_interactions SET weight = 99, updated_at = timestamptz '2030-01-03+00' WHERE user_id = 3 AND song_id <= 5",
    "UPDATE user_interactions SET deleted = true, updated_at = timestamptz '2030-01-04+00' WHERE user_id = 4 AND song_id"
    " IN (1, 2)",
    "UPDATE song_features SET tags = ARRAY['changed'], embedding = NULL, updated_at = timestamptz '2030-01-05+00'"
    " WHERE song_id <= 10",
]


@pytest.fixture
def music() -> Iterator[Any]:
    require("postgresql15")
    name = f"h20a_inc_{uuid.uuid4().hex[:8]}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as c:
        for stmt in SOURCE_SQL:
            c.execute(stmt)
    yield db(name, kind="postgresql", host="127.0.0.1", dbname=name, user="postgres")
    with pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def olap(clickhouse: ClickHouseServer) -> Iterator[Any]:
    name = f"h20a_olap_{uuid.uuid4().hex[:8]}"
    clickhouse.query(f"CREATE DATABASE {quote_ident(name)}")
    yield db("h20a_olap", kind="clickhouse", host=clickhouse.host, port=clickhouse.http_port, dbname=name)
    clickhouse.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}")


def _run(source: Any, target: Any, base: MigrationPlan | None = None) -> tuple[MigrationPlan, int, dict[str, Any]]:
    plan = engine.plan_migration(source, target, type=MigrationType.INCREMENTAL, watermark="updated_at",
                                 soft_delete="deleted", batch_size=150, base=base,
                                 tables=["play_events", "user_interactions", "song_features"])
    plan = engine.prepare(plan, source, target)
    copied = sum(engine.copy_batch(plan, b.id, source, target)["rows"] for b in plan.batches)
    engine.finalize(plan, source, target)
    return plan, copied, engine.validate(plan, source, target)


def _counts(server: ClickHouseServer, database: str) -> dict[str, str]:
    return {t: server.query(f"SELECT count(), sum(NOT deleted) FROM {quote_ident(database)}.{t} FINAL"  # noqa: S608
                            if t == "user_interactions" else
                            f"SELECT count() FROM {quote_ident(database)}.{t} FINAL FORMAT TSV").strip()  # noqa: S608
            for t in ("play_events", "user_interactions", "song_features")}


def test_the_documented_example_runs_incrementally_into_clickhouse(music: Any, olap: Any,
                                                                    clickhouse: ClickHouseServer) -> None:
    first, copied, report = _run(music, olap)
    assert copied == 400 + 100 + 80 and report["ok"], report["tables"]
    assert {t["table"]: t["target_rows"] for t in report["tables"]} == {
        "public.play_events": 400, "public.user_interactions": 100, "public.song_features": 80}
    assert any("updated_at: Int64 microseconds" in n for n in first.notes)
    assert any("soft deletes" in n for n in first.notes)
    engine_of = clickhouse.query(f"SELECT engine_full FROM system.tables WHERE database = '{olap.dbname}'"  # noqa: S608
                                 " AND name = 'play_events' FORMAT TSVRaw")
    assert engine_of.startswith("ReplacingMergeTree(updated_at) ORDER BY id")  # the newest version wins

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=music.dbname, autocommit=True) as c:
        for stmt in CHANGES:
            c.execute(stmt)
    second, copied, report = _run(music, olap, base=first)
    assert second.since["public.play_events"] == first.until["public.play_events"]
    assert copied == 10 + 20 + 5 + 2 + 10  # only the delta
    assert report["ok"], report["tables"]
    assert _counts(clickhouse, olap.dbname) == {"play_events": "420", "user_interactions": "100\t98",
                                                "song_features": "80"}
    olap_db = quote_ident(olap.dbname)
    assert clickhouse.query(f"SELECT ms_played FROM {olap_db}.play_events FINAL WHERE id = 40") == "521\n"  # noqa: S608
    got = clickhouse.query(f"SELECT tags, embedding FROM {olap_db}.song_features FINAL WHERE song_id = 3")  # noqa: S608
    assert got == "['changed']\t\\N\n"  # updated; a real[] arrives as PostgreSQL's text (NULL stays NULL)

    # idempotent: the same run again skips every batch; a new run finds nothing to copy
    assert all(engine.copy_batch(second, b.id, music, olap)["skipped"] for b in second.batches)
    third, copied, report = _run(music, olap, base=first)
    assert copied == 0 and report["ok"]
    clickhouse.query(f"OPTIMIZE TABLE {quote_ident(olap.dbname)}.play_events FINAL")  # merged: still one row per key
    assert _counts(clickhouse, olap.dbname)["play_events"] == "420"
    assert engine.validate(third, music, olap)["ok"]


def test_a_soft_delete_column_no_table_has_is_refused(music: Any, olap: Any) -> None:
    with pytest.raises(ConfigError, match="no migrated table has a column 'gone'"):
        engine.plan_migration(music, olap, type=MigrationType.INCREMENTAL, watermark="updated_at", soft_delete="gone",
                              tables=["play_events"])
    with pytest.raises(ConfigError, match="soft-delete column is for incremental"):
        engine.plan_migration(music, olap, soft_delete="deleted", tables=["user_interactions"])
    plan = engine.plan_migration(music, olap, type=MigrationType.INCREMENTAL, watermark="updated_at",
                                 tables=["play_events"])
    assert any("deletes at the source are not copied by incremental runs for public.play_events" in n
               for n in plan.notes)
