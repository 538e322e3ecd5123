"""Planning a migration: discover the source, map types, split tables into key-range batches (reads only);
and ``prepare``, the first step of a run, which creates the target's schema."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from engines.config import DatabaseConfig
from engines.errors import ConfigError
from engines.migration.base import TRANSFORMS, Source, Target
from engines.migration.connections import connections
from engines.migration.model import Batch, Embed, MigrationPlan, MigrationType, Table
from engines.migration.registry import source_class, target_class
from engines.tracing import traced

IF_EXISTS = ("fail", "truncate", "append")


@dataclass
class MigrationOptions:
    """What to migrate and how; every field has a default (``plan_migration(src, tgt, batch_size=...)``).

    ``embed`` (MongoDB targets): child table -> parent table (or ``{"into": parent, "as": field}``); the
    child's rows go into an array in their parent's document, following the child's foreign key.
    ``indexes`` (PostgreSQL targets): rebuild the source's secondary indexes and constraints (unique,
    check, exclusion; foreign keys between migrated tables) on the tables the migration creates.
    ``base`` (incremental): the plan whose watermarks this run continues.
    ``create_target``: create the target database when it is missing (and the role may).
    ``if_exists`` (full migrations): what to do with target tables that already hold rows: ``fail`` (refuse
    at plan time, naming them), ``truncate`` (emptied when the run starts; rollback restores them) or
    ``append`` (rows are added to what is there: duplicates are the user's business)."""

    type: MigrationType = MigrationType.FULL
    batch_size: int = 1000
    parallel_workers: int = 4
    validation: bool = True
    tables: list[str] | None = None
    watermark: str | None = None
    max_rejects: int = 0
    migration_id: str | None = None
    base: MigrationPlan | None = None
    lock_timeout: float = 60.0
    embed: dict[str, Any] | None = None
    indexes: bool = True
    transform: dict[str, Any] | None = None  # row transform in the worker (base.TRANSFORMS): masked copies
    soft_delete: str | None = None  # incremental: a boolean column marking deleted rows (document targets delete them)
    create_target: bool = True
    if_exists: str = "fail"

    @classmethod
    def of(cls, options: MigrationOptions | None = None, **fields: Any) -> MigrationOptions:
        """``options`` with ``fields`` replaced (``kind`` is the old name of ``type``); unknown names fail."""
        if "kind" in fields:
            fields["type"] = fields.pop("kind")
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError([("options", f"unknown migration options: {', '.join(sorted(unknown))}")])
        found = dataclasses.replace(options or cls(), **fields)
        found.type = MigrationType(found.type)
        for name, cast in (("batch_size", int), ("parallel_workers", int), ("max_rejects", int),
                           ("lock_timeout", float), ("validation", bool), ("indexes", bool),
                           ("create_target", bool)):
            setattr(found, name, cast(getattr(found, name)))  # JSON from the broker: numbers may be text
        return found


def new_id() -> str:
    """A migration id: the time and a random suffix."""
    return datetime.now(timezone.utc).strftime("mig-%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]


@traced("migration.plan", lambda source, target, *a, **k: {"source": source.id, "target": target.id})
def plan_migration(source: DatabaseConfig, target: DatabaseConfig, options: MigrationOptions | None = None,
                   **fields: Any) -> MigrationPlan:
    """Discover the source, map types, split every table into key ranges. Reads only; writes nothing but a
    missing target database (``create_target``), empty.
    ``options`` (or its fields by name) say what and how (``MigrationOptions``)."""
    opts = MigrationOptions.of(options, **fields)
    bad = [(name, f"{name} must be at least {low}, got {getattr(opts, name)}")
           for name, low in (("batch_size", 1), ("parallel_workers", 1), ("max_rejects", 0))
           if getattr(opts, name) < low]
    if opts.if_exists not in IF_EXISTS:
        bad.append(("if_exists", f"if_exists must be one of {', '.join(IF_EXISTS)}, got {opts.if_exists!r}"))
    if bad:  # each named under its own field, before anything is read
        raise ConfigError(bad)
    if opts.type == MigrationType.INCREMENTAL and not opts.watermark:
        raise ConfigError([("watermark", "an incremental migration needs a watermark column (e.g. updated_at)")])
    target_cls = target_class(target.kind)
    with source_class(source.kind).connect(source) as src:  # the source first: it is read, the target may be made
        target_cls.ensure_database(target, opts.create_target)
        with target_cls.connect(target) as tgt:
            return _plan(source, target, opts, src, tgt)


def _plan(source: DatabaseConfig, target: DatabaseConfig, opts: MigrationOptions, src: Source,
          tgt: Target) -> MigrationPlan:
    """The plan, over the open source and target."""
    found = src.discover(opts.tables)
    if opts.embed:
        found = _plan_embeds(src, tgt, opts.type, found, opts.embed)
    if opts.indexes and tgt.builds_schema:
        for table in found:
            table.schema = src.schema_objects(table, {t.source for t in found})
    batches: list[Batch] = []
    for table in found:
        batches += src.bounds(table, opts.batch_size, len(batches))
    path = src.plan_path(tgt, opts.type, opts.validation)
    if opts.transform:  # transformed rows go through the worker as values: no COPY pass-through
        if opts.transform.get("kind") not in TRANSFORMS:
            raise ConfigError([("transform", f"unknown row transform {opts.transform.get('kind')!r}")])
        path = "rows"
    plan = MigrationPlan(opts.migration_id or new_id(), source.public(), target.public(), opts.type.value,
                         opts.batch_size, opts.parallel_workers, opts.validation, found, batches, path,
                         opts.watermark, max_rejects=opts.max_rejects, lock_timeout=opts.lock_timeout,
                         if_exists=opts.if_exists, transform=opts.transform)
    plan.soft_delete = opts.soft_delete
    if opts.type == MigrationType.FULL and opts.if_exists == "fail":
        _refuse_nonempty(tgt, found)
    if opts.type == MigrationType.INCREMENTAL:
        if not tgt.supports_incremental:
            raise ConfigError([("type", f"incremental migrations cannot write into {tgt.kind} in this version")])
        _incremental(plan, src, tgt, opts.base)
    _check_soft_delete(plan)
    plan.notes = tgt.plan_notes(plan)
    return plan


def _refuse_nonempty(tgt: Target, tables: list[Table]) -> None:
    """A full migration into tables that already hold rows would mix old rows with the copy (a keyless
    table doubles at every run): refuse, naming them and the ways out."""
    full = tgt.nonempty(tables)
    if full:
        raise ConfigError([("if_exists", f"target tables already hold rows: {', '.join(full)}; choose "
                                         "--if-exists truncate (empty them when the run starts; rollback restores "
                                         "them) or --if-exists append (add to them), or empty them yourself")])


def _embed_spec(child: str, spec: Any) -> tuple[str, str | None]:
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, dict) and isinstance(spec.get("into"), str) and set(spec) <= {"into", "as"}:
        return spec["into"], spec.get("as")
    raise ConfigError([(f"embed.{child}", "give the parent table, or {'into': parent, 'as': field}")])


def _plan_embeds(src: Any, tgt: Target, kind: MigrationType, found: list[Table],
                 embed: dict[str, Any]) -> list[Table]:
    """Attach each embedded child to its parent (by the child's foreign key); children get no batches."""
    if not tgt.supports_embeds:
        raise ConfigError([("embed", f"embedding child tables is for MongoDB targets, not {tgt.kind}")])
    if not src.supports_embeds:
        raise ConfigError([("embed", "embedding follows foreign keys of a PostgreSQL source")])
    if kind != MigrationType.FULL:
        raise ConfigError([("embed", "embedding is supported for full migrations only")])
    specs = {child: _embed_spec(child, spec) for child, spec in embed.items()}
    known = {t.source: t for t in src.discover([*specs, *(p for p, _ in specs.values())])}

    def lookup(name: str) -> Table:
        return next(t for t in known.values() if name in (t.source, t.source_name))

    children = {lookup(c).source for c in specs}
    for child_name, (parent_name, field) in specs.items():
        child, parent = lookup(child_name), lookup(parent_name)
        if parent.source in children:
            raise ConfigError([(f"embed.{child_name}", f"{parent.source} is embedded itself: one level of embedding")])
        mine = next((t for t in found if t.source == parent.source), None)
        if mine is None:
            raise ConfigError([(f"embed.{child_name}", f"{parent.source} is not among the migrated tables")])
        field = field or child.source_name
        if not field or field.startswith("$") or "." in field or "\x00" in field \
                or field in {c.name for c in parent.columns} | {"_id"} | {e.field for e in mine.embeds}:
            raise ConfigError([(f"embed.{child_name}", f"field {field!r} is not free in {parent.source}'s documents"
                                                       " (a column's name, or has '.'/'$'): choose one with 'as'")])
        fk = src.foreign_key(child, parent)
        mine.embeds.append(Embed(child.source, child.source_schema, child.source_name, field, fk,
                                 child.key or [c.name for c in child.columns], child.columns))
    return [t for t in found if t.source not in children]


def _incremental(plan: MigrationPlan, src: Source, tgt: Any, base: MigrationPlan | None) -> None:
    plan.base_id = base.id if base else plan.id
    plan.created = list(base.created) if base else []
    for table in plan.tables:
        if not table.key:
            raise ConfigError([("tables", f"{table.source} has no primary key: incremental upserts need one")])
        if plan.watermark not in {c.name for c in table.columns}:
            raise ConfigError([("watermark", f"{table.source} has no column {plan.watermark!r}")])
        plan.since[table.source] = tgt.last_watermark(plan.base_id, table.source)
        plan.until[table.source] = src.max_watermark(table, plan.watermark or "")


def _check_soft_delete(plan: MigrationPlan) -> None:
    if plan.soft_delete is None:
        return
    if plan.type != MigrationType.INCREMENTAL.value:
        raise ConfigError([("soft_delete", "a soft-delete column is for incremental migrations")])
    if not any(plan.soft_delete in {c.name for c in t.columns} for t in plan.tables):
        raise ConfigError([("soft_delete", f"no migrated table has a column {plan.soft_delete!r}")])


@traced("migration.prepare", lambda plan, *a, **k: {"migration_id": plan.id})
def prepare(plan: MigrationPlan, source: DatabaseConfig, target: DatabaseConfig) -> MigrationPlan:
    """Create the target schema (or check the existing one); records what it created for rollback."""
    with connections(source, target) as (_, tgt):
        plan.created = tgt.prepare(plan)
    return plan
