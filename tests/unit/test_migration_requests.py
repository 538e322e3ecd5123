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
    with pytest.raises(ConfigError, match="dsn must not contain a password"):
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
