"""The migration's row-transform hook as masked copies use it: a plan without a transform passes rows
through; a mask transform masks only in the process holding the key for its fingerprint (the compliance
task that planned the copy), so a plan crafted on the broker or run by a migration worker is refused."""

from __future__ import annotations

import pytest

from engines.compliance.anonymize.copy import batch_transform, mask_spec, masking_key, unique_columns
from engines.compliance.anonymize.rules import Masker, parse_rule
from engines.compliance.model import ComplianceRefused
from engines.migration.base import transform_rows
from engines.migration.model import Column, MigrationPlan, Table

KEY = b"h17-hook-key-0123456789abcdef"


def _table() -> Table:
    cols = [Column("id", "bigint", "bigint", False), Column("email", "character varying(40)", "character varying(40)"),
            Column("city", "text", "text")]
    return Table("public.users", "public", "users", "public", "users", cols, ["id"],
                 schema=[{"kind": "constraint", "name": "users_email_key", "sql": "UNIQUE (email)", "contype": "u"}])


def _plan(transform: dict | None) -> MigrationPlan:  # type: ignore[type-arg]
    return MigrationPlan("h17-mig", {}, {}, "full", 10, 1, True, [_table()], [], "rows", transform=transform)


ROWS = [(1, "ann@example.org", "Paris"), (2, "bob@example.org", None), (3, None, "Paris")]


def test_rows_pass_through_a_plan_without_a_transform() -> None:
    assert transform_rows(_plan(None), _table(), list(ROWS)) == ROWS


def test_a_mask_transform_masks_with_the_key_held_by_this_process_only() -> None:
    fingerprint = Masker(KEY).fingerprint
    plan = _plan(mask_spec({"public.users": {"email": "email"}}, fingerprint))
    with pytest.raises(ComplianceRefused, match="no anonymisation key for the masked copy h17-mig"):
        transform_rows(plan, _table(), list(ROWS))  # a migration worker, or a plan crafted on the broker
    with masking_key(KEY) as held:
        assert held == fingerprint
        out = transform_rows(plan, _table(), list(ROWS))
    expected = Masker(KEY).apply(parse_rule("email"), "ann@example.org", 40)
    assert out[0] == (1, expected, "Paris") and out[1][0] == 2 and out[1][1] != "bob@example.org"
    assert out[2] == (3, None, "Paris") and len(out[1][1]) <= 40  # NULL stays NULL, varchar(40) respected
    assert not {"key_env", "key_file"} & set(plan.transform or {})
    with pytest.raises(ComplianceRefused):  # the key is gone once the copy is over
        batch_transform(plan, _table(), list(ROWS))


def test_unique_columns_are_read_from_the_planned_constraints() -> None:
    assert unique_columns(_table()) == {"email"}
