"""The exporter's optional basic auth / bearer token, as a WSGI middleware around the metrics app."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from engines.config import parse_config
from engines.errors import DbfleetError
from workers.exporter import auth_middleware


def _call(app: Any, authorization: str | None) -> str:
    status: list[str] = []
    environ = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    body = b"".join(app(environ, lambda s, headers: status.append(s)))
    return f"{status[0]} {body.decode().strip()}"


def metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"dbfleet_up 1"]


def test_open_when_nothing_is_configured() -> None:
    assert _call(auth_middleware(metrics_app, parse_config("{}")), None) == "200 OK dbfleet_up 1"


def test_basic_auth_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_EXP_PW", "exp-pw-1")
    monkeypatch.setenv("T_EXP_TOKEN", "exp-token-2")
    cfg = parse_config("fleet:\n  exporter: {user: prom, password_env: T_EXP_PW, token_env: T_EXP_TOKEN}\n")
    app = auth_middleware(metrics_app, cfg)
    good = "Basic " + base64.b64encode(b"prom:exp-pw-1").decode()
    bad = "Basic " + base64.b64encode(b"prom:nope").decode()
    assert _call(app, good) == "200 OK dbfleet_up 1"
    assert _call(app, "Bearer exp-token-2") == "200 OK dbfleet_up 1"
    assert _call(app, bad).startswith("401") and _call(app, None).startswith("401")
    assert _call(app, "Bearer exp-token-x").startswith("401")


def test_a_user_without_a_password_source_is_a_config_error_not_an_open_endpoint() -> None:
    from engines.errors import ConfigError

    with pytest.raises(ConfigError, match="exporter.user is set but no password source"):
        parse_config("fleet:\n  exporter: {user: admin}\n")
    with pytest.raises(ConfigError, match="need exporter.user"):
        parse_config("fleet:\n  exporter: {password_env: T_EXP_PW}\n")


def test_credentials_that_resolve_empty_fail_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.errors import ConfigError

    monkeypatch.setenv("T_EXP_PW", "")
    monkeypatch.setenv("T_EXP_TOKEN", "")
    with pytest.raises(ConfigError, match="basic-auth password is empty"):
        auth_middleware(metrics_app, parse_config("fleet:\n  exporter: {user: prom, password_env: T_EXP_PW}\n"))
    with pytest.raises(ConfigError, match="bearer token in T_EXP_TOKEN is empty"):
        auth_middleware(metrics_app, parse_config("fleet:\n  exporter: {token_env: T_EXP_TOKEN}\n"))
    monkeypatch.delenv("T_EXP_PW")
    with pytest.raises(DbfleetError, match="T_EXP_PW"):
        auth_middleware(metrics_app, parse_config("fleet:\n  exporter: {user: prom, password_env: T_EXP_PW}\n"))


def test_token_only_auth_refuses_empty_and_basic_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_EXP_TOKEN", "exp-token-2")
    app = auth_middleware(metrics_app, parse_config("fleet:\n  exporter: {token_env: T_EXP_TOKEN}\n"))
    for header in (None, "Bearer ", "Bearer", "Basic " + base64.b64encode(b":").decode()):
        assert _call(app, header).startswith("401"), header
    assert _call(app, "Bearer exp-token-2") == "200 OK dbfleet_up 1"
