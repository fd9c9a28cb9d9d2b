"""The work itself, written once: both implementations call exactly these functions.

Both are idempotent per task id: a task delivered twice (Celery redelivers an
unacknowledged task after a worker crash) must not write its effect twice. The
effect is a line in ``LOG_FILE`` that names the task id, so the check is a scan
of that file under an exclusive lock (several worker processes append to it).
"""

from __future__ import annotations

import fcntl
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from shared.settings import Settings

logger = logging.getLogger(__name__)


class TransientNotificationError(RuntimeError):
    """A failure worth retrying (the mail server timed out, say)."""


def _tag(task_id: str) -> str:
    return f"[{task_id}]"


def has_effect(log_file: str | Path, task_id: str) -> bool:
    path = Path(log_file)
    if not path.exists():
        return False
    with path.open(encoding="utf-8") as f:
        return any(_tag(task_id) in line for line in f)


def write_log(message: str, *, task_id: str, log_file: str | Path) -> bool:
    """Append ``message`` to the log file once per task id. Return False if already there."""
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            if any(_tag(task_id) in line for line in f):
                logger.info("task %s: log line already written, skipping", task_id)
                return False
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            f.write(f"{stamp} {_tag(task_id)} {message}\n")
            f.flush()
            return True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def send_notification(email: str, *, task_id: str, attempt: int, settings: Settings) -> bool:
    """The seed's slow notification: sleep, then 'send' (a line in the log file).

    The first ``NOTIFICATION_FAIL_FIRST_ATTEMPTS`` attempts fail with a transient
    error after the delay, as a timing-out mail server would. Returns False when
    the notification had already been sent by an earlier delivery of this task.
    """
    if has_effect(settings.log_file, task_id):
        logger.info("task %s: notification to %s already sent, skipping", task_id, email)
        return False
    time.sleep(settings.notification_delay_seconds)
    if attempt <= settings.notification_fail_first_attempts:
        raise TransientNotificationError(
            f"mail server timed out (attempt {attempt} of the first "
            f"{settings.notification_fail_first_attempts} that fail)"
        )
    return write_log(f"notification sent to {email}", task_id=task_id, log_file=settings.log_file)


def perform(
    kind: str, payload: dict[str, str], *, task_id: str, attempt: int, settings: Settings
) -> bool:
    """Run one job by kind: the single entry point both implementations call."""
    if kind == "notification":
        return send_notification(
            payload["email"], task_id=task_id, attempt=attempt, settings=settings
        )
    if kind == "log":
        return write_log(payload["message"], task_id=task_id, log_file=settings.log_file)
    raise ValueError(f"unknown job kind {kind!r}")
