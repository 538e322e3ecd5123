"""Why the target refused a row, told without the row's values (they are user data, possibly secret): the
column it names and the server's message cut before the value it quotes."""

from __future__ import annotations

from typing import Any

from engines.migration.model import Column


def describe(exc: BaseException, columns: list[Column]) -> tuple[str | None, str]:
    """(column, reason) of a refused row: the column from the server's diagnostics (``COPY t, line 1,
    column c: ...`` or the constraint's column), the reason its primary message up to the value it quotes
    (``date/time field value out of range: "838:59:59"`` -> ``date/time field value out of range``)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or next(iter(str(exc).splitlines()), type(exc).__name__)
    column = getattr(diag, "column_name", None)
    context = getattr(diag, "context", None) or ""
    if column is None:
        for c in sorted(columns, key=lambda c: -len(c.name)):  # the longest first: "a b" before "b"
            if f", column {c.name}: " in context:
                column = c.name
                break
    return column, valueless(primary)


def valueless(message: str) -> str:
    """A server message without the value it quotes after its first ": " (PostgreSQL puts it there)."""
    head, sep, _ = message.partition(": ")
    return (head if sep else message)[:300]


def cast_failure(row: tuple[Any, ...], columns: list[Column], casts: dict[int, Any]) -> tuple[str | None, str]:
    """(column, reason) of a row a value converter refused: the first column whose cast raises."""
    for i, fn in casts.items():
        try:
            fn(row[i])
        except ValueError:
            c = columns[i]
            return c.name, f"no PostgreSQL {c.target_type} holds this {c.source_type} value ({c.cast})"
    return None, "a value converter refused the row"
