"""Source databases with awkward data, and fingerprints to compare a restore against its source."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from engines.config import DatabaseConfig
from tests.conftest import db

HOSTILE_PG = 'weird "table"; DROP TABLE users; --'
HOSTILE_MY = "weird`table'; DROP TABLE users; --"


def pg_admin(port: int = 5432, password: str | None = None) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                           password=password, autocommit=True)


def make_pg(name: str, port: int = 5432, password: str | None = None, rows: int = 20_000) -> None:
    """A database with types that break naive dumps, a hostile table name, and a view and index."""
    with pg_admin(port, password) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=name, password=password,
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE, name text, born date,"
                     " balance numeric(12,2), profile jsonb, avatar bytea, seen timestamptz)")
        conn.execute("INSERT INTO users SELECT g, 'user' || g || '@example.com', 'Zoë Ñandú ' || g,"
                     " date '1970-01-01' + g %% 15000, g * 1.25, jsonb_build_object('g', g, 'tags', ARRAY['a', 'b']),"
                     " decode(md5(g::text), 'hex'), now() - g * interval '1 minute'"
                     " FROM generate_series(1, %s) g", (rows,))
        conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, note text)").format(sql.Identifier(HOSTILE_PG)))
        conn.execute(sql.SQL("INSERT INTO {} (note) VALUES ('tab\there'), (E'new\\nline'), (NULL)").format(
            sql.Identifier(HOSTILE_PG)))
        conn.execute("CREATE VIEW adults AS SELECT id, email FROM users WHERE born < date '2000-01-01'")


def pg_fingerprint(port: int, dbname: str, password: str | None = None) -> dict[str, str]:
    """md5 of every table's rows in a stable order, plus the definitions of views and indexes."""
    out = {}
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname, password=password) as conn:
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        for schema, table in tables:
            q = sql.SQL("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '')"
                        " FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            out[table] = conn.execute(q).fetchone()[0]
        for name, definition in conn.execute("SELECT viewname, definition FROM pg_views WHERE schemaname='public'"):
            out[f"view:{name}"] = definition
        for name, definition in conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname='public'"):
            out[f"index:{name}"] = definition
    return out


def make_mariadb(name: str) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{name}`")
        cur.execute("CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(100) UNIQUE, name VARCHAR(100),"
                    " balance DECIMAL(12,2), avatar VARBINARY(32), seen DATETIME(6))")
        cur.executemany("INSERT INTO users VALUES (%s, %s, %s, %s, %s, %s)",
                        [(i, f"u{i}@example.com", f"Zoë '{i}' \"q\"", i * 1.25, bytes([i % 256]) * 16,
                          f"2026-01-01 00:00:{i % 60:02d}.123456") for i in range(1, 3001)])
        cur.execute("CREATE TABLE `" + HOSTILE_MY.replace("`", "``") + "` (id INT PRIMARY KEY, note TEXT)")
        cur.execute("INSERT INTO `" + HOSTILE_MY.replace("`", "``") + "` VALUES (1, 'a\\tb'), (2, NULL)")  # noqa: S608 - test fixture, quoted
        cur.execute("CREATE TRIGGER users_bi BEFORE INSERT ON users FOR EACH ROW SET NEW.name = TRIM(NEW.name)")
    conn.close()


def mariadb_fingerprint(name: str) -> dict[str, Any]:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=name)
    with conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (name,))
        tables = sorted(r[0] for r in cur.fetchall())
        out: dict[str, Any] = {}
        for t in tables:
            cur.execute("CHECKSUM TABLE `" + t.replace("`", "``") + "` EXTENDED")
            out[t] = cur.fetchone()[1]
        cur.execute("SELECT trigger_name, action_statement FROM information_schema.triggers WHERE trigger_schema=%s",
                    (name,))
        out["triggers"] = sorted(cur.fetchall())
    conn.close()
    return out


def make_sqlite(path: Path) -> DatabaseConfig:
    with sqlite3.connect(path) as conn:
        conn.execute('CREATE TABLE "odd ""name""" (id INTEGER PRIMARY KEY, v TEXT, b BLOB)')
        conn.executemany('INSERT INTO "odd ""name""" (v, b) VALUES (?, ?)',
                         [(f"ü{i}", bytes([i % 256]) * 8) for i in range(5000)])
        conn.execute("CREATE INDEX odd_v ON \"odd \"\"name\"\"\" (v)")
    return db("lite", kind="sqlite", path=str(path))


def sqlite_fingerprint(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def redis_fill(port: int) -> None:
    import redis

    main, other = redis.Redis(port=port, db=0), redis.Redis(port=port, db=2)
    main.flushall()
    main.mset({f"user:{i}": f"Zoë {i}" for i in range(2000)})
    main.hset("track:1", mapping={"title": "song", "plays": 12})
    main.zadd("charts", {"a": 1.5, "b": 2.5})
    main.set("session:x", "v", ex=3600)
    other.set("other-db-key", "x")


def redis_fingerprint(port: int) -> dict[Any, Any]:
    import redis

    out = {}
    for number in (0, 2):
        client = redis.Redis(port=port, db=number)
        for key in sorted(client.scan_iter(count=1000)):
            out[(number, key)] = (client.dump(key), client.pttl(key) > 0)
    return out
