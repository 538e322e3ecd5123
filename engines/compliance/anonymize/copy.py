"""Masked copies: a source database copied into a new one through the migration engine, the ruled columns
masked in the worker before any row leaves it for the target (the "staging copy of production").

The migration plan carries ``transform = {"kind": "mask", "rules": {table: {column: rule}}, "fingerprint":
...}``: the key's fingerprint, never the key nor where it is. The compliance task that plans the copy runs
its batches itself and holds the key in memory for them (``masking_key``); a plan with a mask transform
sent anywhere else (a migration worker, a plan crafted on the broker) finds no key and is refused. Fakes are
the same as in-place masking's (the same ``Masker``, the same driver values), so a masked copy and a table
masked in place with one key join on the masked values.

Validation: the batches are copied on the migration's "rows" path, whose checkpoints record the checksum of
the rows as written, i.e. after masking; validation compares the copy with those masked checksums (the
original values never enter a checksum of the copy).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engines.compliance.anonymize.inplace import MAX_ATTEMPTS
from engines.compliance.anonymize.rules import NOT_UNIQUE, Masker, Rule, parse_rule
from engines.compliance.model import ComplianceRefused
from engines.errors import ConfigError

_LENGTH = re.compile(r"^(?:character varying|varchar|character|char|bpchar)\((\d+)\)$", re.I)
_UNIQUE = re.compile(r'^UNIQUE \((?:"((?:[^"]|"")+)"|([^,()"\s]+))\)$')


def max_length(sql_type: str) -> int | None:
    """The declared length of a character type (``character varying(120)`` -> 120)."""
    m = _LENGTH.match(sql_type.strip())
    return int(m.group(1)) if m else None


def unique_columns(table: Any) -> set[str]:
    """Columns of a migration ``Table`` carrying a single-column unique constraint (or unique index)."""
    out = set()
    for obj in table.schema:
        text = str(obj.get("sql", ""))
        if obj.get("contype") == "u":
            m = _UNIQUE.match(text)
            if m:
                out.add((m.group(1) or "").replace('""', '"') or m.group(2))
        elif obj.get("kind") == "index" and text.startswith("CREATE UNIQUE INDEX") and " WHERE " not in text:
            inner = text[text.rfind("(") + 1:text.rfind(")")]
            if "," not in inner:
                out.add(inner.strip().strip('"'))
    return out


def check_copy_rules(tables: list[Any], rules: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Match ``rules`` (table -> column -> rule; tables by ``schema.table`` or bare name) to the planned
    tables; every problem is named under its own field. Returns the rules keyed by ``Table.source``."""
    problems: list[tuple[str, str]] = []
    out: dict[str, dict[str, str]] = {}
    by_name: dict[str, Any] = {}
    for t in tables:
        by_name.setdefault(t.source, t)
        by_name.setdefault(t.source_name, t)
    for tname, cols in rules.items():
        table = by_name.get(tname)
        if table is None:
            problems.append((f"rules.{tname}", f"no table {tname!r} among the copied tables "
                                               f"({', '.join(sorted(t.source for t in tables))})"))
            continue
        if not isinstance(cols, dict) or not cols:
            problems.append((f"rules.{tname}", "give column: rule pairs"))
            continue
        columns = {c.name: c for c in table.columns}
        unique = unique_columns(table)
        for col, text in cols.items():
            where = f"rules.{tname}.{col}"
            if col not in columns:
                problems.append((where, f"{table.source} has no column {col!r}"))
                continue
            try:
                rule = parse_rule(text, where)
            except ConfigError as exc:
                problems += exc.problems
                continue
            if col in table.key and rule.name != "keep":
                problems.append((where, "primary-key columns are not masked (foreign keys point at them)"))
            elif rule.name == "null" and not columns[col].nullable:
                problems.append((where, f"{col} is NOT NULL: use redact, hash or default instead of null"))
            elif col in unique and rule.name in NOT_UNIQUE:
                problems.append((where, f"{col} has a unique constraint: {rule.name} would repeat values"))
            elif rule.name != "keep":
                out.setdefault(table.source, {})[col] = rule.text
    if problems:
        raise ConfigError(problems, "masked copy rules")
    if not out:
        raise ConfigError([("rules", "no column to mask: a masked copy needs at least one rule other than keep")])
    return out


