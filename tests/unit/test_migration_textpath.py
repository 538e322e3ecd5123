"""The MySQL -> PostgreSQL text path without servers: COPY lines, escaping, casts and line hashes.
(The same lines recomputed by PostgreSQL are checked against real servers in tests/integration.)"""

from __future__ import annotations

import pytest

from engines.errors import ConfigError
from engines.migration import linehash, textpath
from engines.migration.model import Column, Table
from engines.migration.sources import mysql_driver


def _table(*cols: tuple[str, str, str, str | None]) -> Table:
    columns = [Column(name, source, target, True, cast, False) for name, source, target, cast in cols]
    return Table("t", "s", "t", "public", "t", columns, ["id"], 0)


PLAIN = _table(("id", "int(11)", "integer", None), ("name", "varchar(20)", "varchar(20)", None),
               ("note", "text", "text", None))


def test_clean_rows_are_joined_and_nulls_become_the_copy_marker() -> None:
    data, lines, total = textpath.Encoder(textpath.plan_text(PLAIN) or []).encode(
        [(b"1", b"ann", None), (b"2", b"", b"x y")])
    assert lines == [b"1\tann\t\\N", b"2\t\tx y"] and data == b"1\tann\t\\N\n2\t\tx y\n"
    assert total == sum(linehash.py_hash(line) for line in lines) % 2 ** 64


@pytest.mark.parametrize("dirty", [b"a\tb", b"a\nb", b"a\rb", b"a\\b", b"\\N", b"a\bb", b"a\fb", b"a\vb"])
def test_a_field_copy_must_escape_escapes_the_whole_chunk(dirty: bytes) -> None:
    _, lines, _ = textpath.Encoder(textpath.plan_text(PLAIN) or []).encode(
        [(b"1", b"plain", None), (b"2", dirty, b"end\\")])
    assert lines[0] == b"1\tplain\t\\N"
    assert lines[1] == b"2\t" + textpath.escape(dirty) + b"\tend\\\\"
    assert b"\\N" not in lines[1].split(b"\t")  # a text '\N' never reads back as NULL


@pytest.mark.parametrize("text", ["plain", "tab\there", "a\\b", "ends\\", "\\N", "bs\bff\fvt\vcr\rnl\n", ""])
def test_unescape_reads_back_what_escape_wrote(text: str) -> None:
    assert textpath.unescape(textpath.escape(text.encode())) == text
    assert textpath.unescape(b"\\N") is None  # COPY's NULL marker, unlike the escaped text '\N'


def test_the_encoder_remembers_whether_any_chunk_was_escaped() -> None:
    encoder = textpath.Encoder(textpath.plan_text(PLAIN) or [])
    encoder.encode([(b"1", b"plain", None)])
    assert not encoder.escaped
    encoder.encode([(b"2", b"a\tb", None)])
    encoder.encode([(b"3", b"plain", None)])
    assert encoder.escaped
    spec = textpath.plan_text(PLAIN) or []
    assert "replace(" in textpath.row_line(spec).as_string(None)  # type: ignore[arg-type]
    assert "replace(" not in textpath.row_line(spec, escaped=False).as_string(None)  # type: ignore[arg-type]


def test_casts_booleans_zero_dates_blobs_and_sets() -> None:
    table = _table(("id", "int(11)", "integer", None), ("flag", "tinyint(1)", "boolean", "bool"),
                   ("bit", "bit(1)", "boolean", "bit_bool"), ("d", "date", "date", "zero_date"),
                   ("ts", "datetime", "timestamp", "zero_date"), ("blob", "blob", "bytea", None),
                   ("tags", "set('a b','NULL','x\"y','c')", "text[]", "set"))
    spec = textpath.plan_text(table)
    assert spec is not None
    _, lines, _ = textpath.Encoder(spec).encode([
        (b"1", b"5", b"\x01", b"0000-00-00", b"0000-00-00 00:00:00", b"\x00\xff", b"a b,x\"y"),
        (b"2", b"0", b"\x00", b"2024-02-29", b"2024-02-29 23:59:59", None, b""),
        (b"3", None, None, None, None, b"", b"NULL,c")])
    # the blob's \x makes the chunk escape: backslashes doubled for COPY
    assert lines[0] == b'1\ttrue\ttrue\t\\N\t\\N\t\\\\x00ff\t{"a b","x\\\\"y"}'
    assert lines[1] == b"2\tfalse\tfalse\t2024-02-29\t2024-02-29 23:59:59\t\\N\t{}"
    assert lines[2] == b'3\t\\N\t\\N\t\\N\t\\N\t\\\\x\t{"NULL",c}'


