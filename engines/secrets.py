"""Secret resolution and redaction: passwords are looked up where they are used, never shipped.

Also the one place that writes private files: :func:`ensure_private_dir` (0700) and
:func:`write_private` / :func:`touch_private` (0600), whatever the process umask.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from engines.errors import SecretMissingError

_known: set[str] = set()
_lock = threading.Lock()
# user:password@ in any scheme://; the password may hold '/' (and '@' when not encoded: the last '@' of the
# token ends it). Quotes and whitespace end a token, so JSON around a URL survives.
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s\"'<>]*):"
                           r"(?P<pw>[^\s\"'<>]+)@")
# password=... in a libpq keyword string or a URL query (quoted values as libpq allows them)
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<key>\b(?:password|passwd|pwd)\s*=\s*)"
                               r"(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&;\"']+)")
PASSWORD_KEYS = frozenset({"password", "passwd", "pwd", "pass"})


def remember(secret: str | None) -> None:
    """Register a resolved secret so that :func:`scrub` removes it from any text."""
    if secret and len(secret) >= 4:
        with _lock:
            _known.add(secret)


def remember_url(url: str | None) -> None:
    """Register the password a connection URL or DSN carries (as written and decoded)."""
    if not url:
        return
    for value in _url_passwords(url):
        remember(value)
        remember(unquote(value))


def _url_passwords(url: str) -> list[str]:
    found = [m.group("pw") for m in _URL_PASSWORD.finditer(url)]
    found += [m.group("pw").strip("'") for m in _KEYWORD_PASSWORD.finditer(url)]
    return [v for v in found if v]


def scrub(text: str) -> str:
    """Remove every known secret, any URL password and any ``password=`` value from ``text``."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    text = _KEYWORD_PASSWORD.sub(r"\g<key>***", text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return scrub(url)
    if password is None:
        return _KEYWORD_PASSWORD.sub(r"\g<key>***", url)
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return _KEYWORD_PASSWORD.sub(r"\g<key>***", urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}")))


def password_location(dsn: str) -> str | None:
    """Where a URL or libpq DSN carries a password (``None`` when it carries none).

    URLs are read with :func:`urllib.parse.urlsplit` (user:password and ``?password=``), keyword strings
    with libpq's own parser; a string neither can parse is reported, since it cannot be shown to be clean.
    """
    if "://" in dsn:
        try:
            parts = urlsplit(dsn)
            if parts.password is not None:
                return "the user:password part of the URL"
            query = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError:  # its message can quote the netloc, password and all
            return "an unparsable URL, which may hide one"
        if any(k.lower() in PASSWORD_KEYS for k, _ in query):
            return "the password parameter of the URL query"
        if not parts.scheme.startswith("postgres"):
            return None
    from psycopg import conninfo

    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError: libpq could not parse it
        return f"an unparsable DSN ({type(exc).__name__}), which may hide one"
    return "the password keyword" if params.get("password") is not None else None


def url_has_password(url: str) -> bool:
    """True when a URL or DSN carries an inline password, or cannot be parsed to show it does not."""
    return password_location(url) is not None


def ensure_private_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) and make it 0700 when this user owns it; return it."""
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o700)
    return path


def touch_private(path: str | Path) -> Path:
    """Create ``path`` empty if missing and make it 0600 (a database file before SQLite opens it)."""
    path = Path(path).expanduser()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def write_private(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically with mode 0600 (generated passwords, tokens, keys)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
