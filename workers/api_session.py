"""Browser sessions for the dashboard, without weakening the API's token rule.

A browser cannot send ``Authorization: Bearer``, so it exchanges the token once for a session cookie:

- ``POST /login`` (form field ``token``, the login page) or ``GET /?token=...`` (a link): the token is
  checked in constant time; on success a 303 to ``/`` (the token leaves the address bar) sets
  ``dbfleet_session=<expires>.<nonce>.<mac>; HttpOnly; SameSite=Strict; Path=/`` (``Secure`` over https).
  The cookie is an HMAC under the API token, not the token: it expires (:data:`SESSION_SECONDS`),
  rotating the token ends every session, and a stolen cookie never reveals the token.
- A valid cookie opens GET/HEAD routes and WebSocket handshakes from our own origin. Any other method
  authenticated by the cookie also needs the header ``X-Dbfleet-CSRF: HMAC(token, "csrf:" + session)``,
  which the page reads from its ``<meta>`` and a cross-site form cannot send, and a same-origin
  ``Origin`` when one is sent (SameSite=Strict is the first line; these hold without it).
- Requests with a valid ``Authorization: Bearer`` header need none of this: a header is not ambient.

Nothing here logs, and no response echoes a token that was sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import time
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import Receive, Scope

COOKIE = "dbfleet_session"
CSRF_HEADER = "x-dbfleet-csrf"
CSRF_SCOPE_KEY = "dbfleet.csrf"  # set on the ASGI scope for cookie sessions; the page puts it in a <meta>
SESSION_SECONDS = 12 * 3600
LOGIN_PATH = "/login"
MAX_LOGIN_BODY = 4096
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings (digested first: the time says nothing about the length)."""
    return secrets.compare_digest(hashlib.sha256(a.encode()).digest(), hashlib.sha256(b.encode()).digest())


def issue(token: str, now: float | None = None) -> str:
    """A new session value: expiry, a random nonce, and their HMAC under the API token."""
    expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
    body = f"{expires}.{secrets.token_urlsafe(18)}"
    return f"{body}.{_mac(token, 'session:' + body)}"


def valid(token: str, value: str | None, now: float | None = None) -> bool:
    """Whether ``value`` is a session this token issued that has not expired."""
    if not token or not value or value.count(".") != 2:
        return False
    body, _, mac = value.rpartition(".")
    expires = body.partition(".")[0]
    if not expires.isdigit() or int(expires) <= (now if now is not None else time.time()):
        return False
    return _same(mac, _mac(token, "session:" + body))


def csrf_for(token: str, session: str) -> str:
    """The CSRF token of a session: the page sends it back in ``X-Dbfleet-CSRF``."""
    return _mac(token, "csrf:" + session)