def test_types_whose_text_differs_between_servers_take_the_typed_path() -> None:
    for source, target, cast in (("double", "double precision", None), ("json", "jsonb", None),
                                 ("datetime(6)", "timestamp", "zero_date")):
        assert textpath.plan_text(_table(("id", "int(11)", "integer", None), ("v", source, target, cast))) is None


# PostgreSQL 15's own answers: SELECT hashtextextended(x, 0)
KNOWN = {b"": -6939563903564495251, b"abcdefghijkl": -7556637188122330412}


def test_line_hash_is_postgresqls_hashtextextended_in_c_and_in_python() -> None:
    samples = [b"", b"a", b"abcd", b"abcdefgh", b"abcdefghijk", b"abcdefghijkl", b"1\tann\t\\N",
               "ü☃ naïve".encode() * 7, bytes(b for b in range(256) if b != 10)]
    for s in samples:
        assert linehash.line_hash(s) == linehash.py_hash(s)
        assert linehash.line_hash(s, 12345678901) == linehash.py_hash(s, 12345678901)
    for s, want in KNOWN.items():
        assert linehash.py_hash(s) == want
    data = b"\n".join(samples[1:]) + b"\n"
    assert linehash.sum_lines(data) == linehash.py_sum_lines(data) == (
        len(samples) - 1, sum(linehash.py_hash(s) for s in samples[1:]) % 2 ** 64)
    assert linehash.sum_lines(b"a\nb") == linehash.sum_lines(b"a\nb\n")  # a last line without its newline


@pytest.mark.skipif(not linehash.ACCELERATED, reason="the C line hash was not compiled here (needs gcc and the "
                                                      "Python headers): only the Python fallback runs")
def test_the_compiled_line_hash_is_in_use() -> None:
    assert linehash.sum_lines is not linehash.py_sum_lines


def test_driver_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBFLEET_MYSQL_DRIVER", "pymysql")
    assert mysql_driver() == "pymysql"
    monkeypatch.setenv("DBFLEET_MYSQL_DRIVER", "oracle")
    with pytest.raises(ConfigError, match="use auto, mysqlclient or pymysql"):
        mysql_driver()
    monkeypatch.setenv("DBFLEET_MYSQL_DRIVER", "auto")
    assert mysql_driver() in ("mysqlclient", "pymysql")


def test_server_side_row_hash_reads_target_types_and_hashes_the_rest_as_text() -> None:
    from psycopg import sql as _sql

    from engines.migration.checksum import pg_row_hash

    cols = [Column("id", "bigint", "bigint"), Column("m", "mood", "text"), Column("j", "json", "json"),
            Column("s", "character varying(9)", "character varying(9)"), Column("a", "integer[]", "integer[]")]
    source = pg_row_hash(cols, source=True).as_string(None)  # type: ignore[arg-type]
    target = pg_row_hash(cols).as_string(None)  # type: ignore[arg-type]
    assert source == ('hash_record_extended(ROW("id", "m"::text COLLATE "C", "j"::text COLLATE "C",'
                      ' "s" COLLATE "C", "a"), 0)')
    assert target == source.replace('"m"::text', '"m"')
    assert isinstance(pg_row_hash(cols), _sql.Composed)


def test_validating_postgresql_to_postgresql_needs_version_14_on_both_sides() -> None:
    from types import SimpleNamespace

    from engines.migration.postgres_source import check_hashable as _check_hashable

    def server(version: int) -> SimpleNamespace:  # just what the check reads of a psycopg connection
        return SimpleNamespace(info=SimpleNamespace(server_version=version))

    _check_hashable(server(150004), server(180001))
    with pytest.raises(ConfigError, match="the target runs PostgreSQL 13.*--no-validate"):
        _check_hashable(server(170000), server(130012))
