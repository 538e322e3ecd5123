"""The API's token: where it comes from (config, env, or a generated 0600 file in the state directory) and
the ASGI middleware that demands it on every HTTP request and WebSocket handshake."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from engines.config import Config
from engines.errors import ConfigError
from workers import api_session as browser

TOKEN_MIN_LENGTH = 16
DENIED = "missing or wrong token: send Authorization: Bearer <token>"


def token_path(cfg: Config) -> Path:
    """Where ``dbfleet up`` / ``dbfleet api --generate-token`` keep a generated token."""
    return cfg.fleet.state_path() / "secrets" / "api.token"


def api_token(cfg: Config) -> str:
    """The API token: fleet.api.token_file, the fleet.api.token_env variable, or the generated token file.
    No token source is a config error: the API never runs open."""
    from engines.secrets import resolve_secret

    ac, generated = cfg.fleet.api, token_path(cfg)
    if ac.token_file:
        where, token = "fleet.api.token_file", resolve_secret("api token", file=ac.token_file)
    elif ac.token_env and ac.token_env in os.environ:
        where, token = f"environment variable {ac.token_env}", resolve_secret("api token", env=ac.token_env)
    elif generated.exists():
        where, token = str(generated), resolve_secret("api token", file=str(generated))
    else:
        raise ConfigError([("fleet.api", f"the API runs only with a token: set {ac.token_env or 'a token_env'}, "
                                         f"fleet.api.token_file, or run `dbfleet api --generate-token` "
                                         f"(writes {generated}, mode 0600)")], cfg.source)
    token = (token or "").strip()
    if len(token) < TOKEN_MIN_LENGTH:
        raise ConfigError([("fleet.api", f"the API token from {where} is empty or shorter than "
                                         f"{TOKEN_MIN_LENGTH} characters")], cfg.source)
    return token


def generate_token(cfg: Config) -> tuple[Path, bool]:
    """Create the state directory's API token (mode 0600) unless it exists; (path, created)."""
    path = token_path(cfg)
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path, True


def _token_ok(expected: str, header: str | None, query: str | None = None) -> bool:
    """Constant-time check; an empty expected or given token never matches."""
    given = query
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
    if not expected or not given:
        return False
    # digests of equal length: the comparison time says nothing about the token, not even its length
    return secrets.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


class TokenAuth:
    """ASGI middleware: every HTTP request and WebSocket handshake needs the token, routes added later
    included. WebSocket clients (browsers cannot set headers) may send ``?token=``. Browsers may instead
    exchange the token for a session cookie at ``POST /login`` or ``GET /?token=``; the cookie's rules,
    CSRF defence included, are in :mod:`workers.api_session`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("TokenAuth needs a non-empty token")
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        query = QueryParams(scope.get("query_string", b"")).get("token") if scope["type"] == "websocket" else None
        if _token_ok(self.token, header, query):
            await self.app(scope, receive, send)
            return
        answer = await self._sign_in(scope, receive)
        if answer is None:
            verdict = browser.authorize(self.token, scope)
            if verdict == "ok":
                await self.app(scope, receive, send)
                return
            answer = browser.refused(verdict) if verdict else browser.login_page() if browser.wants_html(scope) \
                else JSONResponse({"error": DENIED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if scope["type"] == "http":
            await answer(scope, receive, send)
        elif "websocket.http.response" in scope.get("extensions", {}):
            await WebSocket(scope, receive, send).send_denial_response(answer)
        else:
            await WebSocket(scope, receive, send).close(code=1008, reason="missing or wrong token")

    async def _sign_in(self, scope: Scope, receive: Receive) -> Response | None:
        """The answer to a browser's token exchange (``POST /login`` form, ``GET /?token=``), else None."""
        if scope["type"] != "http":
            return None
        if scope["method"] == "POST" and scope["path"] == browser.LOGIN_PATH:
            if not browser.same_origin(scope):
                return browser.refused("csrf")
            form = await browser.read_form(receive)
            given = (form or {}).get("token")
        elif scope["method"] == "GET" and scope["path"] == "/" and "token" in (q := QueryParams(scope["query_string"])):
            given = q.get("token")
        else:
            return None
        if _token_ok(self.token, None, given):
            return browser.signed_in(self.token, scope)
        return browser.login_page("That is not the API token of this dbfleet.")
