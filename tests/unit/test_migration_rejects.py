"""A refused row is told by column and reason, never by its values (unit: a stand-in for psycopg's
diagnostics, named as such; the real server's messages are covered in tests/integration/test_migration*.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from engines.migration.model import Column
from engines.migration.rejects import cast_failure, describe, valueless
from engines.migration.types import CASTS

COLUMNS = [Column("id", "int", "integer"), Column("a b", "text", "text"), Column("b", "text", "text"),
           Column("t", "time", "time", cast="time")]


@dataclass
class FakeDiag:  # the attributes psycopg's Diagnostic offers
    message_primary: str | None
    context: str | None = None
    column_name: str | None = None


class FakeServerError(Exception):
    def __init__(self, diag: FakeDiag) -> None:
        super().__init__(diag.message_primary)
        self.diag = diag


def test_the_value_the_server_quotes_is_cut_and_the_column_found_in_the_copy_context() -> None:
    exc = FakeServerError(FakeDiag('invalid input syntax for type integer: "4111 1111 1111 1111"',
                                   'COPY people, line 1, column a b: "4111 1111 1111 1111"'))
    assert describe(exc, COLUMNS) == ("a b", "invalid input syntax for type integer")


def test_a_constraint_names_its_column_and_a_message_without_a_value_stays_whole() -> None:
    exc = FakeServerError(FakeDiag('null value in column "b" of relation "people" violates not-null constraint',
                                   column_name="b"))
    assert describe(exc, COLUMNS) == ("b", 'null value in column "b" of relation "people" violates not-null '
                                           'constraint')
    assert valueless('invalid byte sequence for encoding "UTF8": 0x00') == 'invalid byte sequence for encoding "UTF8"'


def test_a_converter_failure_names_the_column_whose_cast_raises_without_the_value() -> None:
    casts = {3: CASTS["time"]}
    column, reason = cast_failure((1, "x", "y", dt.timedelta(hours=838, minutes=59, seconds=59)), COLUMNS, casts)
    assert column == "t" and "838" not in reason and "time" in reason
