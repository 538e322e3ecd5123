"""The API never runs open: no token source is an error, every registered route (WebSockets and the
OpenAPI pages included, and routes added later) answers 401 without the token, an empty token never
matches, and `dbfleet up` / `dbfleet api --generate-token` create a 0600 token in the state dir."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import WebSocketDenialResponse

from engines.config import parse_config
from engines.errors import ConfigError
from workers import runtime
from workers.api import api_token, create_api, generate_token

TOKEN = "h1-unit-api-token-2b7c"


class Unreachable:
    """Stands in for the cache and the alert store: a denied request must never get as far as using them."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a request without the token reached the backend ({name})")


def app_with(token: str = TOKEN) -> Any:
    cfg = parse_config("databases:\n  music: {kind: postgresql, host: 127.0.0.1}\n")
    return create_api(cfg, Unreachable(), Unreachable(), token=token)


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_registered_route_answers_401_without_the_token() -> None:
    app = app_with()
    client = TestClient(app)
    seen = 0
    for route in app.routes:
        if isinstance(route, (APIWebSocketRoute, WebSocketRoute)):
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer wrong-token-123456"}):
                with pytest.raises(WebSocketDenialResponse) as info:
                    with client.websocket_connect(_fill(route.path), headers=headers) as ws:
                        ws.receive_json()
                assert info.value.status_code == 401, (route.path, headers)
            with pytest.raises(WebSocketDenialResponse):
                with client.websocket_connect(_fill(route.path) + "?token=") as ws:
                    ws.receive_json()
            seen += 1
            continue
        assert isinstance(route, (APIRoute, Route)), route
        for method in sorted(route.methods or ()):
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"},
                            {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
                answer = client.request(method, _fill(route.path), headers=headers)
                assert answer.status_code == 401, (method, route.path, headers, answer.status_code)
                assert answer.headers["www-authenticate"] == "Bearer"
            seen += 1
    assert seen >= 14  # every route of the API, the WebSockets and the OpenAPI pages


def test_a_route_added_later_is_guarded_too_and_the_token_opens_it() -> None:
    app = app_with()

    @app.get("/api/added-later")
    def added() -> dict[str, str]:
        return {"ok": "yes"}

    client = TestClient(app)
    assert client.get("/api/added-later").status_code == 401
    assert client.get("/api/added-later", headers={"Authorization": f"Bearer {TOKEN}"}).json() == {"ok": "yes"}
    assert client.get("/openapi.json", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_no_token_source_empty_or_short_tokens_refuse_to_start(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBFLEET_API_TOKEN", raising=False)
    cfg = parse_config(f"fleet: {{state_dir: '{tmp_path}'}}\n")
    with pytest.raises(ConfigError, match="the API runs only with a token"):
        create_api(cfg, Unreachable(), Unreachable())
    for empty in ("", "   "):
        with pytest.raises(ConfigError, match="empty or shorter"):
            create_api(cfg, Unreachable(), Unreachable(), token=empty)
    monkeypatch.setenv("DBFLEET_API_TOKEN", "")
    with pytest.raises(ConfigError, match="from environment variable DBFLEET_API_TOKEN is empty"):
        api_token(cfg)
    monkeypatch.setenv("DBFLEET_API_TOKEN", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        api_token(cfg)
    monkeypatch.setenv("DBFLEET_API_TOKEN", TOKEN)
    assert api_token(cfg) == TOKEN


def test_generated_token_is_0600_whatever_the_umask_and_stable(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.supervisor import ensure_api_token

    monkeypatch.delenv("DBFLEET_API_TOKEN", raising=False)
    cfg = parse_config(f"fleet: {{state_dir: '{tmp_path}'}}\n")
    old = os.umask(0)
    try:
        token, where = ensure_api_token(cfg)
    finally:
        os.umask(old)
    path = Path(where)
    assert path == tmp_path / "secrets" / "api.token" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(token) >= 32 and api_token(cfg) == token and ensure_api_token(cfg) == (token, where)
    assert generate_token(cfg) == (path, False)
    monkeypatch.setenv("DBFLEET_API_TOKEN", TOKEN)  # a configured source wins over the generated file
    assert ensure_api_token(cfg) == (TOKEN, "DBFLEET_API_TOKEN")


def test_dbfleet_api_refuses_to_start_without_a_token_and_generates_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.cli import cli

    monkeypatch.delenv("DBFLEET_API_TOKEN", raising=False)
    monkeypatch.delenv("DBFLEET_STATE_DIR", raising=False)
    monkeypatch.delenv("DBFLEET_CONFIG", raising=False)  # recorded unset: the CLI's --config is undone afterwards
    config = tmp_path / "dbfleet.yaml"
    config.write_text(f"fleet: {{state_dir: '{tmp_path / 'state'}'}}\n")
    runtime.reset()
    served: list[Any] = []
    monkeypatch.setattr("workers.api.serve", lambda *a: served.append(a))
    try:
        refused = CliRunner().invoke(cli, ["--config", str(config), "api"])
        assert refused.exit_code == 2 and "the API runs only with a token" in " ".join(refused.output.split())
        made = CliRunner().invoke(cli, ["--config", str(config), "api", "--generate-token"])
        token = (tmp_path / "state" / "secrets" / "api.token").read_text().strip()
        assert made.exit_code == 0 and token in made.output.replace("\n", "")
        started = CliRunner().invoke(cli, ["--config", str(config), "api", "--port", "1"])
        assert started.exit_code == 0 and served == [("127.0.0.1", 1)]
    finally:
        runtime.reset()


def test_config_check_names_the_exposed_surfaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.cli import cli

    monkeypatch.delenv("DBFLEET_API_TOKEN", raising=False)
    monkeypatch.delenv("DBFLEET_STATE_DIR", raising=False)
    monkeypatch.delenv("DBFLEET_CONFIG", raising=False)  # recorded unset: the CLI's --config is undone afterwards
    config = tmp_path / "dbfleet.yaml"
    config.write_text(f"fleet: {{state_dir: '{tmp_path}', allow_inline_databases: true,"
                      " inline_secrets: {env_prefix: DBFLEET_INLINE_}}\n")
    runtime.reset()
    try:
        out = " ".join(CliRunner().invoke(cli, ["--config", str(config), "config", "check"]).output.split())
        assert "`dbfleet api` will not start" in out and "/metrics is unauthenticated" in out
        assert "inline database configs are allowed" in out and "'DBFLEET_INLINE_'" in out and "config OK" in out
        monkeypatch.setenv("DBFLEET_API_TOKEN", TOKEN)
        runtime.reset()
        out = CliRunner().invoke(cli, ["--config", str(config), "config", "check"]).output
        assert "will not start" not in out
    finally:
        runtime.reset()
