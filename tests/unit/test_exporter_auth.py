"""The exporter's optional basic auth / bearer token, as a WSGI middleware around the metrics app."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from engines.config import parse_config
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
