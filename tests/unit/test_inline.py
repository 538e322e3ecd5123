"""engines/inline.py without servers: what an inline database config may name when an operator allows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.config import parse_config
from engines.errors import ConfigError
from engines.inline import NO_PASSFILE, InlineDatabaseConfig, check_inline, inline_database, secret_refs


def fleet(tmp_path: Path, **secrets: str) -> object:
    rows = ", ".join(f"{k}: '{v}'" for k, v in secrets.items())
    return parse_config(f"fleet: {{allow_inline_databases: true, inline_secrets: {{{rows}}}}}\n").fleet


def test_off_unless_the_operator_allows_them() -> None:
    with pytest.raises(ConfigError, match=r"inline database configs are off: name a registry id instead \(known: a, b\)"):
        check_inline({"kind": "postgresql", "host": "h"}, parse_config("{}").fleet, ["b", "a"])


def test_every_secret_reference_is_found_nested_ones_included() -> None:
    refs = list(secret_refs({"password_env": "A", "passfile": "/p", "options": {"tls": {"key_file": "/k"}},
                             "host": "h", "webhook_URL_ENV": "B"}))
    assert refs == [("password_env", "env", "A"), ("passfile", "file", "/p"), ("options.tls.key_file", "file", "/k"),
                    ("webhook_URL_ENV", "env", "B")]


def test_without_an_allow_list_no_secret_can_be_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        check_inline({"kind": "postgresql", "host": "h", "password_env": "X", "password_file": "/x"}, fleet(tmp_path))
    assert "env_prefix is not set" in str(info.value) and "file_dir is not set" in str(info.value)


def test_env_names_must_carry_the_prefix_and_be_names(tmp_path: Path) -> None:
    allowed = fleet(tmp_path, env_prefix="DBFLEET_INLINE_")
    check_inline({"kind": "postgresql", "host": "h", "password_env": "DBFLEET_INLINE_PW"}, allowed)
    for bad in ("DBFLEET_INLINE_", "DBFLEET_REPO_KEY", "XDBFLEET_INLINE_PW", "DBFLEET_INLINE_A B", 42):
        with pytest.raises(ConfigError, match="password_env"):
            check_inline({"kind": "postgresql", "host": "h", "password_env": bad}, allowed)


def test_files_must_resolve_inside_the_directory(tmp_path: Path) -> None:
    box = tmp_path / "inline"
    (box / "sub").mkdir(parents=True)
    (tmp_path / "inline-other").mkdir()
    allowed = fleet(tmp_path, file_dir=str(box))
    check_inline({"kind": "postgresql", "host": "h", "password_file": str(box / "sub" / "pw")}, allowed)
    for bad in (str(box), str(box / ".." / "key"), str(tmp_path / "inline-other" / "pw"), "relative/pw", ""):
        with pytest.raises(ConfigError, match="password_file"):
            check_inline({"kind": "postgresql", "host": "h", "password_file": bad}, allowed)


def test_dsn_and_file_databases_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dsn: not accepted"):
        check_inline({"kind": "postgresql", "dsn": "host=h passfile=/root/.pgpass"}, fleet(tmp_path))
    with pytest.raises(ConfigError, match="path: file databases are not accepted"):
        check_inline({"kind": "sqlite", "path": "/var/lib/dbfleet/history.db"}, fleet(tmp_path))


def test_built_config_has_no_ambient_password_and_an_inline_id(tmp_path: Path) -> None:
    db = inline_database({"kind": "pg", "host": "h", "dbname": "d", "id": "music"}, fleet(tmp_path))
    assert isinstance(db, InlineDatabaseConfig) and db.password() == "" and db.passfile == NO_PASSFILE
    assert db.id == "inline-music" and not Path(NO_PASSFILE).exists()
    with pytest.raises(ConfigError, match="inline database config is invalid"):
        inline_database({"kind": "nosuch", "host": "h"}, fleet(tmp_path))
