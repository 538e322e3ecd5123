"""What keeps one bad task from holding or crashing the fleet: a soft time limit that is seen even when an
engine's catch-all swallows it, and a cap on redeliveries of a task that keeps killing its worker."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.worker.request import Request

from engines.history import FAILED
from workers import runtime

log = logging.getLogger("dbfleet.tasks")
DELIVERIES_KEY = "dbfleet:deliveries:{}"  # task id -> deliveries that began; deleted when one returns
DELIVERIES_TTL = 7 * 86400
_soft = threading.local()


def _soft_limit_handler(signum: int, frame: Any) -> None:
    _soft.fired = True
    raise SoftTimeLimitExceeded()


def arm_soft_limit() -> None:
    """Forget an earlier soft limit; make this pool process record the next one before raising it.

    billiard installs its SIGUSR1 handler after ``worker_process_init``, so it is replaced here, at the
    start of a task; engines that turn any exception into a verdict (a health check's ``down``) then
    cannot hide that the task was stopped.
    """
    _soft.fired = False
    sig = getattr(signal, "SIGUSR1", None)
    if sig is None or threading.current_thread() is not threading.main_thread():
        return
    from billiard.pool import soft_timeout_sighandler

    if signal.getsignal(sig) is soft_timeout_sighandler:
        signal.signal(sig, _soft_limit_handler)


def soft_limit_fired() -> bool:
    """True when the running task's soft time limit has fired."""
    return bool(getattr(_soft, "fired", False))


def count_delivery(task_id: str) -> int | None:
    """Count one more delivery of ``task_id``; None when the cache cannot say (the task then runs)."""
    key = DELIVERIES_KEY.format(task_id)
    try:
        pipe = runtime.cache().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, DELIVERIES_TTL)
        count, _ = pipe.execute()
        return int(count)
    except Exception as exc:
        log.warning("cannot count deliveries of task %s: %s", task_id, type(exc).__name__)
        return None


def forget_delivery(task_id: str) -> None:
    """The delivery ended in this process (success or failure): nothing to cap."""
    try:
        runtime.cache().delete(DELIVERIES_KEY.format(task_id))
    except Exception as exc:
        log.debug("delivery count of %s not cleared: %s", task_id, type(exc).__name__)


def refuse(task: Any, args: tuple[Any, ...], deliveries: int) -> str:
    """Record a task that killed its worker on every earlier delivery as failed; the message to raise."""
    req = task.request
    killed = deliveries - 1
    script = getattr(task, "script_type", "") or task.name
    database_id = args[0] if args and isinstance(args[0], str) and hasattr(task, "execute") else None
    message = (f"{task.name} killed its worker {killed} times (out of memory or a crash in a driver?): "
               f"failed, not run again (fleet.max_deliveries)")
    queue = (req.delivery_info or {}).get("routing_key")
    try:
        runtime.history().record_failure(req.id, script, database_id, message, queue=queue,
                                         worker=req.hostname, attempts=killed)
    except Exception as exc:  # the refusal stands even when history cannot record it
        log.error("cannot record task %s as failed: %s", req.id, type(exc).__name__)
    log.error("task %s %s: %s", task.name, req.id, message)
    runtime.publish({"type": "task_killed_worker", "task": task.name, "task_id": req.id, "queue": queue,
                     "database_id": database_id, "deliveries": killed, "message": message})
    return message


class FleetRequest(Request):
    """A task request whose hard time limit is recorded in history too: the killed process cannot do it.

    Recorded before Celery's own handling, which publishes the failure, so history is written before anyone
    waiting on the result can read it.
    """

    _hard_recorded = False

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        """A TimeLimitExceeded from the pool is recorded first, then handled as Celery does."""
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # unwrap ExceptionWithTraceback
        if isinstance(exc, TimeLimitExceeded):
            self._record_hard_limit(exc.args[0] if exc.args else None)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        """The hard limit is recorded first, then handled as Celery does."""
        if not soft:
            self._record_hard_limit(timeout)
        super().on_timeout(soft, timeout)

    def _record_hard_limit(self, timeout: Any) -> None:
        if self._hard_recorded:
            return
        self._hard_recorded = True
        queue = (self.delivery_info or {}).get("routing_key") or "?"
        limit = f" of {float(timeout):g} s" if isinstance(timeout, (int, float)) else ""
        message = (f"time limit exceeded: {self.name} was killed by its hard time limit{limit} "
                   f"(queue {queue}); if it needs longer, raise fleet.time_limits.{queue}")
        try:
            runtime.history().finish(self.id, FAILED, error=message)
        except Exception as exc:
            log.error("cannot record the hard time limit of %s: %s", self.id, type(exc).__name__)
        forget_delivery(self.id)
