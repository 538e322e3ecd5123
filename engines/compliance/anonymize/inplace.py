"""In-place anonymisation: key-ordered batches, each one transaction with its checkpoint; resumable, masks
every row exactly once; refuses a database tagged ``prod`` without an explicit go and a fresh backup."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from engines.backup.retention import backup_time
from engines.compliance.anonymize.base import Checkpoint, MaskTarget, RowsChanged, TableShape
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
        # one compiled rule per column for the whole run: each distinct value is masked once
        self.compiled = {c: masker.compile(r, shape.columns[c].max_length) for c, r in rules.items()}

    def mask(self, rows: list[tuple[Any, ...]], target: MaskTarget | None = None,
             probe: bool = True) -> list[tuple[Any, ...]]:
        """The batch's rows with every ruled column replaced by its fake (``target``: the connection holding
        the batch, which answers ``taken``; ``probe`` False: fakes are checked against the batch only, and a
        clash with any other row is left to the unique constraint to report at write time)."""
        if not rows:
            return []
        columns = list(zip(*rows, strict=True))  # transposed once, in C
        masked_cols: list[Any] = []
        for i, col in enumerate(self.cols):
            values = columns[self.nkey + i]
            out = self.compiled[col].many(values)
            if self.shape.columns[col].unique:
                out = self._unique(col, self.rules[col], list(values), out, target or self.target, probe)
            masked_cols.append(out)
        return list(zip(*columns[: self.nkey], *masked_cols, strict=True))

    def _unique(self, col: str, rule: Rule, values: list[Any], out: list[Any], target: MaskTarget,
                probe: bool = True) -> list[Any]:
        maxlen = self.shape.columns[col].max_length
        attempts = [0] * len(out)
        originals = set(values)
        for _ in range(MAX_ATTEMPTS):
            # any row holding the fake (masked before, not masked yet, or this batch's original) is a clash
            busy = target.taken(self.shape, col, [v for v in out if v is not None]) | originals if probe else originals
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


def _next(batcher: _Batcher, cp: Checkpoint, rows: list[tuple[Any, ...]], n: int) -> Checkpoint:
    return Checkpoint(cp.job_id, list(rows[-1][: batcher.nkey]) if rows else cp.last_key, cp.rows_done + len(rows),
                      len(rows) < n)


def _sequential(target: MaskTarget, batcher: _Batcher, cp: Checkpoint, n: int, throttle: float,
                progress: Progress | None, limit: int | None = None) -> tuple[Checkpoint, int]:
    """Batch after batch on one connection: read (locked), mask, write with the checkpoint, commit (at most
    ``limit`` batches)."""
    batches = 0
    while limit is None or batches < limit:
        try:
            rows = target.batch(batcher.shape, batcher.cols, cp.last_key, n)
            new = batcher.mask(rows, target) if rows else []
            cp = _next(batcher, cp, rows, n)
            target.write(batcher.shape, batcher.cols, new, cp, cp.finished)
        except BaseException:
            target.rollback()
            raise
        batches += 1
        if progress:
            progress(cp.rows_done, None)
        if cp.finished:
            return cp, batches
        if throttle:
            time.sleep(throttle)
    return cp, batches


def _pipelined(a: MaskTarget, b: MaskTarget, batcher: _Batcher, cp: Checkpoint, n: int, throttle: float,
               progress: Progress | None) -> tuple[Checkpoint, int]:
    """Two connections taking batches in turn: while one writes and commits batch N (in a thread, the
    server busy), the other reads, locks and masks batch N+1 (Python busy). Batch N+1 is written only after
    batch N committed, so checkpoints commit in order and a kill -9 leaves the same state as the sequential
    loop. The unique-column bumps of N+1 were decided before N's fakes were visible: a batch that bumped
    decides again once they are, and a clash with them (a unique violation, exceedingly rare) rolls both
    back and hands over to the sequential loop from the last committed checkpoint. Either way each value
    gets the fake the sequential loop would have given it. Where the target supports it (``optimistic``),
    batches are read without locks and written compare-and-set, and unique columns' fakes are checked
    against the batch only: a row changed by someone else in between (``RowsChanged``) or a fake held by
    another row (a unique violation at write time) hands over the same way, and the sequential loop redoes
    that batch locked, probing ``taken``. A batch that commits had no such clash, so it holds the fakes the
    sequential loop would have given it."""
    from concurrent.futures import Future, ThreadPoolExecutor

    targets, batches, turn = (a, b), 0, 0
    pending: Future[None] | None = None
    committed = cp
    probe = not (a.optimistic(True) & b.optimistic(True))  # both: a side effect each
    counted = batcher.collisions  # bumps of the committed batches
    pending_bumps = 0
    with ThreadPoolExecutor(1, thread_name_prefix="dbfleet-mask-write") as pool:
        try:
            while True:
                t = targets[turn % 2]
                turn += 1
                rows = t.batch(batcher.shape, batcher.cols, cp.last_key, n)
                before = batcher.collisions
                new = batcher.mask(rows, t, probe) if rows else []
                nxt = _next(batcher, cp, rows, n)
                if pending is not None:
                    pending.result()  # batch N committed (or its error is raised here)
                    pending, committed, batches, counted = None, cp, batches + 1, counted + pending_bumps
                    if progress:
                        progress(committed.rows_done, None)
                    if probe and batcher.collisions != before:  # bumps decided before N's fakes were visible
                        batcher.collisions = before
                        new = batcher.mask(rows, t)
                pending_bumps = batcher.collisions - before
                pending = pool.submit(t.write, batcher.shape, batcher.cols, new, nxt, nxt.finished)
                cp = nxt
                if nxt.finished:
                    pending.result()
                    pending, committed, batches = None, cp, batches + 1
                    if progress:
                        progress(committed.rows_done, None)
                    return committed, batches
                if throttle:
                    time.sleep(throttle)
        except BaseException as exc:
            if pending is not None:
                try:
                    pending.result()
                    committed, batches, counted = cp, batches + 1, counted + pending_bumps
                except BaseException:  # noqa: S110 - the write's own failure: rolled back just below
                    pass
            for t in targets:
                t.rollback()
            if not (a.unique_violation(exc) or isinstance(exc, RowsChanged)):
                raise
            batcher.collisions = counted  # the batches rolled back count again when redone
            reread = a.checkpoint(committed.job_id)
            return (reread or committed), batches
        finally:
            a.optimistic(False)
            b.optimistic(False)


def _overlapped(targets: list[MaskTarget], batcher: _Batcher, cp: Checkpoint, n: int, throttle: float,
                progress: Progress | None) -> tuple[Checkpoint, int]:
    """Three connections or more, targets that write compare-and-set (``optimistic``): batch N+2 is masked
    while N and N+1 are written at once (their UPDATEs run in parallel on the server) and N+3 is read. Commits stay in
    order: each write moves the checkpoint only from the value the batch before left (a compare-and-set on
    ``rows_done``, which also waits for that batch's commit), so a write whose predecessor failed fails too,
    and a kill -9 leaves a checkpoint whose rows are all masked. A unique clash (with another row, or with a
    batch in flight), a row changed in between, or a deadlock between two batches in flight rolls back what
    did not commit and hands over to the sequential loop from the last committed checkpoint, as in
    ``_pipelined``: a batch that commits holds the fakes the sequential loop gives it."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    inflight: deque[tuple[Future[None], Checkpoint, int, int]] = deque()  # write, checkpoint, bumps, target
    batches, turn, committed, counted = 0, 0, cp, batcher.collisions
    for t in targets:
        t.optimistic(True)

    def settle(one: bool) -> None:
        nonlocal committed, counted, batches
        while inflight and (not one or inflight[0][0].done()):
            fut, c, bumps, _ = inflight[0]
            fut.result()
            inflight.popleft()
            committed, counted, batches = c, counted + bumps, batches + 1
            if progress:
                progress(c.rows_done, None)

    def wait_for(i: int) -> None:  # the last write on connection ``i`` done (and the ones before it)
        while any(w[3] == i for w in inflight):
            inflight[0][0].result()
            settle(True)
        settle(True)

    reading: Future[list[tuple[Any, ...]]] | None = None  # the next batch, read ahead
    with ThreadPoolExecutor(len(targets) + 1, thread_name_prefix="dbfleet-mask-io") as pool:
        try:
            while not cp.finished:
                i = turn % len(targets)
                turn += 1
                wait_for(i)
                t = targets[i]
                rows = reading.result() if reading else t.batch(batcher.shape, batcher.cols, cp.last_key, n)
                reading = None
                nxt = _next(batcher, cp, rows, n)
                if not nxt.finished:  # read the next batch on the next connection while this one is masked
                    j = turn % len(targets)
                    wait_for(j)
                    reading = pool.submit(targets[j].batch, batcher.shape, batcher.cols, nxt.last_key, n)
                before = batcher.collisions
                new = batcher.mask(rows, t, False) if rows else []
                inflight.append((pool.submit(t.write, batcher.shape, batcher.cols, new, nxt, nxt.finished), nxt,
                                 batcher.collisions - before, i))
                cp = nxt
                if throttle:
                    time.sleep(throttle)
            settle(False)
            return committed, batches
        except BaseException as exc:
            if reading is not None:
                with contextlib.suppress(BaseException):
                    reading.result()
            while inflight:  # in order; a write after a failed one fails too (its checkpoint moved on nothing)
                try:
                    settle(False)
                except BaseException:  # noqa: S110 - the first failure (exc) decides below
                    inflight.popleft()
            for t in targets:
                t.rollback()
            if not _handover(targets[0], exc):
                raise
            batcher.collisions = counted  # the batches rolled back count again when redone
            reread = targets[0].checkpoint(committed.job_id)
            return (reread or committed), batches
        finally:
            for t in targets:
                t.optimistic(False)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector run ~100x less often: a batch loop allocates hundreds of thousands of
    tuples and strings (none in cycles), which set off collections walking the heap (~15 % of the client's
    CPU); cycles made meanwhile are still collected, later."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], 100_000), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _handover(target: MaskTarget, exc: BaseException) -> bool:
    """Whether ``exc`` means: redo from the last committed checkpoint, locked (not a failure)."""
    return target.unique_violation(exc) or isinstance(exc, RowsChanged)


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
    else:
        other = target.fork()
        third = other.fork() if other is not None and other.optimistic(False) else None
        try:
            with _no_cyclic_gc():
                while not cp.finished:
                    if other is not None and third is not None:
                        cp, more = _overlapped([target, other, third], batcher, cp, batch_size, throttle_seconds,
                                               progress)
                        batches += more
                    elif other is not None:
                        cp, more = _pipelined(target, other, batcher, cp, batch_size, throttle_seconds, progress)
                        batches += more
                    if not cp.finished:  # no second connection, or the pipeline handed over: a unique clash or a
                        # row changed under it to redo, one batch, locked (then the pipeline again)
                        cp, more = _sequential(target, batcher, cp, batch_size, throttle_seconds, progress,
                                               None if other is None else 1)
                        batches += more
        finally:
            for twin in (other, third):
                if twin is not None:
                    twin.close()
    elapsed = time.perf_counter() - started
    masked_now = cp.rows_done - resumed_from
    return {"database_id": database_id, "table": shape.name, "job_id": job, "rows_masked": cp.rows_done,
            "rows_this_run": masked_now, "resumed_from_rows": resumed_from, "batches": batches,
            "columns": {c: r.text for c, r in parsed.items()}, "unique_collisions_resolved": batcher.collisions,
            "duration_seconds": round(elapsed, 3), "rows_per_second": round(masked_now / elapsed, 1) if elapsed else None,
            "key_fingerprint": masker.fingerprint}
