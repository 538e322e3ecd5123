"""Secret resolution and redaction: passwords are looked up where they are used, never shipped."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engines.errors import SecretMissingError

_known: set[str] = set()
_lock = threading.Lock()
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@")


def remember(secret: str | None) -> None:
    """Register a resolved secret so that :func:`scrub` removes it from any text."""
    if secret and len(secret) >= 4:
        with _lock:
            _known.add(secret)


def scrub(text: str) -> str:
    """Remove every known secret and any URL password from ``text``."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def url_has_password(url: str) -> bool:
    """True when a URL carries an inline password."""
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def resolve_secret(
    owner: str,
    *,
    env: str | None = None,
    file: str | None = None,
) -> str | None:
    """Resolve a password from an env var or a file; ``owner`` names it in errors."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise SecretMissingError(
                f"{owner}: environment variable {env} (password_env) is not set "
                "in this process; export it on every worker"
            )
        remember(value)
        return value
    if file:
        path = Path(file).expanduser()
        try:
            value = path.read_text().rstrip("\n")
        except OSError as exc:
            raise SecretMissingError(
                f"{owner}: cannot read password_file {path}: {exc.strerror}"
            ) from None
        remember(value)
        return value
    return None
