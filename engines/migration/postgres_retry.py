"""PostgreSQL targets: ``retry-rejects``. After the user fixed the source, the rows the target refused are
read again from the source by their keys (exactly those rows), converted and written; each batch's
checkpoint then adds what they contribute, measured on the target the way validation measures it, so a
later validation still compares every other row with what the source gave at copy time."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from engines.migration import rejects
from engines.migration.model import Batch, MigrationFailed, MigrationPlan, Table
from engines.migration.postgres_validate import measure_range
from engines.migration.types import CASTS, converter

if TYPE_CHECKING:
    from engines.migration.base import Source
    from engines.migration.postgres_target import PostgresTarget

MOD = 2 ** 64


def retry_rejects(tgt: PostgresTarget, plan: MigrationPlan, source: Source) -> dict[int, dict[str, Any]]:
    """Re-read and write every refused row, batch by batch (one transaction each). Returns batch id ->
    its new checkpoint counts (rows, rejects) and the rows still refused (table, key, column, reason)."""
    found: dict[int, list[str]] = {}
    for batch_id, key in tgt.conn.execute("SELECT batch_id, key FROM _dbfleet_migration.rejects"
                                          " WHERE migration_id = %s ORDER BY at", (plan.id,)).fetchall():
        found.setdefault(int(batch_id), []).append(key)
    out = {}
    for batch_id, keys in sorted(found.items()):
        batch = next(b for b in plan.batches if b.id == batch_id)
        table = plan.table(batch.table)
        if not table.key:
            raise MigrationFailed(f"{table.source} has no primary key: its refused rows cannot be read again one "
                                  f"by one; roll the migration back (dbfleet migrate rollback {plan.id}) and run it")
        out[batch_id] = _retry_batch(tgt, plan, table, batch, [json.loads(k) for k in keys], source)
    return out


def _measure(tgt: PostgresTarget, plan: MigrationPlan, table: Table, batch: Batch, escaped: bool
             ) -> tuple[tuple[int, int], tuple[int, int]]:
    """(count, checksum) of what validation measures for the batch: the server's (``sql``) and the driver
    values' (``python``) way (the same on the COPY paths)."""
    where = batch if table.ranges_portable else None
    return (measure_range(plan, tgt, table, where, "sql", escaped),
            measure_range(plan, tgt, table, where, "python", escaped))


def _retry_batch(tgt: PostgresTarget, plan: MigrationPlan, table: Table, batch: Batch, keys: list[list[Any]],
                 source: Source) -> dict[str, Any]:
    convert = converter([c.cast for c in table.columns])
    casts = {i: CASTS[c.cast] for i, c in enumerate(table.columns) if c.cast}
    with tgt.conn.transaction():
        escaped = bool(tgt.conn.execute("SELECT escaped FROM _dbfleet_migration.checkpoints WHERE migration_id = %s"
                                        " AND batch_id = %s FOR UPDATE", (plan.id, batch.id)).fetchone()[0])
        before = _measure(tgt, plan, table, batch, escaped)
        tgt.conn.execute("DELETE FROM _dbfleet_migration.rejects WHERE migration_id = %s AND batch_id = %s",
                         (plan.id, batch.id))
        tgt.rejected = []
        rows = []
        for raw in source.rows_by_keys(table, keys):
            try:
                rows.append(convert(raw))
            except ValueError:  # still a value no PostgreSQL type holds
                tgt._reject(plan, batch, table, _key(table, raw), None, "",
                            rejects.cast_failure(raw, table.columns, casts))
        written, _ = tgt.copy_rows(plan, table, batch, rows)
        after = _measure(tgt, plan, table, batch, escaped)
        if after[1][0] - before[1][0] != len(written):
            raise MigrationFailed(f"batch {batch.id} of {table.source}: the re-read rows did not all arrive")
        n = after[0][0] - before[0][0]
        d_sql, d_py = (after[0][1] - before[0][1]) % MOD, (after[1][1] - before[1][1]) % MOD
        # checksum: what the non-portable and COPY-path comparisons read (driver values for the typed path, the
        # same as the server's on the COPY paths); target_checksum: the typed path's server-side one (or NULL)
        tgt.conn.execute(
            "UPDATE _dbfleet_migration.checkpoints SET rows = rows + %s, rejects = %s,"
            " checksum = (checksum + %s) %% %s, target_checksum = (target_checksum + %s) %% %s"
            " WHERE migration_id = %s AND batch_id = %s",
            (n, len(tgt.rejected), d_py, MOD, d_sql, MOD, plan.id, batch.id))
        cp = tgt.conn.execute("SELECT rows, rejects FROM _dbfleet_migration.checkpoints WHERE migration_id = %s"
                              " AND batch_id = %s", (plan.id, batch.id)).fetchone()
    return {"rows": int(cp[0]), "rejects": int(cp[1]), "retried": len(keys), "copied": n,
            "rejected": list(tgt.rejected)}


def _key(table: Table, row: tuple[Any, ...]) -> str:
    from engines.migration.postgres_target import key_text

    return key_text(table, row)
