"""Errors a user can act on. Messages name database ids, never secrets."""

from __future__ import annotations


class DbfleetError(Exception):
    """Base class of every error dbfleet raises on purpose."""


class ConfigError(DbfleetError):
    """The configuration is malformed; ``problems`` lists (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        super().__init__(f"{source} is invalid:\n  " + "\n  ".join(lines))

    def __reduce__(self):  # keep picklable/JSON-able through Celery
        return (self.__class__, (self.problems, self.source))


class UnknownDatabaseError(DbfleetError):
    """A database id that the registry does not hold."""

    def __init__(self, database_id: str, known: list[str] | None = None) -> None:
        self.database_id = database_id
        self.known = sorted(known or [])
        hint = ", ".join(self.known) if self.known else "none configured"
        self.message = f"unknown database id {database_id!r} (known: {hint})"
        # args are what this was built from: Celery rebuilds an exception as cls(*args), and a message as the
        # id gave 'unknown database id "unknown database id ..." (known: none configured)'
        super().__init__(database_id, self.known)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (self.__class__, (self.database_id, self.known))


class UnknownScriptError(DbfleetError):
    """A script type that this fleet does not run."""

    def __init__(self, script: str, known: list[str] | None = None) -> None:
        self.script = script
        self.known = sorted(known or [])
        self.message = f"unknown script type {script!r} (available: {', '.join(self.known)})"
        super().__init__(script, self.known)  # what Celery rebuilds it from (see UnknownDatabaseError)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (self.__class__, (self.script, self.known))


class SecretMissingError(DbfleetError):
    """A secret reference (env var, file) that cannot be resolved where the task runs."""


class ConnectionFailed(DbfleetError):
    """The database could not be reached or did not answer in time."""


class DriverMissingError(DbfleetError):
    """An optional driver is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'dbfleet[{extra}]'")


class ScriptFailed(DbfleetError):
    """A script run failed; the single message argument survives Celery's JSON results."""


class StorageError(DbfleetError):
    """A backup storage target failed (unreachable, denied, misconfigured)."""


class ObjectMissing(StorageError):
    """An object the repository needs is not in storage."""


class RepositoryError(DbfleetError):
    """The backup repository is missing, of an unknown format, or cannot be used as asked."""


class WrongKeyError(RepositoryError):
    """None of the repository's key slots opens with the key given."""


class IntegrityError(RepositoryError):
    """Stored data does not match what the repository recorded (bit flip, truncation, tampering)."""


class RepositoryLocked(RepositoryError):
    """Another process holds a lock that conflicts with this operation."""


class BackupNotFound(DbfleetError):
    """No backup matches the database id / backup id asked for."""


class ToolMissingError(DbfleetError):
    """A client tool (pg_dump, mariadb-dump, redis-cli) is not installed or too old."""


class ToolFailed(DbfleetError):
    """A client tool exited non-zero; the message carries its scrubbed stderr."""


class RestoreRefused(DbfleetError):
    """A restore would overwrite or mix with existing data; nothing was written."""


class NotAvailable(DbfleetError):
    """An operation whose engine is not installed in this fleet yet (its task is not registered)."""

    def __init__(self, operation: str, task: str, hint: str = "") -> None:
        self.operation, self.task, self.hint = operation, task, hint
        super().__init__(f"{operation} is not available in this fleet: task {task!r} is not registered"
                         + (f" ({hint})" if hint else ""))

    def __reduce__(self):
        return (self.__class__, (self.operation, self.task, self.hint))