def cookie(value: str, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    """The Set-Cookie value of a session (``max_age=0`` with an empty value clears it)."""
    return (f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def same_origin(scope: Scope) -> bool:
    """No ``Origin`` header (not a cross-site browser request), or one naming this host and scheme."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is None:
        return True
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
    parts = urlsplit(origin)
    return parts.scheme == scheme and parts.netloc.lower() == headers.get("host", "").lower()


def session_of(scope: Scope) -> str | None:
    """The session cookie's raw value, if the request carries one."""
    for part in Headers(scope=scope).get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def secure_scheme(scope: Scope) -> bool:
    return scope.get("scheme") in ("https", "wss")


def authorize(token: str, scope: Scope) -> str | None:
    """Check a cookie session: None (no valid session), "ok" (the scope gets its CSRF token), "csrf" (a
    state-changing request without the CSRF header, or from another origin) or "origin" (a WebSocket
    from another origin)."""
    session = session_of(scope)
    if not valid(token, session):
        return None
    assert session is not None
    expected = csrf_for(token, session)
    if scope["type"] == "websocket":
        return "ok" if same_origin(scope) else "origin"
    if scope["method"] not in SAFE_METHODS:
        sent = Headers(scope=scope).get(CSRF_HEADER)
        if not sent or not _same(sent, expected) or not same_origin(scope):
            return "csrf"
    scope[CSRF_SCOPE_KEY] = expected
    return "ok"


REFUSALS = {
    "csrf": "a state-changing request authenticated by the session cookie needs the X-Dbfleet-CSRF header of "
            "the page and this host's Origin (or send Authorization: Bearer)",
    "origin": "a WebSocket authenticated by the session cookie must be opened by this host's page "
              "(or send Authorization: Bearer / ?token=)",
}


def refused(verdict: str) -> Response:
    """403 for a valid session used the wrong way (a verdict of :func:`authorize`)."""
    return JSONResponse({"error": REFUSALS[verdict]}, status_code=403, headers=NO_STORE)


NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
# pages whose forms and fetches POST back to us: with no-referrer, Chromium sends "Origin: null", which
# same_origin() rightly refuses; same-origin still sends no Referer to any other site
PAGE_NO_STORE = {**NO_STORE, "Referrer-Policy": "same-origin"}


async def read_form(receive: Receive) -> dict[str, str] | None:
    """A small urlencoded body (the login form); None when it is larger than :data:`MAX_LOGIN_BODY`."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_LOGIN_BODY:
            return None
        if not message.get("more_body"):
            break
    try:
        fields = parse_qs(body.decode(), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items()}


def signed_in(token: str, scope: Scope) -> Response:
    """303 to ``/`` with a new session cookie: the token leaves the address bar and the history entry."""
    answer = RedirectResponse("/", status_code=303, headers=NO_STORE)
    answer.headers["Set-Cookie"] = cookie(issue(token), secure_scheme(scope))
    return answer


def signed_out(scope: Scope) -> Response:
    """Clear the session cookie (the page then shows the login form)."""
    answer = Response(status_code=204, headers=NO_STORE)
    answer.headers["Set-Cookie"] = cookie("", secure_scheme(scope), max_age=0)
    return answer


_LOGIN_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;background:#f4f6f8;color:#1d2733;display:grid;place-items:center;"
    "min-height:100vh;margin:0}main{background:#fff;padding:2rem 2.5rem;border-radius:8px;"
    "box-shadow:0 2px 12px #0002;max-width:26rem}h1{font-size:1.3rem;margin:0 0 1rem}"
    "label{display:block;font-weight:600;margin-bottom:.3rem}input{width:100%;box-sizing:border-box;"
    "padding:.5rem;font:inherit;border:1px solid #8a96a3;border-radius:4px}"
    "button{margin-top:1rem;padding:.5rem 1.2rem;font:inherit;font-weight:600;background:#1f5fa8;color:#fff;"
    "border:0;border-radius:4px;cursor:pointer}button:focus-visible,input:focus-visible{outline:3px solid #f0a500;"
    "outline-offset:2px}.error{color:#a4161a;font-weight:600}p.hint{font-size:.9rem;color:#4a5663}")
_LOGIN_STYLE_HASH = base64.b64encode(hashlib.sha256(_LOGIN_STYLE.encode()).digest()).decode()
LOGIN_CSP = (f"default-src 'none'; style-src 'sha256-{_LOGIN_STYLE_HASH}'; img-src data:; form-action 'self'; "
             "frame-ancestors 'none'; base-uri 'none'")


def login_page(message: str | None = None) -> Response:
    """The 401 answer to a browser: a form that POSTs the token to /login (no script; never the sent token)."""
    error = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>dbfleet dashboard: sign in</title><link rel="icon" href="data:,"><style>{_LOGIN_STYLE}</style></head>
<body><main><h1>dbfleet dashboard</h1>{error}
<form method="post" action="{LOGIN_PATH}">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form>
<p class="hint">The token of <code>dbfleet api</code> (<code>DBFLEET_API_TOKEN</code> or the file written by
<code>dbfleet api --generate-token</code>). Signing in sets an HttpOnly session cookie for
{SESSION_SECONDS // 3600} hours; the token itself is not stored in the browser.</p></main></body></html>"""
    return HTMLResponse(body, status_code=401, headers={**PAGE_NO_STORE, "WWW-Authenticate": "Bearer",
                                                         "Content-Security-Policy": LOGIN_CSP,
                                                         "X-Frame-Options": "DENY"})


def wants_html(scope: Scope) -> bool:
    """A browser navigating (GET with ``Accept: text/html``): it gets the login page instead of JSON."""
    return scope["type"] == "http" and scope["method"] == "GET" and "text/html" in Headers(scope=scope).get(
        "accept", "")
