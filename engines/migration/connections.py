"""Opening a migration's two ends: per step, or kept between the batches a worker process runs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from engines.config import DatabaseConfig
from engines.migration.base import Source, Target
from engines.migration.registry import source_class, target_class


@contextmanager
def connections(source: DatabaseConfig, target: DatabaseConfig,
                lock_timeout: float = 60.0) -> Iterator[tuple[Source, Target]]:
    """(source, target), opened by the classes the registry names for their kinds."""
    target_cls, source_cls = target_class(target.kind), source_class(source.kind)
    with source_cls.connect(source) as src, target_cls.connect(target, lock_timeout) as tgt:
        yield src, tgt


_POOL: dict[str, tuple[ExitStack, Source, Target, float]] = {}
_POOL_PID = os.getpid()
POOL_IDLE_SECONDS = 300.0


@contextmanager
def batch_connections(source: DatabaseConfig, target: DatabaseConfig,
                      lock_timeout: float = 60.0) -> Iterator[tuple[Source, Target]]:
    """``connections`` kept open between the batches a worker process runs (``Target.poolable``): a batch
    then costs no connection set-up (PyMySQL builds a TLS context per connection). An entry is dropped
    when its use raised, when a connection is not idle or does not answer, or after POOL_IDLE_SECONDS unused."""
    if not target_class(target.kind).poolable:
        with connections(source, target, lock_timeout) as pair:
            yield pair
        return
    global _POOL_PID
    if os.getpid() != _POOL_PID:  # a forked child: the sockets are the parent's, forget them unclosed
        _POOL.clear()
        _POOL_PID = os.getpid()
    now = time.monotonic()
    for stale in [k for k, e in _POOL.items() if now - e[3] > POOL_IDLE_SECONDS]:
        _POOL.pop(stale)[0].close()
    key = json.dumps([source.public(), target.public(), lock_timeout], sort_keys=True, default=str)
    entry = _POOL.pop(key, None)
    if entry is not None and not _usable(entry[1], entry[2]):
        entry[0].close()
        entry = None
    if entry is None:
        stack = ExitStack()
        try:
            src, tgt = stack.enter_context(connections(source, target, lock_timeout))
        except BaseException:
            stack.close()
            raise
        entry = (stack, src, tgt, now)
    try:
        yield entry[1], entry[2]
    except BaseException:
        entry[0].close()  # the connections may be in any state: never reuse them
        raise
    _POOL[key] = (entry[0], entry[1], entry[2], time.monotonic())


def close_pool() -> None:
    """Close every pooled pair (a process that ran batches itself, ``--local``, before it exits)."""
    while _POOL:
        _POOL.popitem()[1][0].close()


def _usable(src: Source, tgt: Target) -> bool:
    """Both ends idle and answering (a restarted server, or a database dropped since, fails here)."""
    return tgt.usable() and src.usable()
