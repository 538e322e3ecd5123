"""In-place anonymisation: key-ordered batches, each one transaction with its checkpoint; resumable, masks
every row exactly once; refuses a database tagged ``prod`` without an explicit go and a fresh backup."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from engines.backup.retention import backup_time
from engines.compliance.anonymize.base import Checkpoint, MaskTarget, TableShape
from engines.compliance.anonymize.rules import NOT_UNIQUE, Masker, Rule, parse_rule
from engines.compliance.model import ComplianceRefused
from engines.config import DatabaseConfig
from engines.errors import ConfigError

MAX_ATTEMPTS = 100
BACKUP_MAX_AGE_HOURS = 24
Progress = Callable[[int, int | None], None]


def check_rules(shape: TableShape, rules: dict[str, str]) -> dict[str, Rule]:
    """Parse rules against the table: columns exist, keys untouched, no NULL into NOT NULL, unique columns
    only with rules that keep values distinct."""
    if not rules:
        raise ConfigError([("anonymization_rules", "give at least one column: rule")])
    problems, out = [], {}
    for col, text in rules.items():
        where = f"anonymization_rules.{col}"
        if col not in shape.columns:
            problems.append((where, f"{shape.name} has no column {col!r} (columns: {', '.join(shape.columns)})"))
            continue
        rule = parse_rule(text, where)
        info = shape.columns[col]
        if col in shape.key and rule.name != "keep":
            problems.append((where, "primary-key columns are not masked (rows are matched by them)"))
        elif rule.name == "null" and not info.nullable:
            problems.append((where, f"{col} is NOT NULL: use redact, hash or default instead of null"))
        elif info.unique and rule.name in NOT_UNIQUE:
            problems.append((where, f"{col} has a unique constraint: {rule.name} would repeat values; "
                                    "use default, hash, email or faker:<provider>"))
        else:
            out[col] = rule
    if problems:
        raise ConfigError(problems, "anonymisation rules")
    return {c: r for c, r in out.items() if r.name != "keep"}


def job_id(table: str, rules: dict[str, Rule], fingerprint: str) -> str:
    """One id per (table, rules, key): a rerun with the same ones resumes instead of masking twice."""
    canon = json.dumps({"table": table, "rules": {c: r.text for c, r in sorted(rules.items())}, "key": fingerprint},
                       sort_keys=True)
    return f"{table}:{hashlib.sha256(canon.encode()).hexdigest()[:16]}"


def prod_guard(db: DatabaseConfig, *, i_know: bool, backup_id: str | None, backup_ids: Callable[[], list[str]],
               now: datetime | None = None) -> None:
    """Refuse to mask a ``prod``-tagged database in place without ``i_know`` and a backup of it < 24 h old."""
    if "prod" not in db.tags:
        return
    hint = "pass --i-know and --backup-id <a backup of it taken within 24 h> (dbfleet backups list)"
    if not i_know:
        raise ComplianceRefused(f"{db.id} is tagged prod: in-place anonymisation overwrites its data; {hint}")
    if not backup_id:
        raise ComplianceRefused(f"{db.id} is tagged prod: name the fresh backup taken before masking; {hint}")
    if backup_id not in backup_ids():
        raise ComplianceRefused(f"backup {backup_id} of {db.id} is not in the backup repository")
    age = ((now or datetime.now(timezone.utc)) - backup_time(backup_id)).total_seconds() / 3600
    if age > BACKUP_MAX_AGE_HOURS:
        raise ComplianceRefused(f"backup {backup_id} of {db.id} is {age:.0f} h old (at most "
                                f"{BACKUP_MAX_AGE_HOURS} h): take a new backup first")


class _Batcher:
    """Masks the rows of one batch, bumping unique columns' fakes until they collide with nothing."""

    def __init__(self, target: MaskTarget, shape: TableShape, rules: dict[str, Rule], masker: Masker) -> None:
        self.target, self.shape, self.rules, self.masker = target, shape, rules, masker
        self.cols = list(rules)
        self.nkey = len(shape.key)
        self.collisions = 0

    def mask(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The batch's rows with every ruled column replaced by its fake."""
        masked_cols = []
        for i, col in enumerate(self.cols):
            values = [r[self.nkey + i] for r in rows]
            info = self.shape.columns[col]
            rule = self.rules[col]
            out = [self.masker.apply(rule, v, info.max_length) for v in values]
            if info.unique:
                out = self._unique(col, rule, values, out)
            masked_cols.append(out)
        return [(*r[: self.nkey], *(m[j] for m in masked_cols)) for j, r in enumerate(rows)]

    def _unique(self, col: str, rule: Rule, values: list[Any], out: list[Any]) -> list[Any]:
        maxlen = self.shape.columns[col].max_length
        attempts = [0] * len(out)
        for _ in range(MAX_ATTEMPTS):
            live = [v for v in out if v is not None]
            # any row holding the fake (masked before, not masked yet, or this batch's original) is a clash
            busy = self.target.taken(self.shape, col, live) | set(values)
            seen: set[Any] = set()
            clash = []
            for j, v in enumerate(out):
                if v is not None and (v in busy or v in seen):
                    clash.append(j)
                seen.add(v)
            if not clash:
                return out
            self.collisions += len(clash)
            for j in clash:
                attempts[j] += 1
                out[j] = self.masker.apply(rule, values[j], maxlen, attempts[j])
        raise ComplianceRefused(f"{self.shape.name}.{col}: no collision-free fake after {MAX_ATTEMPTS} attempts "
                                f"(column too short for unique fakes?)")


def _open_job(target: MaskTarget, shape: TableShape, parsed: dict[str, Rule], job: str, again: bool) -> Checkpoint:
    """The job's checkpoint: resumed, restarted (``again``), new, or refused when it already finished."""
    cp = target.checkpoint(job)
    if cp and cp.finished and not again:
        raise ComplianceRefused(f"{shape.name} was already masked with these rules (job {job}); masking again "
                                "would replace fakes with fakes of fakes: pass again=True (--again) if that is meant")
    if cp and cp.finished:
        target.reset(job)
        cp = None
    if cp is None:
        target.start(shape, job, shape.name, json.dumps({c: r.text for c, r in parsed.items()}, sort_keys=True))
        cp = Checkpoint(job, None, 0)
    return cp


def anonymize_in_place(target: MaskTarget, database_id: str, table: str, rules: dict[str, str], masker: Masker, *,
                       batch_size: int = 1000, again: bool = False, throttle_seconds: float = 0.0,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Mask ``rules`` columns of ``table`` in place; a rerun resumes from the checkpoint of the same job."""
    shape = target.describe(table)
    parsed = check_rules(shape, rules)
    job = job_id(shape.name, parsed, masker.fingerprint)
    cp = _open_job(target, shape, parsed, job, again)
    resumed_from, started, batches = cp.rows_done, time.perf_counter(), 0
    batcher = _Batcher(target, shape, parsed, masker)
    if not parsed:  # every rule is keep
        target.write(shape, [], [], cp, True)
    while parsed:
        try:
            rows = target.batch(shape, batcher.cols, cp.last_key, batch_size)
            new = batcher.mask(rows) if rows else []
            done = len(rows) < batch_size
            cp = Checkpoint(job, list(rows[-1][: batcher.nkey]) if rows else cp.last_key, cp.rows_done + len(rows))
            target.write(shape, batcher.cols, new, cp, done)
        except BaseException:
            target.rollback()
            raise
        batches += 1
        if progress:
            progress(cp.rows_done, None)
        if done:
            break
        if throttle_seconds:
            time.sleep(throttle_seconds)
    elapsed = time.perf_counter() - started
    masked_now = cp.rows_done - resumed_from
    return {"database_id": database_id, "table": shape.name, "job_id": job, "rows_masked": cp.rows_done,
            "rows_this_run": masked_now, "resumed_from_rows": resumed_from, "batches": batches,
            "columns": {c: r.text for c, r in parsed.items()}, "unique_collisions_resolved": batcher.collisions,
            "duration_seconds": round(elapsed, 3), "rows_per_second": round(masked_now / elapsed, 1) if elapsed else None,
            "key_fingerprint": masker.fingerprint}
