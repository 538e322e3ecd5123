"""Migration requests are checked in the caller's process: an inline secret never reaches the broker."""

from __future__ import annotations

import pytest

from engines.errors import ConfigError


def test_inline_password_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import migrations

    sent: list[object] = []
    monkeypatch.setattr(migrations, "celery_app", lambda: sent.append("sent") or None)
    secret = {"kind": "postgresql", "host": "h", "dbname": "d", "password": "hunter2-inline"}
    with pytest.raises(ConfigError) as info:
        migrations.plan(secret, "target")
    assert "password" in str(info.value) and "hunter2-inline" not in str(info.value) and sent == []
    with pytest.raises(ConfigError, match="inline database configs are off"):
        migrations.plan({"kind": "postgresql", "dsn": "postgresql://u:pw@h/d"}, "target")
    with pytest.raises(ConfigError, match="options.api_key"):
        migrations.plan({"kind": "postgresql", "host": "h", "password_env": "PW"}, "t", api_key="x")
    assert sent == []


def test_embed_options_from_the_command_line() -> None:
    import click

    from workers.cli_migrate import parse_embeds

    assert parse_embeds(("line_items=orders", "notes=orders:remarks", 'we"ird=public.p')) == {
        "line_items": "orders", "notes": {"into": "orders", "as": "remarks"}, 'we"ird': "public.p"}
    for bad in ("orders", "=orders", "items="):
        with pytest.raises(click.BadParameter, match="CHILD=PARENT"):
            parse_embeds((bad,))


def test_batches_are_dealt_into_lanes_of_about_equal_rows() -> None:
    from engines.migration.model import Batch, Column, MigrationPlan, Table
    from workers.migrations import deal

    def table(name: str, rows: int) -> Table:
        return Table(name, "public", name, "public", name, [Column("id", "integer", "integer")], ["id"], rows)

    tables = [table("big", 400_000), table("a", 900), table("b", 800), table("c", 700)]
    batches = [Batch(i, "big", None, None) for i in range(4)] + [Batch(4 + i, t, None, None) for i, t in
                                                                  enumerate("abc")]
    plan = MigrationPlan("m", {}, {}, "full", 100_000, 2, True, tables, batches, "pg-pg")
    lanes = deal(plan, [0, 1, 2, 3, 4, 5, 6])
    assert sorted(b for lane in lanes for b in lane) == [0, 1, 2, 3, 4, 5, 6]
    assert [sorted(b for b in lane if b < 4) for lane in lanes] == [[0, 2], [1, 3]]  # the big ones split evenly
    assert [len(lane) for lane in deal(plan, [5, 6])] == [1, 1]  # only what is pending, still spread
    assert deal(plan, []) == [[], []]