def mask_spec(rules: dict[str, dict[str, str]], fingerprint: str) -> dict[str, Any]:
    """The plan's ``transform``: the rules and the key's fingerprint. No key, nor where to find one: a plan
    travels through the migration store and the broker, and the key stays in the process that masks."""
    return {"kind": "mask", "rules": rules, "fingerprint": fingerprint}


@functools.lru_cache(maxsize=4)
def _masker(key: bytes) -> Masker:
    return Masker(key)  # Faker's construction costs tens of ms: once per key and process


@functools.lru_cache(maxsize=256)
def _compiled(masker: Masker, rule: Rule, length: int | None) -> Any:
    return masker.compile(rule, length)  # kept across the batches a worker copies: repeated values masked once


_KEYS: dict[str, bytes] = {}  # fingerprint -> key, while a masked copy runs in this process


@contextmanager
def masking_key(key: bytes) -> Iterator[str]:
    """Make ``key`` usable by this process's batch transforms for the duration of a masked copy; yields its
    fingerprint (what the plan names). A plan naming another fingerprint, or sent to another process (a
    migration worker), finds no key and is refused."""
    fingerprint = _masker(key).fingerprint
    _KEYS[fingerprint] = key
    try:
        yield fingerprint
    finally:
        _KEYS.pop(fingerprint, None)


def batch_transform(plan: Any, table: Any, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The migration hook (``engines.migration.base.TRANSFORMS["mask"]``): one batch's rows with the ruled
    columns masked. Unique columns: a fake equal to another row's fake or original value in the batch is
    bumped (the next HMAC attempt), as in-place masking does; a clash across batches fails the unique
    index the migration builds at finalize, naming it."""
    spec = plan.transform or {}
    rules = (spec.get("rules") or {}).get(table.source)
    if not rules:
        return rows
    key = _KEYS.get(str(spec.get("fingerprint")))
    if key is None:
        raise ComplianceRefused(f"no anonymisation key for the masked copy {getattr(plan, 'id', '?')} in this process: "
                                "masked copies run their batches in the compliance task that planned them "
                                "(dbfleet compliance anonymize --copy-to)")
    masker = _masker(key)
    names = [c.name for c in table.columns]
    unique = unique_columns(table)
    plan_cols: list[tuple[int, Rule, int | None, bool]] = [
        (names.index(col), parse_rule(text), max_length(table.columns[names.index(col)].source_type), col in unique)
        for col, text in rules.items()]
    out = [list(r) for r in rows]
    for i, rule, length, is_unique in plan_cols:
        values = [r[i] for r in rows]
        masked = _compiled(masker, rule, length).many(values)
        if is_unique:
            masked = _unique(masker, rule, length, values, masked, f"{table.source}.{names[i]}")
        for r, m in zip(out, masked, strict=True):
            r[i] = m
    return [tuple(r) for r in out]


def _unique(masker: Masker, rule: Rule, length: int | None, values: list[Any], out: list[Any],
            where: str) -> list[Any]:
    attempts = [0] * len(out)
    originals = {v for v in values if v is not None}
    for _ in range(MAX_ATTEMPTS):
        seen: set[Any] = set()
        clash = []
        for j, v in enumerate(out):
            if v is not None and (v in originals or v in seen):
                clash.append(j)
            seen.add(v)
        if not clash:
            return out
        for j in clash:
            attempts[j] += 1
            out[j] = masker.apply(rule, values[j], length, attempts[j])
    raise ComplianceRefused(f"{where}: no collision-free fake after {MAX_ATTEMPTS} attempts")
