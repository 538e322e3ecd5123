"""One way to build MySQL connection arguments, ``dsn`` included, for the driver and the client tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.connectors.mysql import client_args, connect_kwargs, mysql_params
from engines.errors import ConfigError
from tests.conftest import db


def test_dsn_gives_host_port_user_and_database() -> None:
    entry = db("m", kind="mariadb", dsn="mysql://app%40eu@db.internal:3307/shop?unix_socket=/run/my.sock")
    p = mysql_params(entry)
    assert (p.host, p.port, p.user, p.database, p.unix_socket) == ("db.internal", 3307, "app@eu", "shop",
                                                                    "/run/my.sock")
    kwargs = connect_kwargs(entry, "pw")
    assert kwargs["host"] == "db.internal" and kwargs["port"] == 3307 and kwargs["database"] == "shop"
    assert kwargs["unix_socket"] == "/run/my.sock" and kwargs["password"] == "pw"
    args = client_args(entry, Path("/tmp/x.cnf"))
    assert args[0] == "--defaults-extra-file=/tmp/x.cnf"  # must come first for the mariadb clients
    assert args[1:] == ["-h", "db.internal", "-P", "3307", "-u", "app@eu", "--socket=/run/my.sock"]
    assert "pw" not in " ".join(args)


def test_explicit_fields_win_over_the_dsn_and_defaults_fill_the_rest() -> None:
    entry = db("m", kind="mysql", dsn="mysql://a@h1:3307/one", host="h2", user="b", dbname="two")
    p = mysql_params(entry)
    assert (p.host, p.port, p.user, p.database) == ("h2", 3306, "b", "two")  # host given: the kind's port
    bare = mysql_params(db("m", kind="mysql", host="h"))
    assert (bare.host, bare.port, bare.user, bare.database) == ("h", 3306, "root", None)
    assert connect_kwargs(db("m", kind="mysql", host="h", connect_timeout=2.5), None)["connect_timeout"] == 3


def test_a_dsn_of_another_kind_is_refused_with_the_shape_expected() -> None:
    with pytest.raises(ConfigError, match="mysql://user@host:3306/dbname"):
        mysql_params(db("m", kind="mysql", dsn="postgresql://u@h/d"))
